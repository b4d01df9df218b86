"""Unit tests for task API forwarding and event relay, with fake upstream ttrpc servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from zeropod._gen.containerd.api.services.ttrpc.events.v1 import events_pb2
from zeropod._gen.ttrpc import request_pb2
from zeropod.shim.eventrelay import SERVICE as EVENTS
from zeropod.shim.eventrelay import EventRelay
from zeropod.shim.taskapi import BY_SERVICE, METHODS, V2, V3
from zeropod.shim.taskproxy import TaskProxy
from zeropod.ttrpc import Call, Client, ConnectionClosed, RawResponse, Server, TtrpcError
from zeropod.ttrpc.status import Code, encode_status

# A status with a details field (3) the interposer must relay without understanding it.
STATUS_WITH_DETAILS = encode_status(Code.FAILED_PRECONDITION, "runc says no") + b"\x1a\x03\x0a\x01x"


class FakeRuncShim:
    """Upstream task service: records calls, Wait blocks until released."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.release_wait = asyncio.Event()

    async def handle(self, call: Call) -> bytes | RawResponse:
        self.calls.append(call)
        api = BY_SERVICE.get(call.service)
        if api is None:
            raise TtrpcError(Code.UNIMPLEMENTED, f"{call.service} unknown upstream")
        m = api.messages
        if call.method == "Wait":
            await self.release_wait.wait()
            return m.WaitResponse(exit_status=137).SerializeToString()
        if call.method == "State":
            req = m.StateRequest.FromString(call.payload)
            if req.id != "c1":
                raise TtrpcError(Code.NOT_FOUND, f"container {req.id}: not found")
            return m.StateResponse(id="c1", pid=42, status=2).SerializeToString()
        if call.method == "Pause":
            return RawResponse(b"\x0a" + bytes([len(STATUS_WITH_DETAILS)]) + STATUS_WITH_DETAILS)
        return b""


@dataclass
class Rig:
    upstream: FakeRuncShim
    client: Client  # containerd's side
    proxy_server: Server
    upstream_server: Server
    upstream_client: Client


async def make_rig(tmp_path: Path, proxy_cls: type[TaskProxy] = TaskProxy) -> Rig:
    fake = FakeRuncShim()
    up_server = Server({}, fallback=fake.handle, name="runc")
    await up_server.listen(str(tmp_path / "runc.sock"))
    upstream = await Client.connect(str(tmp_path / "runc.sock"))
    proxy = proxy_cls(upstream)
    server = Server(proxy.handlers(), fallback=proxy.forward, name="task")
    await server.listen(str(tmp_path / "zeropod.sock"))
    client = await Client.connect(str(tmp_path / "zeropod.sock"))
    return Rig(fake, client, server, up_server, upstream)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    r = await make_rig(tmp_path)
    yield r
    await r.client.close()
    await r.proxy_server.close()


def test_table_covers_every_method_of_both_versions() -> None:
    table = TaskProxy(None).handlers()  # type: ignore[arg-type]
    assert len(METHODS) == 17
    assert set(table) == {(api.service, m) for api in (V2, V3) for m in METHODS}
    assert all(callable(h) for h in table.values())


@pytest.mark.parametrize("api", [V2, V3], ids=["v2", "v3"])
async def test_request_bytes_reach_upstream_unchanged(rig: Rig, api) -> None:
    req = request_pb2.Request(
        service=api.service,
        method="State",
        payload=api.messages.StateRequest(id="c1").SerializeToString(),
        timeout_nano=5_000_000_000,
    )
    req.metadata.add(key="containerd-namespace-ttrpc", value="k8s.io")
    req.metadata.add(key="traceparent", value="00-abc")
    raw = req.SerializeToString()
    reply = await rig.client.roundtrip(raw)
    (seen,) = rig.upstream.calls
    assert seen.raw == raw
    resp = request_pb2.Response.FromString(reply)
    assert api.messages.StateResponse.FromString(resp.payload).pid == 42


async def test_error_status_relayed_byte_for_byte(rig: Rig) -> None:
    with pytest.raises(TtrpcError) as info:
        await rig.client.call(
            V3.service, "State", V3.messages.StateRequest(id="zz").SerializeToString()
        )
    assert (info.value.code, info.value.message) == (Code.NOT_FOUND, "container zz: not found")
    req = request_pb2.Request(service=V3.service, method="Pause").SerializeToString()
    resp = request_pb2.Response.FromString(await rig.client.roundtrip(req))
    assert resp.status.SerializeToString() == STATUS_WITH_DETAILS


async def test_unknown_service_forwarded(rig: Rig) -> None:
    with pytest.raises(TtrpcError) as info:
        await rig.client.call("containerd.runtime.sandbox.v1.Sandbox", "Ping", b"")
    assert info.value.code == Code.UNIMPLEMENTED
    assert "unknown upstream" in info.value.message


async def test_wait_pending_does_not_block_others(rig: Rig) -> None:
    wait_req = V3.messages.WaitRequest(id="c1").SerializeToString()
    wait = asyncio.create_task(rig.client.call(V3.service, "Wait", wait_req))
    state_req = V3.messages.StateRequest(id="c1").SerializeToString()
    states = await asyncio.gather(
        *(rig.client.call(V3.service, "State", state_req) for _ in range(20))
    )
    assert len(states) == 20 and not wait.done()
    rig.upstream.release_wait.set()
    assert V3.messages.WaitResponse.FromString(await wait).exit_status == 137


