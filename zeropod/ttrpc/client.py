"""A multiplexed ttrpc client: many concurrent unary calls on one connection.

Calls use odd stream ids. A per-call timeout is sent to the peer as ``timeout_nano`` and also
bounds the local wait. When the connection ends every pending call fails with
:class:`ConnectionClosed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Iterable

from zeropod._gen.ttrpc import request_pb2
from zeropod.ttrpc.framing import FrameDecoder, FrameError, FrameType, encode_frame
from zeropod.ttrpc.status import Code, TtrpcError, parse_response

log = logging.getLogger(__name__)

READ_CHUNK = 1 << 16


class ConnectionClosed(TtrpcError):
    """The connection ended (peer closed, protocol error, or local close) before a reply."""

    def __init__(self, reason: str) -> None:
        super().__init__(int(Code.UNAVAILABLE), f"ttrpc: closed: {reason}")


class Client:
    """One ttrpc connection. Create with :meth:`connect`; safe for concurrent calls."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._ids = itertools.count(1, 2)
        self._pending: dict[int, asyncio.Future[bytes]] = {}
        self._closed: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._read_task = asyncio.create_task(self._read_loop(), name="ttrpc-client-read")

    @classmethod
    async def connect(cls, path: str, timeout: float = 5.0) -> Client:
        """Connect to a unix socket path (a ``unix://`` prefix is accepted)."""
        path = path.removeprefix("unix://")
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(path, limit=READ_CHUNK), timeout
            )
        except (OSError, TimeoutError) as err:
            raise ConnectionError(f"cannot connect to ttrpc socket {path}: {err}") from err
        return cls(reader, writer)

    @property
    def closed(self) -> bool:
        return self._closed.done()

    async def wait_closed(self) -> str:
        """Block until the connection ends; returns the reason."""
        return await asyncio.shield(self._closed)

    async def call(
        self,
        service: str,
        method: str,
        payload: bytes,
        *,
        timeout: float | None = None,
        metadata: Iterable[tuple[str, str]] = (),
    ) -> bytes:
        """Call service/method; return the response payload or raise TtrpcError."""
        req = request_pb2.Request(service=service, method=method, payload=payload)
        if timeout is not None:
            req.timeout_nano = int(timeout * 1e9)
        for key, value in metadata:
            req.metadata.add(key=key, value=value)
        return parse_response(await self.roundtrip(req.SerializeToString(), timeout=timeout))

    async def roundtrip(self, request: bytes, *, timeout: float | None = None) -> bytes:
        """Send a serialised Request; return the serialised Response unchanged.

        Raises ConnectionClosed if the connection ends first, TtrpcError(DEADLINE_EXCEEDED)
        if ``timeout`` seconds pass first.
        """
        if self._closed.done():
            raise ConnectionClosed(self._closed.result())
        sid = next(self._ids) & 0xFFFFFFFF
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[sid] = fut
        try:
            try:
                self._writer.write(encode_frame(sid, FrameType.REQUEST, request))
            except FrameError as err:
                raise TtrpcError(int(Code.RESOURCE_EXHAUSTED), str(err)) from err
            try:  # the write is part of the call: a peer that stops reading cannot hang it
                async with asyncio.timeout(timeout):
                    await self._writer.drain()
                    return await fut
            except TimeoutError as err:
                raise TtrpcError(
                    int(Code.DEADLINE_EXCEEDED), f"no reply within {timeout:.3f}s"
                ) from err
        except ConnectionError as err:  # write or drain on a transport that just closed
            raise ConnectionClosed(str(err)) from err
        finally:
            self._pending.pop(sid, None)

    async def close(self) -> None:
        """Close the connection; pending calls fail with ConnectionClosed."""
        self._read_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._read_task

    async def _read_loop(self) -> None:
        decoder = FrameDecoder()
        reason = "connection closed by peer"
        try:
            while data := await self._reader.read(READ_CHUNK):
                for frame in decoder.feed(data):
                    if frame.type != FrameType.RESPONSE:
                        log.debug("ignoring frame type %d, stream %d", frame.type, frame.stream_id)
                        continue
                    fut = self._pending.get(frame.stream_id)
                    if fut is None or fut.done():
                        log.debug("reply for unknown or abandoned stream %d", frame.stream_id)
                        continue
                    fut.set_result(frame.payload)
        except FrameError as err:
            reason = f"protocol error: {err}"
            log.warning("closing ttrpc client connection: %s", reason)
        except OSError as err:
            reason = f"read failed: {err}"
        except asyncio.CancelledError:
            reason = "closed locally"
        finally:
            self._shutdown(reason)

    def _shutdown(self, reason: str) -> None:
        if not self._closed.done():
            self._closed.set_result(reason)
        self._writer.close()
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ConnectionClosed(reason))
        self._pending.clear()
