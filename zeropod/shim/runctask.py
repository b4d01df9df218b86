"""The runc task under a container: created and started (from an image or cold), or ended
without a process. Shared by the restore (:mod:`zeropod.shim.restore`) and the lazy
restore's watch (:mod:`zeropod.shim.pagewatch`), which starts a container cold when its
pages are lost. Every function here is called with the container's ``lock`` held.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil

from zeropod.contract import timeouts
from zeropod.shim import leftovers, restorebound
from zeropod.shim.context import ShimContext
from zeropod.shim.lazypages import LazyPagesError, PageServer
from zeropod.shim.taskphase import TaskPhase
from zeropod.shim.tasks import TaskRecord
from zeropod.steptimer import StepTimer
from zeropod.ttrpc import TtrpcError
from zeropod.ttrpc.status import Code

log = logging.getLogger(__name__)

FAILED_WAKE_STATUS = 255


class RestoreTimeout(Exception):
    """A restore's CRIU ran past its bound and was killed."""


async def create_and_start(
    ctx: ShimContext,
    c: TaskRecord,
    image_dir: str | None,
    serving: asyncio.Future[PageServer | None] | None = None,
    timer: StepTimer | None = None,
) -> int:
    """Create + Start; on failure the half-made runc task is deleted again, after whatever
    a failed restore left running in the container's cgroup is killed (and the page server
    SERVING starts, a lazy restore's, ended).

    A runc task left over from the checkpoint (its Delete failed) is deleted first.
    """
    timer = timer or StepTimer()
    try:
        with timer.step("create"):
            try:
                await ctx.upstream.create(c, image_dir)
            except TtrpcError as err:
                if err.code != Code.ALREADY_EXISTS:
                    raise
                log.info("container %s: deleting the runc task left from the checkpoint", c.id)
                await ctx.upstream.delete(c)
                await ctx.upstream.create(c, image_dir)
        if image_dir is None:
            return await ctx.upstream.start(c)
        server = await serving if serving is not None else None
        with timer.step("start"):
            pid = await bounded_start(ctx, c, image_dir)
        if server is not None:
            with timer.step("hold"):
                await server.hold()
        return pid
    except (TtrpcError, ConnectionError, RestoreTimeout, LazyPagesError):
        if image_dir is not None:
            await asyncio.to_thread(leftovers.kill_container_processes, c.id)
            await asyncio.to_thread(restorebound.release_cgyards, image_dir)
        if serving is not None:  # after the kill, as in pagewatch
            server = await serving
            if server is not None:
                await server.stop()
        with contextlib.suppress(TtrpcError, ConnectionError):
            await ctx.upstream.delete(c)
        raise


async def bounded_start(ctx: ShimContext, c: TaskRecord, image_dir: str) -> int:
    """The restore's Start; past the image's bound its CRIU is killed (RestoreTimeout)."""
    bound = restorebound.bound_for(image_dir)
    start = asyncio.ensure_future(ctx.upstream.start(c))
    done, _ = await asyncio.wait({start}, timeout=bound)
    if start in done:
        return start.result()
    killed = await asyncio.to_thread(restorebound.kill_restore_criu, c.id)
    log_size = restorebound.cap_log(os.path.join(image_dir, "restore.log"))
    why = (
        f"CRIU did not finish in {bound:g} s (timeout), killed its processes {killed}, "
        f"its log cut from {log_size} bytes"
    )
    try:
        async with asyncio.timeout(timeouts.AFTER_KILL):
            return await start  # it finished just now after all
    except (TtrpcError, ConnectionError) as err:
        raise RestoreTimeout(f"{why}; Start: {err}") from err
    except TimeoutError as err:
        raise RestoreTimeout(f"{why}; Start did not return either") from err
    finally:
        restorebound.release_cgyards(image_dir)


def end_task(ctx: ShimContext, c: TaskRecord, status: int, why: str) -> None:
    """The task ends without a process: publish its exit, free everything it held."""
    c.end(status)
    ctx.tracker.move(c, TaskPhase.ENDED, why)
    c.release_stdio()  # containerd's log readers see EOF and finish
    ctx.relay.publish_exit(c)
    ctx.daemon.unregister(c, "killed while scaled down")
    if c.image_dir:
        shutil.rmtree(c.image_dir, ignore_errors=True)
