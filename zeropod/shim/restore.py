"""Waking one container, and ending one that containerd kills while it sleeps.

:func:`restore`, the control socket's ``restore`` op:
1. SCALED_DOWN -> RESTORING (the runc shim's create/start events stay held).
2. Create the task again exactly as containerd first did, plus ``checkpoint=image_dir`` and
   CRIU's work dir in the runc options; Start runs CRIU's restore and gives the new pid.
3. If that fails, whatever the failed restore left running in the container's cgroup is
   killed (:mod:`zeropod.shim.leftovers`) and the half-made task deleted; if the image is
   still as the dump wrote it (:mod:`zeropod.shim.imagefiles`) it is restored once more, or
   the app's memory would be lost to a CRIU killed or stuck for a moment. If that fails too
   (or there is no image): start it cold from the original request (``cold: true``, the
   failure in ``error``). With ``fallback=False`` (the daemon, which must release the pod's
   ports before a cold app can bind) a failed restore goes back to SCALED_DOWN and raises
   ``restore_failed`` instead; the image stays.
4. -> RUNNING; our stdio FIFO ends are closed (the runc shim holds its own again), a pending
   Wait from containerd now waits on the new task.
If even the cold start fails, the task ends (exit published, status 255).

Lazy (``lazy``, the daemon's default from 16 MB of image on): the first attempt runs with a
``criu lazy-pages`` page server (:mod:`zeropod.shim.lazypages`) and ``lazy-pages`` in the
container's CRIU config, so the app runs before its memory is copied; only from an intact
image (a damaged one would be found by the page server after the app runs). The second
attempt is an eager one. While pages stream in, :mod:`zeropod.shim.pagewatch` waits for the
server: if it fails, the app has not got all its memory, so it is killed and started cold
(journal, ``restarted_cold`` to the daemon, which counts it); the app never runs on a page it
did not get. Creating, starting and ending the runc task: :mod:`zeropod.shim.runctask`.

A restore's Start is bounded (:mod:`zeropod.shim.restorebound`, proportional to the image):
past the bound its CRIU is killed, the runc shim's Start fails, and the restore is a failed
one (``restore_failed`` naming the timeout and CRIU's log, or the cold fallback).

:func:`end_asleep`: Kill from containerd while scaled down ends the task without restoring.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from zeropod.contract.protocol import BAD_PHASE, RESTORE_FAILED, ControlError
from zeropod.contract.shimops import TaskReply
from zeropod.criulog import first_error
from zeropod.shim import imagefiles, spec
from zeropod.shim.context import ShimContext
from zeropod.shim.lazypages import LazyPagesError, PageServer
from zeropod.shim.pagewatch import watch_pages
from zeropod.shim.runctask import FAILED_WAKE_STATUS, RestoreTimeout, create_and_start, end_task
from zeropod.shim.taskphase import TaskPhase
from zeropod.shim.tasks import TaskRecord
from zeropod.steptimer import StepTimer
from zeropod.ttrpc import TtrpcError

log = logging.getLogger(__name__)


async def restore(
    ctx: ShimContext,
    c: TaskRecord,
    image_dir: str | None,
    *,
    fallback: bool = False,
    lazy: bool = False,
) -> TaskReply:
    """Bring ``c`` back from ``image_dir`` (None: cold); its reply, or ControlError.

    A failed restore from ``image_dir`` raises ``restore_failed`` and leaves ``c`` scaled
    down: the daemon decides the cold start (it must release the pod's ports first). Only
    ``fallback=True`` starts it cold here: the shim's own wake when the daemon cannot
    (:meth:`zeropod.shim.scaling.ScalingProxy.wake`).
    """
    async with c.lock:
        if c.phase is TaskPhase.RUNNING:
            return TaskReply(pid=c.pid, duration_ms=0)
        if c.phase is not TaskPhase.SCALED_DOWN:
            raise ControlError(BAD_PHASE, f"container {c.id} is {c.phase.value}, not scaled down")
        started = time.monotonic()
        timer = StepTimer()
        ctx.tracker.move(c, TaskPhase.RESTORING, f"from {image_dir}" if image_dir else "cold")
        result: dict[str, Any] = {"cold": image_dir is None}
        pid = 0
        server: PageServer | None = None
        if image_dir is not None:
            try:
                pid, server = await _restore_from(ctx, c, image_dir, lazy, timer)
            except (TtrpcError, ConnectionError, RestoreTimeout) as err:
                log_path = os.path.join(image_dir, "restore.log")
                cause = first_error(log_path)
                result["error"] = (
                    f"restore from {image_dir} failed: {err}"
                    f"{f'; CRIU: {cause}' if cause else ''} (CRIU log: {log_path})"
                )
                if not fallback:
                    ctx.tracker.move(c, TaskPhase.SCALED_DOWN, "restore failed, no fallback")
                    log.warning("container %s: %s; not starting it cold", c.id, result["error"])
                    raise ControlError(RESTORE_FAILED, f"{c.id}: {result['error']}") from err
                result["cold"] = True
                log.warning("container %s: %s; starting it cold", c.id, result["error"])
        if result["cold"]:
            try:
                pid = await create_and_start(ctx, c, None)
            except (TtrpcError, ConnectionError) as err:
                end_task(ctx, c, FAILED_WAKE_STATUS, f"cold start failed: {err}")
                raise ControlError(
                    RESTORE_FAILED, f"{c.id}: {result.get('error', 'no image')}; cold start: {err}"
                ) from err
        c.pid = pid
        ctx.tracker.move(c, TaskPhase.RUNNING, f"pid {pid}{' (cold)' if result['cold'] else ''}")
        c.release_stdio()
        if server is not None:
            c.pages = asyncio.create_task(watch_pages(ctx, c, server), name=f"pages-{c.id}")
        if ctx.relay.release_real_exit(c):  # it died right after the restore
            ctx.exited(c)
        duration_ms = round((time.monotonic() - started) * 1000)
        how = " cold" if result["cold"] else " lazily" if server else ""
        log.info(
            "container %s restored%s in %d ms, pid %d",
            c.id,
            how,
            duration_ms,
            pid,
            extra={
                "RESTORE_MS": duration_ms,
                "CONTAINER_ID": c.id,
                **{name.upper(): ms for name, ms in timer.fields().items()},
            },
        )
        return TaskReply(
            pid, duration_ms, cold=result["cold"], error=result.get("error"), lazy=bool(server)
        )


async def _restore_from(
    ctx: ShimContext, c: TaskRecord, image_dir: str, lazy: bool, timer: StepTimer
) -> tuple[int, PageServer | None]:
    """Restore from IMAGE_DIR (lazily if asked and the image is intact); a failed attempt
    is tried once more, eagerly, while the image is intact. The pid, and the page server
    of a lazy restore.

    A lazy restore's page server starts while the runc shim creates the task (Create runs
    no CRIU; only Start reads the CRIU config that names the server): its start (~8 ms,
    CRIU's own) is off the wake's path."""
    intact = lazy and await asyncio.to_thread(imagefiles.intact, image_dir, c.image_files)
    serving = asyncio.ensure_future(_page_server(c, image_dir, timer)) if intact else None
    try:
        pid = await create_and_start(ctx, c, image_dir, serving, timer)
        return pid, serving.result() if serving is not None else None
    except (TtrpcError, ConnectionError, RestoreTimeout, LazyPagesError) as err:
        if not await asyncio.to_thread(imagefiles.intact, image_dir, c.image_files):
            raise
        log.warning("container %s: restore failed (%s); its image is intact, once more", c.id, err)
    finally:
        if serving is not None:
            _write_config(c, False)
    return await create_and_start(ctx, c, image_dir, timer=timer), None


async def _page_server(c: TaskRecord, image_dir: str, timer: StepTimer) -> PageServer | None:
    """A started page server with ``lazy-pages`` in C's CRIU config; None (eager) if not."""
    if not c.criu_config_set:
        return None
    try:
        log_path = spec.criu_config_for(c.id).with_suffix(".lazy-pages.log")
        with timer.step("page_server"):
            server = await PageServer.start(image_dir, str(log_path))
    except LazyPagesError as err:
        log.warning("container %s: restoring eagerly, no page server: %s", c.id, err)
        return None
    try:
        _write_config(c, True)
    except OSError as err:
        log.warning("container %s: restoring eagerly, cannot write its CRIU config: %s", c.id, err)
        await server.stop()
        return None
    return server


def _write_config(c: TaskRecord, lazy: bool) -> None:
    """C's CRIU config with or without ``lazy-pages`` (a few bytes on /run, written on the
    loop like the one at Create)."""
    spec.write_criu_config(spec.criu_config_for(c.id), lazy=lazy)


async def end_asleep(ctx: ShimContext, c: TaskRecord, signal: int) -> None:
    """containerd's Kill while scaled down: the task ends with 128 + signal, not restored."""
    async with c.lock:
        if c.phase is TaskPhase.SCALED_DOWN:
            end_task(ctx, c, 128 + signal, f"killed with signal {signal} while scaled down")
