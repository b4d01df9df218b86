"""Unit tests for the ttrpc client and server over real unix sockets (no root)."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from zeropod._gen.ttrpc import request_pb2
from zeropod.ttrpc import (
    MAX_MESSAGE,
    Call,
    Client,
    ConnectionClosed,
    FrameDecoder,
    FrameType,
    RawResponse,
    Server,
    TtrpcError,
    encode_frame,
)
from zeropod.ttrpc.status import Code, error_response

SVC = "test.v1.Echo"


class Handlers:
    """A small service: echo, error, crash, a call that waits for a release, and a raw reply."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.seen: list[Call] = []

    async def echo(self, call: Call) -> bytes:
        self.seen.append(call)
        return call.payload

    async def fail(self, call: Call) -> bytes:
        raise TtrpcError(Code.NOT_FOUND, f"no such thing: {call.payload.decode()}")

    async def crash(self, call: Call) -> bytes:
        raise RuntimeError("boom")

    async def slow(self, call: Call) -> bytes:
        await self.release.wait()
        return b"slow:" + call.payload

    async def raw(self, call: Call) -> RawResponse:
        return RawResponse(error_response(Code.ABORTED, "raw"))

    def table(self) -> dict:
        names = ("Echo", "Fail", "Crash", "Slow", "Raw")
        return {(SVC, n): getattr(self, n.lower()) for n in names}


@pytest.fixture
async def handlers() -> Handlers:
    return Handlers()


@pytest.fixture
async def sock(tmp_path: Path, handlers: Handlers) -> AsyncIterator[str]:
    server = Server(handlers.table(), name="test")
    path = str(tmp_path / "t.sock")
    await server.listen(path)
    yield path
    await server.close()


@pytest.fixture
async def client(sock: str) -> AsyncIterator[Client]:
    c = await Client.connect(sock)
    yield c
    await c.close()


async def test_round_trip_with_metadata_and_timeout(client: Client, handlers: Handlers) -> None:
    out = await client.call(SVC, "Echo", b"ping", timeout=2.5, metadata=[("k", "v"), ("k", "w")])
    assert out == b"ping"
    (call,) = handlers.seen
    assert call.metadata() == [("k", "v"), ("k", "w")]
    assert call.request.timeout_nano == 2_500_000_000
    assert call.timeout == pytest.approx(2.5)


@pytest.mark.parametrize(
    ("method", "code", "text"),
    [
        ("Fail", Code.NOT_FOUND, "no such thing: x"),
        ("Crash", Code.UNKNOWN, "RuntimeError: boom"),
        ("Raw", Code.ABORTED, "raw"),
        ("Nope", Code.UNIMPLEMENTED, "test.v1.Echo/Nope is not implemented"),
    ],
)
async def test_error_statuses(client: Client, method: str, code: int, text: str) -> None:
    with pytest.raises(TtrpcError) as info:
        await client.call(SVC, method, b"x")
    assert (info.value.code, info.value.message) == (code, text)
    assert await client.call(SVC, "Echo", b"still alive") == b"still alive"


async def test_concurrent_calls_complete_out_of_order(client: Client, handlers: Handlers) -> None:
    slow = asyncio.create_task(client.call(SVC, "Slow", b"1"))
    fast = await asyncio.gather(*(client.call(SVC, "Echo", str(i).encode()) for i in range(50)))
    assert fast == [str(i).encode() for i in range(50)]
    assert not slow.done()
    handlers.release.set()
    assert await slow == b"slow:1"


async def test_client_timeout(client: Client) -> None:
    with pytest.raises(TtrpcError) as info:
        await client.call(SVC, "Slow", b"", timeout=0.05)
    assert info.value.code == Code.DEADLINE_EXCEEDED
    assert await client.call(SVC, "Echo", b"ok") == b"ok"


async def test_peer_disconnect_fails_pending_calls(tmp_path: Path) -> None:
    accepted: asyncio.Future[asyncio.StreamWriter] = asyncio.get_running_loop().create_future()

    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(10)  # one request header: then hang up
        accepted.set_result(writer)

    path = str(tmp_path / "hangup.sock")
    srv = await asyncio.start_unix_server(on_conn, path)
    client = await Client.connect(path)
    pending = [asyncio.create_task(client.call(SVC, "Echo", b"x")) for _ in range(3)]
    (await accepted).close()
    for task in pending:
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(task, 5)
    assert client.closed
    with pytest.raises(ConnectionClosed):
        await client.call(SVC, "Echo", b"x")
    srv.close()


async def raw_exchange(path: str, data: bytes) -> tuple[list, bool]:
    """Send raw bytes; collect frames until the server closes or replies once."""
    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(data)
    await writer.drain()
    dec = FrameDecoder()
    frames: list = []
    eof = False
    while not frames:
        chunk = await asyncio.wait_for(reader.read(65536), 5)
        if not chunk:
            eof = True
            break
        frames.extend(dec.feed(chunk))
    writer.close()
    return frames, eof