class KillCounter(TaskProxy):
    """An interception: count Kill calls and refuse them; everything else forwards."""

    kills = 0

    async def Kill(self, call: Call) -> RawResponse:
        type(self).kills += 1
        req = self.api(call).decode("KillRequest", call.payload)
        raise TtrpcError(Code.FAILED_PRECONDITION, f"not killing {req.id}")


async def test_interception_point(tmp_path: Path) -> None:
    rig = await make_rig(tmp_path, KillCounter)
    try:
        kill = V2.messages.KillRequest(id="c1", signal=9).SerializeToString()
        with pytest.raises(TtrpcError, match="not killing c1"):
            await rig.client.call(V2.service, "Kill", kill)
        assert KillCounter.kills == 1
        assert rig.upstream.calls == []
        await rig.client.call(V2.service, "Start", b"")
        assert [c.method for c in rig.upstream.calls] == ["Start"]
    finally:
        await rig.client.close()
        await rig.proxy_server.close()


async def test_upstream_loss_closes_containerd_connection(tmp_path: Path) -> None:
    rig = await make_rig(tmp_path)
    wait = asyncio.create_task(
        rig.client.call(V3.service, "Wait", V3.messages.WaitRequest(id="c1").SerializeToString())
    )
    async with asyncio.timeout(5):
        while not rig.upstream.calls:  # the Wait reached the runc shim
            await asyncio.sleep(0.01)
    await rig.upstream_server.close()  # the runc shim goes away
    await rig.upstream_client.wait_closed()
    assert not wait.done()  # no error status: the call stays open until the connection ends
    await rig.proxy_server.close()  # what the interposer's shutdown does next
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(wait, 5)
    await rig.client.close()


# ---- events ----


def forward_request(topic: str, ns: str = "k8s.io") -> bytes:
    req = events_pb2.ForwardRequest()
    req.envelope.topic = topic
    req.envelope.namespace = ns
    return req.SerializeToString()


class FakeContainerdEvents:
    def __init__(self) -> None:
        self.got: list[Call] = []
        self.count = asyncio.Condition()

    async def forward(self, call: Call) -> bytes:
        async with self.count:
            self.got.append(call)
            self.count.notify_all()
        return b""

    def topics(self) -> list[str]:
        return [events_pb2.ForwardRequest.FromString(c.payload).envelope.topic for c in self.got]

    async def wait_for(self, n: int) -> None:
        async with self.count:
            await asyncio.wait_for(self.count.wait_for(lambda: len(self.got) >= n), 10)


class HoldExits(EventRelay):
    held: list[Call]

    def intercept(self, call: Call) -> bool:
        topic = events_pb2.ForwardRequest.FromString(call.payload).envelope.topic
        if topic == "/tasks/exit":
            self.held.append(call)
            return False
        return True


async def run_relay(tmp_path: Path, relay: EventRelay, topics: list[str]) -> Client:
    server = Server(relay.handlers(), name="events")
    await server.listen(str(tmp_path / "ev.sock"))
    runc = await Client.connect(str(tmp_path / "ev.sock"))
    for t in topics:
        await runc.call(EVENTS, "Forward", forward_request(t), metadata=[("k", t)])
    return runc


TOPICS = [f"/tasks/{t}" for t in ("create", "start", "exit", "delete")] * 5


async def test_events_relayed_in_order_with_metadata(tmp_path: Path) -> None:
    containerd = FakeContainerdEvents()
    srv = Server({(EVENTS, "Forward"): containerd.forward})
    await srv.listen(str(tmp_path / "containerd.sock"))
    relay = EventRelay(str(tmp_path / "containerd.sock"))
    task = asyncio.create_task(relay.run())
    runc = await run_relay(tmp_path, relay, TOPICS)
    assert await relay.drain(5)
    assert containerd.topics() == TOPICS
    assert [c.metadata() for c in containerd.got] == [[("k", t)] for t in TOPICS]
    task.cancel()
    await runc.close()
    await srv.close()


async def test_events_survive_containerd_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "containerd.sock")
    relay = EventRelay(path)
    task = asyncio.create_task(relay.run())
    runc = await run_relay(tmp_path, relay, TOPICS[:4])  # containerd is down: all queued
    containerd = FakeContainerdEvents()
    srv = Server({(EVENTS, "Forward"): containerd.forward})
    await srv.listen(path)
    await containerd.wait_for(4)
    await srv.close()  # containerd restarts
    Path(path).unlink()
    for t in TOPICS[4:8]:
        await runc.call(EVENTS, "Forward", forward_request(t))
    containerd2 = FakeContainerdEvents()
    srv2 = Server({(EVENTS, "Forward"): containerd2.forward})
    await srv2.listen(path)
    await containerd2.wait_for(4)
    assert containerd.topics() + containerd2.topics() == TOPICS[:8]
    task.cancel()
    await runc.close()
    await srv2.close()


async def test_event_interception_point(tmp_path: Path) -> None:
    containerd = FakeContainerdEvents()
    srv = Server({(EVENTS, "Forward"): containerd.forward})
    await srv.listen(str(tmp_path / "containerd.sock"))
    relay = HoldExits(str(tmp_path / "containerd.sock"))
    relay.held = []
    task = asyncio.create_task(relay.run())
    runc = await run_relay(tmp_path, relay, TOPICS[:4])
    assert await relay.drain(5)
    assert containerd.topics() == ["/tasks/create", "/tasks/start", "/tasks/delete"]
    relay.publish(relay.held.pop())
    assert await relay.drain(5)
    assert containerd.topics()[-1] == "/tasks/exit"
    task.cancel()
    await runc.close()
    await srv.close()
