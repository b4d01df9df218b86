"""The interposer's own control socket: the daemon's ``checkpoint``/``restore``, and ``status``.

JSON lines with :mod:`zeropod.control.protocol`'s framing and error shape; every op but
``status`` names ``container_id`` (``id`` is accepted too). See docs/scale-to-zero.md.

- ``checkpoint {container_id, image_dir, mode?: "checkpoint"|"stop"}`` -> ``{pid, duration_ms}``
- ``restore {container_id, image_dir?, fallback?}`` -> ``{pid, cold, duration_ms, error?}``;
  ``image_dir`` null starts cold, absent uses the last checkpoint's image. ``fallback`` (default
  true) false: a failed restore is not followed by a cold start; the container stays scaled
  down and the answer is a ``restore_failed`` error (the daemon then runs its own cold path).
- ``status`` -> ``{containers: [{container_id, phase, pid, last_pid, ...}]}``
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any

from zeropod.control.protocol import (
    BAD_REQUEST,
    INTERNAL,
    MAX_LINE,
    NOT_FOUND,
    UNKNOWN_OP,
    UNSUPPORTED_VERSION,
    VERSION,
    ControlError,
    decode,
    encode,
    failure,
    ok,
)
from zeropod.shim.checkpoint import MODES, checkpoint
from zeropod.shim.context import ShimContext
from zeropod.shim.restore import restore
from zeropod.shim.tasks import Container

log = logging.getLogger(__name__)

OPS = ("checkpoint", "restore", "status")


class ShimControl:
    """Serves the ops on a unix socket at ``path`` (mode 0600: the daemon runs as root)."""

    def __init__(self, path: str, ctx: ShimContext) -> None:
        self.path = path
        self.ctx = ctx
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
            while line := await reader.readline():
                if line.strip():
                    writer.write(encode(await self.answer(line)))
                    await writer.drain()
        except (ConnectionError, ValueError):
            pass  # gone, or a line longer than MAX_LINE: drop the connection
        finally:
            self._conns.discard(task)
            writer.close()

    async def answer(self, line: bytes) -> dict[str, Any]:
        """The response to one request line."""
        try:
            return ok(**await self.handle(decode(line)))
        except ControlError as err:
            return failure(err)
        except Exception as err:  # a bug must not take the interposer down
            log.exception("control request failed: %r", line[:200])
            return failure(ControlError(INTERNAL, f"{type(err).__name__}: {err}"))

    async def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        version = request.get("v", VERSION)
        if version != VERSION:
            raise ControlError(UNSUPPORTED_VERSION, f"field 'v': speaks {VERSION}, got {version!r}")
        op = request.get("op")
        if op == "status":
            return {"containers": [c.status() for c in self.ctx.tracker.all()]}
        if op not in OPS:
            raise ControlError(UNKNOWN_OP, f"unknown op {op!r}; known ops: {', '.join(OPS)}")
        c = self._container(request)
        if op == "checkpoint":
            mode = request.get("mode", MODES[0])
            if mode not in MODES:
                raise ControlError(BAD_REQUEST, f"field 'mode': one of {MODES}, got {mode!r}")
            image_dir = _path(request, "image_dir", required=mode == MODES[0])
            return await checkpoint(self.ctx, c, image_dir or "", mode)
        image_dir = _path(request, "image_dir", required=False) if "image_dir" in request else None
        if "image_dir" not in request:
            image_dir = c.image_dir
        fallback = request.get("fallback", True)
        if not isinstance(fallback, bool):
            raise ControlError(BAD_REQUEST, f"field 'fallback': true or false, got {fallback!r}")
        return await restore(self.ctx, c, image_dir, fallback=fallback)

    def _container(self, request: dict[str, Any]) -> Container:
        cid = request.get("container_id", request.get("id"))
        if not isinstance(cid, str) or not cid:
            raise ControlError(BAD_REQUEST, f"field 'container_id': a container id, got {cid!r}")
        c = self.ctx.tracker.get(cid)
        if c is None:
            raise ControlError(NOT_FOUND, f"no container {cid} in this shim")
        return c


def _path(request: dict[str, Any], name: str, *, required: bool) -> str | None:
    value = request.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.startswith("/") or "\0" in value:
        raise ControlError(BAD_REQUEST, f"field {name!r}: an absolute path, got {value!r}")
    return value