@pytest.mark.parametrize(
    "data",
    [
        struct.pack(">IIBB", MAX_MESSAGE + 1, 1, 1, 0),
        struct.pack(">IIBB", 0, 1, 7, 0),
        encode_frame(2, FrameType.REQUEST, b""),
        encode_frame(1, FrameType.RESPONSE, b""),
    ],
    ids=["oversize", "unknown-type", "even-stream", "response-to-server"],
)
async def test_bad_frame_closes_only_that_connection(
    sock: str, client: Client, data: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    frames, eof = await raw_exchange(sock, data)
    assert eof and not frames
    assert "protocol error" in caplog.text
    assert await client.call(SVC, "Echo", b"other connection fine") == b"other connection fine"


async def test_undecodable_request_gets_error_status(sock: str) -> None:
    frames, _ = await raw_exchange(sock, encode_frame(1, FrameType.REQUEST, b"\xff\xff\xff"))
    resp = request_pb2.Response.FromString(frames[0].payload)
    assert resp.status.code == Code.INVALID_ARGUMENT


async def test_byte_at_a_time_request(sock: str) -> None:
    req = request_pb2.Request(service=SVC, method="Echo", payload=b"dribble")
    data = encode_frame(5, FrameType.REQUEST, req.SerializeToString())
    reader, writer = await asyncio.open_unix_connection(sock)
    for i in range(len(data)):
        writer.write(data[i : i + 1])
        await writer.drain()
    dec = FrameDecoder()
    frames: list = []
    while not frames:
        frames = dec.feed(await asyncio.wait_for(reader.read(100), 5))
    assert frames[0].stream_id == 5
    assert request_pb2.Response.FromString(frames[0].payload).payload == b"dribble"
    writer.close()


async def test_server_close_fails_client(sock: str, handlers: Handlers, tmp_path: Path) -> None:
    server = Server(handlers.table())
    path = str(tmp_path / "s2.sock")
    await server.listen(path)
    client = await Client.connect(path)
    pending = asyncio.create_task(client.call(SVC, "Slow", b""))
    assert await client.call(SVC, "Echo", b"a") == b"a"
    await server.close()
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(pending, 5)


@pytest.mark.parametrize(
    "reply",
    [struct.pack(">IIBB", MAX_MESSAGE + 1, 1, 2, 0), struct.pack(">IIBB", 0, 1, 9, 0)],
    ids=["oversize", "unknown-type"],
)
async def test_client_closes_on_bad_frame_from_server(tmp_path: Path, reply: bytes) -> None:
    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(10)
        writer.write(reply)
        await writer.drain()
        await reader.read()  # hold the connection open: the client must close it

    path = str(tmp_path / "bad.sock")
    srv = await asyncio.start_unix_server(on_conn, path)
    client = await Client.connect(path)
    with pytest.raises(ConnectionClosed, match="protocol error"):
        await asyncio.wait_for(client.call(SVC, "Echo", b"x"), 5)
    srv.close()


async def test_in_flight_requests_are_capped_per_connection(
    sock: str, handlers: Handlers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A peer that floods requests it never waits for cannot make the server hold unbounded
    tasks: past the cap each request is answered RESOURCE_EXHAUSTED at once."""
    from zeropod.ttrpc import server as server_module

    monkeypatch.setattr(server_module, "MAX_IN_FLIGHT", 8)
    c = await Client.connect(sock)
    try:
        slow = [asyncio.create_task(c.call(SVC, "Slow", str(i).encode())) for i in range(8)]
        await asyncio.sleep(0.05)
        with pytest.raises(TtrpcError) as info:
            await c.call(SVC, "Echo", b"one too many", timeout=2)
        assert info.value.code == Code.RESOURCE_EXHAUSTED
        handlers.release.set()
        assert len(await asyncio.gather(*slow)) == 8
        assert await c.call(SVC, "Echo", b"room again") == b"room again"
    finally:
        await c.close()


async def test_a_peer_that_stops_reading_cannot_block_a_call_past_its_timeout(
    tmp_path: Path,
) -> None:
    """The write of a request is inside the call's timeout: a server that accepts and never
    reads (its buffers full) makes the call fail in time, not hang."""
    path = str(tmp_path / "stuck.sock")
    accepted: list[asyncio.StreamWriter] = []

    async def never_read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        await asyncio.sleep(3600)

    server = await asyncio.start_unix_server(never_read, path=path)
    c = await Client.connect(path)
    try:
        big = b"x" * (MAX_MESSAGE - 1024)
        async with asyncio.timeout(10):
            with pytest.raises(TtrpcError) as info:
                for _ in range(64):  # fills the socket buffers, then must time out
                    await c.call(SVC, "Echo", big, timeout=0.2)
        assert info.value.code == Code.DEADLINE_EXCEEDED
    finally:
        await c.close()
        server.close()


async def test_connections_past_the_cap_are_closed_at_once(
    tmp_path: Path, handlers: Handlers
) -> None:
    """Idle connections cannot pile up fds: past the cap a new one is closed, and a slot
    frees when one of the held ones goes."""
    server = Server(handlers.table(), name="test", max_connections=3)
    path = str(tmp_path / "cap.sock")
    await server.listen(path)
    held = [await asyncio.open_unix_connection(path) for _ in range(3)]
    try:
        async with asyncio.timeout(5):
            while server.connections < 3:
                await asyncio.sleep(0.01)
        reader, writer = await asyncio.open_unix_connection(path)
        async with asyncio.timeout(5):
            assert await reader.read() == b""  # closed by the server
        writer.close()
        held.pop()[1].close()
        async with asyncio.timeout(5):
            while server.connections > 2:
                await asyncio.sleep(0.01)
        c = await Client.connect(path)
        assert await c.call(SVC, "Echo", b"room again", timeout=5) == b"room again"
        await c.close()
    finally:
        for _, writer in held:
            writer.close()
        await server.close()
