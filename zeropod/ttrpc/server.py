"""A ttrpc server: a method table keyed by (service, method), one task per request.

Handlers are ``async def handler(call: Call) -> bytes | RawResponse``. Returning bytes sends
them as the OK response payload; returning a :class:`RawResponse` sends an already serialised
``ttrpc.Response`` unchanged (used to relay a peer's reply); raising :class:`TtrpcError` sends
that status. Any other exception becomes an UNKNOWN status and is logged; the connection
survives. A malformed or oversize frame closes that connection only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping

from google.protobuf.message import DecodeError

from zeropod._gen.ttrpc import request_pb2
from zeropod.ttrpc.framing import FrameDecoder, FrameError, FrameType, encode_frame
from zeropod.ttrpc.status import Code, TtrpcError, error_response, ok_response

log = logging.getLogger(__name__)

READ_CHUNK = 1 << 16
MAX_IN_FLIGHT = 256
MAX_CONNECTIONS = 64
"""Connections served at once per server; more are closed at once (containerd and the runc
shim each keep one long-lived connection: a flood of idle ones must not hold fds forever)."""
"""Requests one connection may have in flight; more are answered RESOURCE_EXHAUSTED at once
(containerd keeps a handful per task; a peer flooding requests it never waits for must not
make the interposer hold unbounded tasks)."""


class Call:
    """One incoming request: the decoded ttrpc Request and its serialised form."""

    __slots__ = ("raw", "request")

    def __init__(self, request: request_pb2.Request, raw: bytes) -> None:
        self.request = request
        self.raw = raw

    @property
    def service(self) -> str:
        return self.request.service

    @property
    def method(self) -> str:
        return self.request.method

    @property
    def payload(self) -> bytes:
        return self.request.payload

    @property
    def timeout(self) -> float | None:
        """The caller's deadline in seconds from receipt, or None for no deadline."""
        nano = self.request.timeout_nano
        return nano / 1e9 if nano > 0 else None

    def metadata(self) -> list[tuple[str, str]]:
        return [(kv.key, kv.value) for kv in self.request.metadata]


class RawResponse:
    """An already serialised ttrpc Response, sent as is."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


Handler = Callable[[Call], Awaitable["bytes | RawResponse"]]


class Server:
    """Serves a method table on unix sockets. ``fallback`` handles methods not in the table."""

    def __init__(
        self,
        handlers: Mapping[tuple[str, str], Handler],
        *,
        fallback: Handler | None = None,
        name: str = "ttrpc",
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self._handlers = dict(handlers)
        self._max_connections = max_connections
        self._fallback = fallback
        self._name = name
        self._servers: list[asyncio.AbstractServer] = []
        self._conns: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    async def listen(self, path: str, mode: int = 0o600) -> None:
        """Bind and listen on ``path`` (must not exist)."""
        server = await asyncio.start_unix_server(self._on_connect, path, limit=READ_CHUNK)
        os.chmod(path, mode)
        self._servers.append(server)

    async def serve_socket(self, sock: socket.socket) -> None:
        """Accept connections on an already bound and listening unix socket."""
        server = await asyncio.start_unix_server(self._on_connect, sock=sock, limit=READ_CHUNK)
        self._servers.append(server)

    def stop_listening(self) -> None:
        """Accept no new connections; existing ones keep being served."""
        for server in self._servers:
            server.close()

    @property
    def connections(self) -> int:
        return len(self._conns)

    async def close(self) -> None:
        """Stop listening and close every connection, cancelling running handlers."""
        for server in self._servers:
            server.close()
        for writer in list(self._conns.values()):
            writer.close()
        if self._conns:
            await asyncio.gather(*self._conns, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._conns) >= self._max_connections:
            log.warning("%s: %d connections open; closing a new one", self._name, len(self._conns))
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._conns[task] = writer
        try:
            await self.serve_connection(reader, writer)
        finally:
            del self._conns[task]

    async def serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Serve one connection until EOF, a protocol error, or cancellation."""
        decoder = FrameDecoder()
        tasks: set[asyncio.Task[None]] = set()
        try:
            while data := await reader.read(READ_CHUNK):
                for frame in decoder.feed(data):
                    if frame.type == FrameType.REQUEST:
                        if frame.stream_id % 2 != 1:
                            raise FrameError(f"request on even stream id {frame.stream_id}")
                        if len(tasks) >= MAX_IN_FLIGHT:  # a flood: answer, hold nothing
                            busy = f"{MAX_IN_FLIGHT} requests in flight on this connection"
                            resp = error_response(int(Code.RESOURCE_EXHAUSTED), busy)
                            self._send(writer, frame.stream_id, resp)
                            continue
                        task = asyncio.create_task(
                            self._handle(frame.stream_id, frame.payload, writer)
                        )
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                    elif frame.type == FrameType.RESPONSE:
                        raise FrameError(f"response frame sent to server, stream {frame.stream_id}")
                    else:
                        log.debug("%s: ignoring data frame, stream %d", self._name, frame.stream_id)
        except FrameError as err:
            log.warning("%s: closing connection after protocol error: %s", self._name, err)
        except OSError as err:
            log.info("%s: connection read failed: %s", self._name, err)
        finally:
            for task in tasks:
                task.cancel()
            writer.close()

    async def _handle(self, sid: int, raw: bytes, writer: asyncio.StreamWriter) -> None:
        try:
            req = request_pb2.Request.FromString(raw)
        except DecodeError as err:
            resp = error_response(int(Code.INVALID_ARGUMENT), f"bad request: {err}")
            self._send(writer, sid, resp)
            return
        handler = self._handlers.get((req.service, req.method), self._fallback)
        if handler is None:
            resp = error_response(
                int(Code.UNIMPLEMENTED), f"{req.service}/{req.method} is not implemented"
            )
        else:
            try:
                result = await handler(Call(req, raw))
                resp = result.data if type(result) is RawResponse else ok_response(result)
            except TtrpcError as err:
                resp = error_response(err.code, err.message)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.exception("%s: handler for %s/%s failed", self._name, req.service, req.method)
                resp = error_response(int(Code.UNKNOWN), f"{type(err).__name__}: {err}")
        self._send(writer, sid, resp)

    def _send(self, writer: asyncio.StreamWriter, sid: int, resp: bytes) -> None:
        if writer.is_closing():
            return
        try:
            frame = encode_frame(sid, FrameType.RESPONSE, resp)
        except FrameError as err:
            frame = encode_frame(
                sid, FrameType.RESPONSE, error_response(int(Code.RESOURCE_EXHAUSTED), str(err))
            )
        writer.write(frame)
