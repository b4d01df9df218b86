"""sd_notify for a Type=notify service: READY, STOPPING, STATUS and the watchdog.

Uses systemd-python's ``systemd.daemon.notify`` when it is installed, else sends the
datagram to ``$NOTIFY_SOCKET`` itself. Outside systemd (no NOTIFY_SOCKET) every call is a
no-op that returns False.
"""

from __future__ import annotations

import array
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


SD_LISTEN_FDS_START = 3


def store_fd(name: str, fd: int, env: Mapping[str, str] | None = None) -> bool:
    """Put ``fd`` into the service manager's fd store under ``name`` (FDSTORE=1).

    systemd hands stored fds back (``LISTEN_FDS``/``LISTEN_FDNAMES``) when the service
    restarts, even after a crash, and keeps listening sockets queueing meanwhile. Needs
    ``FileDescriptorStoreMax=`` in the unit. False outside systemd.
    """
    env = os.environ if env is None else env
    address = env.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    message = f"FDSTORE=1\nFDNAME={name}".encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            # sendmsg, not socket.send_fds: Python 3.11's send_fds drops the address.
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))]
            sock.sendmsg([message], rights, 0, address)
        except OSError as err:
            raise OSError(err.errno, f"FDSTORE of {name} to {address!r} failed: {err}") from err
    return True


def inherited_fds(env: dict[str, str] | None = None) -> dict[str, socket.socket]:
    """The named sockets systemd passed to this process (``LISTEN_FDS``), by FDNAME.

    The variables are removed from the environment afterwards (children must not see
    them). Empty when none were passed to this pid.
    """
    env = os.environ if env is None else env  # type: ignore[assignment]
    assert env is not None
    found: dict[str, socket.socket] = {}
    if env.get("LISTEN_PID") == str(os.getpid()) and env.get("LISTEN_FDS", "").isdigit():
        names = env.get("LISTEN_FDNAMES", "").split(":")
        for index in range(int(env["LISTEN_FDS"])):
            fd = SD_LISTEN_FDS_START + index
            os.set_inheritable(fd, False)
            name = names[index] if index < len(names) else f"fd{index}"
            found[name] = socket.socket(fileno=fd)
    for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(key, None)
    return found
