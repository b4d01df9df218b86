"""Putting one container to sleep: the control socket's ``checkpoint`` op, step by step.

1. RUNNING -> CHECKPOINTING: the event filter holds the runc shim's events for it from now
   (the exit event can arrive before the Checkpoint reply).
2. Hold our own ends of its stdio FIFOs, so containerd's log reader never sees EOF.
3. The runc shim's Checkpoint (CRIU dump into ``image_dir``, process exits), or for mode
   ``stop`` a SIGKILL and Wait.
3b. Remove the dumped SysV segments from the pod's IPC namespace (``sysvipc``).
4. Delete the stopped runc task. -> SCALED_DOWN. containerd saw nothing.

A failed dump leaves the process running: back to RUNNING, stdio ends released, and the
error names CRIU's log.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import time

from zeropod.contract.protocol import BAD_PHASE, CHECKPOINT_FAILED, ControlError
from zeropod.contract.shimops import Mode, TaskReply
from zeropod.criulog import first_error
from zeropod.shim import imagefiles, restorebound
from zeropod.shim.context import ShimContext
from zeropod.shim.lazypages import stream_bound
from zeropod.shim.spec import read_spec
from zeropod.shim.sysvipc import release_dumped_segments
from zeropod.shim.taskphase import TaskPhase
from zeropod.shim.tasks import TaskRecord
from zeropod.ttrpc import TtrpcError
from zeropod.ttrpc.status import Code

log = logging.getLogger(__name__)


async def checkpoint(ctx: ShimContext, c: TaskRecord, image_dir: str, mode: Mode) -> TaskReply:
    """Dump (or stop) ``c``; its reply, or ControlError.

    The reply goes out as soon as the app is dumped and gone (and its image root's alone);
    the clean-up after it (SysV segments, deleting the runc task) runs next, still under
    ``c.lock``, which it releases: a restore waits for it, the daemon's sleep does not.
    """
    if c.pages is not None and not c.pages.done():
        # A lazy restore's pages still stream in: dump once they are all in (CRIU would
        # otherwise read them through the page server, which reads the image just replaced).
        await asyncio.wait({c.pages}, timeout=stream_bound(c.image_files))
    await c.lock.acquire()
    try:
        reply = await _dump(ctx, c, image_dir, mode)
    except BaseException:
        c.lock.release()
        raise
    c.finishing = asyncio.create_task(_after_dump(ctx, c, c.image_dir))  # None after a stop
    return reply


async def _after_dump(ctx: ShimContext, c: TaskRecord, image_dir: str | None) -> None:
    """Step 3b and 4 after the reply; owns ``c.lock`` (taken by :func:`checkpoint`)."""
    started = time.monotonic()
    try:
        if image_dir is not None:
            await _release_sysv_segments(c, image_dir)
        try:
            await ctx.upstream.delete(c)
        except (TtrpcError, ConnectionError) as err:  # restore deletes again before re-creating
            log.warning("container %s: deleting the dumped runc task failed: %s", c.id, err)
        log.info(
            "container %s: asleep, clean-up after the dump took %.0f ms",
            c.id,
            (time.monotonic() - started) * 1000,
        )
    finally:
        c.lock.release()


async def _dump(ctx: ShimContext, c: TaskRecord, image_dir: str, mode: Mode) -> TaskReply:
    """Steps 1-3 under ``c.lock`` (held by the caller)."""
    if c.phase is not TaskPhase.RUNNING:
        raise ControlError(BAD_PHASE, f"container {c.id} is {c.phase.value}, not running")
    if mode == "checkpoint" and not c.criu_config_set:
        raise ControlError(
            CHECKPOINT_FAILED,
            f"container {c.id}: its CRIU config could not be set to zeropod's at Create, "
            "so it is never dumped (its spec could name CRIU action scripts)",
        )
    started = time.monotonic()
    ctx.tracker.move(c, TaskPhase.CHECKPOINTING, mode)
    c.hold_stdio()
    try:
        if mode == "checkpoint":
            os.makedirs(image_dir, mode=0o700, exist_ok=True)
            await ctx.upstream.checkpoint(c, image_dir)
        else:
            await ctx.upstream.kill(c, signal.SIGKILL)
            await ctx.upstream.wait(c)
    except (TtrpcError, ConnectionError, OSError) as err:
        if mode == "checkpoint" and getattr(err, "code", None) == Code.DEADLINE_EXCEEDED:
            await _end_stuck_dump(ctx, c, image_dir)
        c.release_stdio()
        ctx.tracker.move(c, TaskPhase.RUNNING, "checkpoint failed")
        if ctx.relay.release_real_exit(c):
            ctx.exited(c)
        where = ""
        if mode == "checkpoint":
            dump_log = os.path.join(image_dir, "dump.log")
            cause = first_error(dump_log)
            where = f"; CRIU: {cause}" if cause else ""
            where += f"; CRIU log: {dump_log}{disk_note(image_dir)}"
        log.warning("container %s: %s failed: %s%s", c.id, mode, err, where)
        raise ControlError(CHECKPOINT_FAILED, f"{mode} of {c.id} failed: {err}{where}") from err
    if mode == "checkpoint":
        c.image_files = await asyncio.to_thread(owner_only, image_dir)
    c.image_dir = image_dir if mode == "checkpoint" else None
    c.held.clear()
    how = "dumped" if c.image_dir else "stopped"
    ctx.tracker.move(c, TaskPhase.SCALED_DOWN, f"pid {c.pid} {how}")
    duration_ms = round((time.monotonic() - started) * 1000)
    log.info(
        "container %s scaled down in %d ms",
        c.id,
        duration_ms,
        extra={"CHECKPOINT_MS": duration_ms, "CONTAINER_ID": c.id},
    )
    return TaskReply(pid=c.pid, duration_ms=duration_ms)


LOW_DISK = 16 << 20
"""Below this much free space on the image disk, a failed dump's error says so."""


def disk_note(image_dir: str) -> str:
    """``; the image disk has N KiB free`` when it is nearly full (a likely cause), else ""."""
    try:
        st = os.statvfs(image_dir)
    except OSError:
        return ""
    free = st.f_bavail * st.f_frsize
    return f"; the image disk has {free // 1024} KiB free" if free < LOW_DISK else ""


def owner_only(image_dir: str) -> dict[str, int]:
    """The app's memory on disk is root's alone: CRIU writes its images 0644; they become
    0600 in their 0700 directory (a file that cannot be changed is logged, the dump stands).
    The image files' sizes as written (:mod:`zeropod.shim.imagefiles`)."""
    with os.scandir(image_dir) as entries:
        for entry in entries:
            if entry.is_file(follow_symlinks=False):
                try:
                    os.chmod(entry.path, 0o600)
                except OSError as err:
                    log.warning("image file %s stays readable: %s", entry.path, err)
    os.chmod(image_dir, 0o700)
    return imagefiles.sizes(image_dir)


async def _end_stuck_dump(ctx: ShimContext, c: TaskRecord, image_dir: str) -> None:
    """A dump ran past its bound: kill its CRIU and thaw the app, which CRIU froze. The app
    must never stay frozen; it runs on as if the sleep had not been tried."""
    killed = await asyncio.to_thread(restorebound.kill_dump_criu, image_dir)
    for _ in range(50):  # the killed CRIU is reaped, runc ends its checkpoint
        if not await asyncio.to_thread(restorebound.criu_pids_using, image_dir):
            break
        await asyncio.sleep(0.1)
    try:
        await ctx.upstream.resume(c)
    except (TtrpcError, ConnectionError) as err:  # not frozen (CRIU thawed it as it died)
        log.info("container %s: resume after a stuck dump: %s", c.id, err)
    await asyncio.to_thread(restorebound.release_cgyards, image_dir)
    log.warning(
        "container %s: dump passed its bound; killed CRIU %s and thawed the app", c.id, killed
    )


async def _release_sysv_segments(c: TaskRecord, image_dir: str) -> None:
    """Step 3b: the dumped SysV segments leave the pod's IPC namespace (see
    :mod:`zeropod.shim.sysvipc`), or the restore could not re-create them."""
    try:
        spec = functools.partial(read_spec, c.bundle)
        removed = await asyncio.to_thread(release_dumped_segments, image_dir, spec)
    except Exception as err:  # the dump succeeded: nothing after it may fail the op
        log.warning("container %s: SysV shared memory left in the pod: %r", c.id, err)
        return
    if removed:
        log.info("container %s: removed dumped SysV segments %s from the pod", c.id, removed)
