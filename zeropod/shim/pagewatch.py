"""A lazy restore's page server watched until every page is in; if it fails, the app (which
has not got all its memory) is killed and started cold, never left running on a page it did
not get. The journal says so and the daemon is told (``restarted_cold``), which counts it.

The page server can fail while the daemon's wake of the pod still holds its ports (the
wake releases them once the restored app listens, or after its listening bound when the app
was killed first). A cold app binds its ports without SO_REUSEPORT, so it would fail with
EADDRINUSE: the cold start waits until that wake is over (:meth:`DaemonLink.wake_over`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from zeropod.shim import leftovers
from zeropod.shim.context import ShimContext
from zeropod.shim.lazypages import PageServer, stream_bound
from zeropod.shim.runctask import FAILED_WAKE_STATUS, create_and_start, end_task
from zeropod.shim.taskphase import TaskPhase
from zeropod.shim.tasks import TaskRecord
from zeropod.ttrpc import TtrpcError

log = logging.getLogger(__name__)


async def watch_pages(ctx: ShimContext, c: TaskRecord, server: PageServer) -> None:
    """Wait for the page server; if it failed, kill the app and start it cold."""
    try:
        await _watch_pages_once(ctx, c, server)
    except Exception:
        log.exception("container %s: watching its page server failed", c.id)
        server.close()


async def _watch_pages_once(ctx: ShimContext, c: TaskRecord, server: PageServer) -> None:
    started = time.monotonic()
    bound = stream_bound(c.image_files)
    try:
        code: int | None = await asyncio.wait_for(server.ended(), bound)
    except TimeoutError:
        await server.kill()  # our copies stay open until the app is killed below
        code = None
    if code == 0:
        server.close()
        log.info(
            "container %s: all its memory is in from the image, %.0f ms after the restore",
            c.id,
            (time.monotonic() - started) * 1000,
            extra={"CONTAINER_ID": c.id},
        )
        return
    if code is None:
        error = f"lazy restore's page server did not finish in {bound:g} s, killed it"
    else:
        error = f"lazy restore's page server failed: {server.why()}"
    async with c.lock:
        if c.phase is not TaskPhase.RUNNING:  # it ended meanwhile
            server.close()
            return
        log.error(
            "container %s: %s; killing it and starting it cold",
            c.id,
            error,
            extra={"CONTAINER_ID": c.id},
        )
        ctx.tracker.move(c, TaskPhase.RESTORING, "page server failed")
        c.hold_stdio()
        await asyncio.to_thread(leftovers.kill_container_processes, c.id)
        server.close()  # after the kill: no fault was ever served a zero page
        with contextlib.suppress(TtrpcError, ConnectionError):
            await ctx.upstream.delete(c)
        # A cold app binds its ports afresh: the daemon's wake must have released them.
        await ctx.daemon.wake_over(c)
        try:
            c.pid = await create_and_start(ctx, c, None)
        except (TtrpcError, ConnectionError) as err:
            end_task(ctx, c, FAILED_WAKE_STATUS, f"{error}; cold start failed: {err}")
            return
        ctx.tracker.move(c, TaskPhase.RUNNING, f"pid {c.pid} (cold, page server failed)")
        c.release_stdio()
        if ctx.relay.release_real_exit(c):
            ctx.exited(c)
            return
        ctx.daemon.restarted_cold(c, error)
