"""Entry point of the ``zeropod`` node daemon (``python3 -m zeropod.daemon.main``).

Starts the control server on the control socket, tells systemd it is ready, pings the
watchdog, and shuts down cleanly on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from zeropod.control.protocol import socket_path
from zeropod.control.server import ControlServer
from zeropod.daemon.events import EventHub
from zeropod.daemon.notify import notify, run_watchdog, watchdog_interval
from zeropod.daemon.registry import Registry
from zeropod.daemon.service import ControlService
from zeropod.journal import Journal, open_journal


async def run(path: str, journal: Journal, stop: asyncio.Event | None = None) -> None:
    """Serve until ``stop`` is set or SIGTERM/SIGINT arrives."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    service = ControlService(Registry(), journal, EventHub())
    server = ControlServer(path, service, journal.error)
    await server.start()
    watchdog: asyncio.Task[None] | None = None
    try:
        notify(f"READY=1\nSTATUS=listening on {path}")
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
        await server.close()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def main(argv: list[str] | None = None) -> int:
    """Run the daemon; returns the process exit status."""
    parser = argparse.ArgumentParser(prog="zeropod", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--socket",
        default=None,
        help="control socket path (default: $ZEROPOD_CONTROL_SOCKET or /run/zeropod/control.sock)",
    )
    args = parser.parse_args(argv)
    journal = open_journal()
    path = args.socket or socket_path()
    try:
        asyncio.run(run(path, journal))
    except (OSError, RuntimeError) as err:
        journal.error(f"zeropod daemon failed: {err}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
