"""Entry point of the ``zeropod`` node daemon (``python3 -m zeropod.daemon.main``).

Starts the control server on the control socket and the Prometheus metrics endpoint
(``--metrics-address`` or ``$ZEROPOD_METRICS_ADDRESS``, default ``127.0.0.1:9925``: this node
only; ``off`` disables it), tells systemd it is ready, pings the watchdog, and shuts down
cleanly on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import grp
import os
import signal
import sys

from zeropod.activity.sources import ExcludedSources
from zeropod.contract.protocol import socket_path
from zeropod.daemon.adapters.images import ImageStore
from zeropod.daemon.adapters.network import HostNetwork
from zeropod.daemon.adapters.notify import (
    inherited_fds,
    notify,
    run_watchdog,
    store_fd,
    watchdog_interval,
)
from zeropod.daemon.adapters.podnet import PodNetView
from zeropod.daemon.adapters.shim import ShimClient
from zeropod.daemon.adapters.statefiles import STATE_DIR, StateStore
from zeropod.daemon.adapters.systemd import SystemdUnits
from zeropod.daemon.api.controlserver import ControlServer
from zeropod.daemon.api.eventhub import EventHub
from zeropod.daemon.api.metrics import Metrics
from zeropod.daemon.api.metricsserver import AddressError, MetricsServer, parse_address, serve
from zeropod.daemon.api.service import ControlService
from zeropod.daemon.lifecycle.idle import IdleLoops
from zeropod.daemon.lifecycle.podlife import PodLife
from zeropod.daemon.lifecycle.pods import Pods
from zeropod.daemon.lifecycle.ports import PortHold
from zeropod.daemon.lifecycle.watch import HeldPortWatch
from zeropod.daemon.model.pod import PodKey
from zeropod.daemon.model.registry import Registry
from zeropod.daemon.restart import reclaim_images, reconcile_units, reload, watch_held
from zeropod.journal import Journal, open_journal
from zeropod.sockets import synlog
from zeropod.version import version

CONTROL_FD = "control"
METRICS_ENV = "ZEROPOD_METRICS_ADDRESS"
METRICS_DEFAULT = "127.0.0.1:9925"
READ_GROUP_ENV = "ZEROPOD_READ_GROUP"


def _build(
    journal: Journal, state_dir: str
) -> tuple[ControlService, HeldPortWatch, IdleLoops, SystemdUnits]:
    """The daemon's parts, wired to the node's real adapters."""
    excluded = ExcludedSources(refresh_seconds=5.0)  # the node's addresses, re-read
    if excluded.error is not None:
        journal.warning(f"cannot list the node's addresses yet: {excluded.error}")
    no_syn_record = synlog.unavailable()
    if no_syn_record is not None:
        journal.warning(
            "the kernel cannot record SYNs for the held ports here "
            f"({no_syn_record}): every wake's probe check walks the TCP hash with sock_diag"
        )
    registry = Registry()
    shim, network, units, images = ShimClient(), HostNetwork(), SystemdUnits(), ImageStore()

    def make_life(key: PodKey, netns: str) -> PodLife:
        life = PodLife(
            key,
            registry,
            shim=shim,
            images=images,
            ports=PortHold(key, units, network),
            net=PodNetView(netns),
            journal=journal,
        )
        life.on_ports_held = ports_held
        return life

    def ports_held(life: PodLife) -> None:
        service.save_pod(life)
        watch.watch(life)

    pods = Pods(registry, make_life)
    idle = IdleLoops(pods, journal, excluded)
    service = ControlService(
        registry, journal, EventHub(), pods=pods, idle=idle, store=StateStore(state_dir)
    )
    idle.on_gone = service.unregister_async
    watch = HeldPortWatch(pods, journal, excluded)
    return service, watch, idle, units


def _read_group(journal: Journal) -> int | None:
    """The gid of ``$ZEROPOD_READ_GROUP`` (members may read status and events), if set."""
    name = os.environ.get(READ_GROUP_ENV, "").strip()
    if not name:
        return None
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        journal.error(f"{READ_GROUP_ENV}={name!r}: no such group; only root may use the daemon")
        return None


def _start_metrics(
    service: ControlService, journal: Journal, address: tuple[str, int] | None
) -> tuple[asyncio.Task[None], MetricsServer | None]:
    """Follow the event hub into the metrics and serve them on ``address`` (None: not served).

    A metrics address that cannot be bound is logged; the daemon scales pods anyway.
    """
    metrics = Metrics(service.registry)
    follower = asyncio.create_task(metrics.follow(service.hub))
    if address is None:
        return follower, None
    try:
        server = serve(metrics, *address)
    except OSError as err:
        journal.error(f"cannot serve metrics on {address[0]}:{address[1]}: {err}")
        return follower, None
    journal.info(f"metrics on http://{address[0]}:{address[1]}/metrics")
    return follower, server


async def run(
    path: str,
    journal: Journal,
    stop: asyncio.Event | None = None,
    state_dir: str = STATE_DIR,
    metrics_address: tuple[str, int] | None = None,
) -> None:
    """Serve until ``stop`` is set or SIGTERM/SIGINT arrives."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    service, watch, idle, units = _build(journal, state_dir)
    await reload(service, ShimClient(), journal)
    await reconcile_units(service, units, journal)
    await watch_held(service, watch, journal)
    reclaim_images(service, ImageStore(), journal)
    follower, metrics_server = _start_metrics(service, journal, metrics_address)
    # The control socket lives in systemd's fd store: while the daemon restarts (even after
    # a crash) clients queue on it instead of being refused.
    inherited = inherited_fds()
    server = ControlServer(
        path,
        service,
        journal.error,
        sock=inherited.get(CONTROL_FD),
        read_gid=_read_group(journal),
    )
    await server.start()
    watchdog: asyncio.Task[None] | None = None
    try:
        notify(f"READY=1\nSTATUS=listening on {path}")
        try:
            if store_fd(CONTROL_FD, server.listening_fd()):
                server.keep_file = True
        except OSError as err:  # without the store a restart refuses clients for a moment
            journal.warning(f"cannot keep the control socket in the fd store: {err}")
        journal.info(f"zeropod daemon listening on {path}", control_socket=path)
        interval = watchdog_interval()
        if interval is not None:
            watchdog = asyncio.create_task(run_watchdog(interval))
        await stop.wait()
    finally:
        notify("STOPPING=1")
        journal.info("zeropod daemon stopping")
        if watchdog is not None:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
        await idle.close()
        await watch.close()
        await server.close()
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
        if metrics_server is not None:
            await asyncio.to_thread(metrics_server.close)
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def main(argv: list[str] | None = None) -> int:
    """Run the daemon (or ``zeropod install ...``); returns the process exit status."""
    given = sys.argv[1:] if argv is None else argv
    if given[:1] == ["install"]:  # the node installer (zeropod.install)
        from zeropod.install.cli import main as install

        return install(given[1:])
    parser = argparse.ArgumentParser(prog="zeropod", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"zeropod {version()}")
    parser.add_argument(
        "--state-dir",
        default=None,
        help=f"where container state survives restarts (default: 'state' next to the "
        f"control socket, {STATE_DIR})",
    )
    parser.add_argument(
        "--socket",
        default=None,
        help="control socket path (default: $ZEROPOD_CONTROL_SOCKET or /run/zeropod/control.sock)",
    )
    parser.add_argument(
        "--metrics-address",
        default=None,
        help=f"HOST:PORT of the Prometheus endpoint, or 'off' (default: ${METRICS_ENV} or "
        f"{METRICS_DEFAULT}, this node only)",
    )
    args = parser.parse_args(argv)
    try:
        if args.metrics_address is not None:
            metrics_address = parse_address(args.metrics_address, "--metrics-address")
        else:
            metrics_address = parse_address(os.environ.get(METRICS_ENV, METRICS_DEFAULT))
    except AddressError as err:
        parser.error(str(err))
    # `systemctl kill -s USR1 zeropod` writes every thread's stack to the journal (stderr).
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    journal = open_journal()
    path = args.socket or socket_path()
    try:
        state_dir = args.state_dir or os.path.join(os.path.dirname(path), "state")
        asyncio.run(run(path, journal, state_dir=state_dir, metrics_address=metrics_address))
    except (OSError, RuntimeError) as err:
        journal.error(f"zeropod daemon failed: {err}")
        return 1
    finally:
        journal.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
