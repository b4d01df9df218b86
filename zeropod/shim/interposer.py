"""The interposer daemon: one per runc shim, between containerd and that runc shim.

It serves containerd's task API on its own socket and forwards it (:mod:`.proxy`, with the
scale-to-zero overrides of :mod:`.scaling`), receives the runc shim's events on a second
socket and relays them (:mod:`.events`, filtered by :mod:`.eventfilter`), and serves the
daemon's checkpoint/restore on a third (:mod:`.control`). It lives as long
as its runc shim: when the runc shim's connection closes (after containerd's ``Shutdown``, or a
crash), it delivers the events still queued, closes containerd's connections, removes its
sockets and exits. The launcher binds both sockets and hands them over as inherited fds.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path

from zeropod.shim import bootstrap, paths, runcshim, spec
from zeropod.shim import log as shimlog
from zeropod.shim.config import Config
from zeropod.shim.context import ShimContext
from zeropod.shim.control import ShimControl
from zeropod.shim.daemonlink import DaemonLink
from zeropod.shim.eventfilter import FilteringRelay
from zeropod.shim.eventrelay import EventRelay
from zeropod.shim.scaling import ScalingProxy
from zeropod.shim.taskproxy import TaskProxy
from zeropod.shim.tasks import Tracker
from zeropod.shim.upstream import Upstream
from zeropod.ttrpc import Client, Server

log = logging.getLogger(__name__)

UPSTREAM_CONNECT_TIMEOUT = 10.0
EVENT_DRAIN_TIMEOUT = 5.0


async def connect_upstream(path: str) -> Client:
    """Connect to the runc shim, which may still be starting its server."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + UPSTREAM_CONNECT_TIMEOUT
    while True:
        try:
            return await Client.connect(path)
        except ConnectionError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.02)


class Interposer:
    """Owns the two servers, the upstream connection and the event relay of one pod."""

    def __init__(
        self,
        cfg: Config,
        upstream: Client,
        proxy: TaskProxy,
        relay: EventRelay,
        control: ShimControl | None = None,
        bundles: Callable[[], list[str]] | None = None,
    ):
        self.cfg = cfg
        self.bundles = bundles
        """The bundle dirs of the group's tasks: all gone means containerd abandoned us."""
        self.upstream = upstream
        self.relay = relay
        self.control = control
        self.tasks = Server(proxy.handlers(), fallback=proxy.forward, name="task")
        self.events = Server(relay.handlers(), name="events")
        self._stop = asyncio.Event()

    async def run(self) -> None:
        cfg = self.cfg
        await self.tasks.serve_socket(socket.socket(fileno=cfg.socket_fd))
        await self.events.serve_socket(socket.socket(fileno=cfg.events_fd))
        relay_task = asyncio.create_task(self.relay.run(), name="event-relay")
        if self.control is not None:
            await self.control.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        notify_ready(cfg.ready_fd, "ready")
        log.info("interposer serving %s for runc shim %s", cfg.socket, cfg.upstream)
        lost = asyncio.create_task(self.upstream.wait_closed())
        stop = asyncio.create_task(self._stop.wait())
        waits = {lost, stop}
        if self.bundles is not None:
            waits.add(abandoned := asyncio.create_task(runcshim.watch_abandoned(self.bundles)))
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        if self.bundles is not None and abandoned.done():
            log.warning("containerd removed every task of this group without us: ending it")
            await asyncio.to_thread(self._end_runc_shim)
        reason = lost.result() if lost.done() else "signal or abandoned"
        log.info("shutting down: runc shim connection ended (%s)", reason)
        for wait in waits:
            wait.cancel()
        self.tasks.stop_listening()
        Path(cfg.socket).unlink(missing_ok=True)
        if self.control is not None:
            await self.control.close()
        await self.relay.drain(EVENT_DRAIN_TIMEOUT)
        relay_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await relay_task
        await self.tasks.close()
        await self.events.close()
        await self.upstream.close()
        remove_files(cfg)

    def _end_runc_shim(self) -> None:
        runc_file = paths.upstream_file(self.cfg.bootstrap)
        try:
            upstream = bootstrap.parse(runc_file.read_text())
        except (OSError, ValueError) as err:
            log.warning("cannot end the runc shim: %s unreadable: %s", runc_file, err)
            return
        runcshim.end_runc_shim(upstream, self.cfg.id)


def remove_files(cfg: Config) -> None:
    """Remove our sockets and state files; the lock file last, while holding the lock."""
    runc_file = paths.upstream_file(cfg.bootstrap)
    for path in (cfg.socket, cfg.events, control_path(cfg), cfg.bootstrap, runc_file):
        Path(path).unlink(missing_ok=True)
    lock = Path(cfg.lock)
    with contextlib.suppress(OSError), open(lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        lock.unlink(missing_ok=True)


def notify_ready(fd: int, message: str) -> None:
    """Tell the launcher how start-up went (it waits on the other end of a pipe)."""
    if fd < 0:
        return
    with contextlib.suppress(OSError):
        os.write(fd, message.encode()[:4000] + b"\n")
        os.close(fd)


async def amain(cfg: Config) -> int:
    try:
        upstream = await connect_upstream(cfg.upstream)
    except ConnectionError as err:
        log.error("cannot connect to runc shim: %s", err)
        notify_ready(cfg.ready_fd, f"error: cannot connect to runc shim: {err}")
        return 1
    try:
        spec.prepare_criu_configs()
        criu_configs = True
    except OSError as err:
        log.error("cannot write CRIU configs (no container of this shim is dumped): %s", err)
        criu_configs = False
    tracker = Tracker()
    daemon = DaemonLink(control_path(cfg))
    relay = FilteringRelay(
        cfg.containerd_events, tracker, cfg.namespace, lambda c, ev: ctx.exited(c, ev)
    )
    ctx = ShimContext(tracker, Upstream(upstream), relay, daemon)
    proxy = ScalingProxy(ctx, criu_configs)
    control = ShimControl(control_path(cfg), ctx)

    def bundles() -> list[str]:
        return [c.bundle for c in tracker.all()]

    interposer = Interposer(cfg, upstream, proxy, relay, control, bundles)
    try:
        await interposer.run()
    finally:
        await daemon.close()
    return 0


def control_path(cfg: Config) -> str:
    """The control socket: from the launcher, or derived from the task socket's name."""
    return cfg.control or cfg.socket.removesuffix(".sock") + ".ctl.sock"


def run(cfg: Config) -> int:
    """Serve one pod until its runc shim is gone; the exit status."""
    shimlog.setup(debug=cfg.debug, container=cfg.id, namespace=cfg.namespace, group=cfg.group)
    try:
        code = asyncio.run(amain(cfg))
    except Exception as err:
        log.exception("interposer failed")
        notify_ready(cfg.ready_fd, f"error: {type(err).__name__}: {err}")
        code = 1
    if code == 0 and not cfg.debug:
        Path(cfg.log).unlink(missing_ok=True)
    return code


def main() -> None:
    sys.exit(run(Config.from_json(sys.argv[1])))
