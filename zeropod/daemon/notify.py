"""sd_notify for a Type=notify service: READY, STOPPING, STATUS and the watchdog.

Uses systemd-python's ``systemd.daemon.notify`` when it is installed, else sends the
datagram to ``$NOTIFY_SOCKET`` itself. Outside systemd (no NOTIFY_SOCKET) every call is a
no-op that returns False.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Mapping


def notify(state: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (e.g. ``READY=1``) to the service manager; True if it was sent.

    Passing ``env`` forces the raw datagram path with that environment (used by tests).
    """
    if env is None:
        try:
            from systemd import daemon as systemd_daemon  # optional dependency
        except ImportError:
            return raw_notify(state, os.environ)
        return bool(systemd_daemon.notify(state))
    return raw_notify(state, env)


def raw_notify(state: str, env: Mapping[str, str]) -> bool:
    """Send ``state`` as one datagram to ``env['NOTIFY_SOCKET']`` (``@`` = abstract)."""
    address = env.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.connect(address)
            sock.sendall(state.encode())
        except OSError as err:
            raise OSError(err.errno, f"sd_notify to {env['NOTIFY_SOCKET']} failed: {err}") from err
    return True


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of ``WATCHDOG_USEC``), or None when not asked.

    Honours ``WATCHDOG_PID``: the watchdog is meant for that process only.
    """
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 1_000_000 / 2


async def run_watchdog(interval: float, env: Mapping[str, str] | None = None) -> None:
    """Ping the watchdog every ``interval`` seconds from the event loop until cancelled.

    Running on the loop means a blocked loop stops the pings and systemd restarts us.
    """
    while True:
        notify("WATCHDOG=1", env)
        await asyncio.sleep(interval)
