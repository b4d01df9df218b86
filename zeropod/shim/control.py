"""The interposer's own control socket: the daemon's ``checkpoint``/``restore``, and ``status``.

The ops, their fields and replies are :mod:`zeropod.contract.shimops`; framing and error
shape are :mod:`zeropod.contract.protocol`'s. This module only looks the task up and calls
one function per op (:mod:`.checkpoint`, :mod:`.restore`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

from zeropod.contract.protocol import (
    BUSY,
    MAX_LINE,
    NOT_FOUND,
    PERMISSION,
    ControlError,
    decode,
    encode,
    respond,
    send_failure,
)
from zeropod.contract.shimops import (
    CheckpointRequest,
    RestoreRequest,
    ShimStatusRequest,
    parse_shim_request,
)
from zeropod.shim.checkpoint import checkpoint
from zeropod.shim.context import ShimContext
from zeropod.shim.restore import restore
from zeropod.shim.tasks import TaskRecord
from zeropod.sockets.peercred import peer_credentials

log = logging.getLogger(__name__)

IDLE_TIMEOUT = 30.0
"""Seconds a connection may stay silent between requests (the daemon sends at once)."""
MAX_CONNECTIONS = 64
"""Connections served at once; more are answered ``busy``."""


class ShimControl:
    """Serves the ops on a unix socket at ``path`` (mode 0600: the daemon runs as root)."""

    def __init__(
        self,
        path: str,
        ctx: ShimContext,
        peer: Callable[[socket.socket], tuple[int, int, int]] = peer_credentials,
    ) -> None:
        self.path = path
        self.ctx = ctx
        self._peer = peer
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self._server = await asyncio.start_unix_server(self._serve, path=self.path, limit=MAX_LINE)
        os.chmod(self.path, 0o600)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._conns):
            task.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            if not self._root_peer(writer):
                error = ControlError(PERMISSION, "only root may use a zeropod shim's socket")
                await send_failure(writer, error)
                return
            if len(self._conns) > MAX_CONNECTIONS:
                error = ControlError(BUSY, f"{MAX_CONNECTIONS} connections open; retry")
                await send_failure(writer, error)
                return
            while True:
                async with asyncio.timeout(IDLE_TIMEOUT):  # a silent peer is not kept
                    line = await reader.readline()
                if not line:
                    break
                if line.strip():
                    writer.write(encode(await self.answer(line)))
                    await writer.drain()
        except (ConnectionError, ValueError, TimeoutError):
            pass  # gone, silent too long, or a line longer than MAX_LINE: drop it
        finally:
            self._conns.discard(task)
            writer.close()

    def _root_peer(self, writer: asyncio.StreamWriter) -> bool:
        """The peer is root (the daemon), checked with SO_PEERCRED, not by file mode alone."""
        try:
            _, uid, _ = self._peer(writer.get_extra_info("socket"))
        except OSError:
            return False
        return uid == 0

    async def answer(self, line: bytes) -> dict[str, Any]:
        """The response to one request line."""
        return await respond(self.handle(line), f"request {line[:200]!r}", log.error)

    async def handle(self, line: bytes | dict[str, Any]) -> dict[str, Any]:
        message = decode(line) if isinstance(line, bytes) else line
        match parse_shim_request(message):
            case ShimStatusRequest():
                return {"containers": [c.status() for c in self.ctx.tracker.all()]}
            case CheckpointRequest() as op:
                c = self._task(op.container_id)
                return (await checkpoint(self.ctx, c, op.image_dir or "", op.mode)).to_body()
            case RestoreRequest() as op:
                c = self._task(op.container_id)
                reply = await restore(self.ctx, c, op.image_dir, fallback=op.fallback, lazy=op.lazy)
                return reply.to_body()

    def _task(self, container_id: str) -> TaskRecord:
        c = self.ctx.tracker.get(container_id)
        if c is None:
            raise ControlError(NOT_FOUND, f"no container {container_id} in this shim")
        return c
