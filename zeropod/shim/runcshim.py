"""Ending a group's runc shim once containerd is done with the group but did not end it.

containerd only knows the interposer. Two ways the runc shim could outlive its pod:

- the interposer died: containerd's dead-shim cleanup runs our ``delete``
  (:func:`zeropod.shim.actions.delete`), which ends the runc shim;
- containerd gave up on a live interposer (it counted it dead, a timeout) and cleaned the
  group up without it: it removed the tasks' bundle directories and will never call
  Shutdown. The interposer checks for that (:func:`abandoned`) and ends both.

containerd's runc shim ignores Shutdown while it still counts containers, so after a short
grace it is killed; it is found as the process holding its listening socket (SO_PEERCRED
would name its ``start`` parent, which bound the socket and is gone).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from zeropod.shim import bootstrap, launcher, procfd

log = logging.getLogger(__name__)

SHUTDOWN_GRACE = 2.0
"""How long an orphaned runc shim gets to exit on Shutdown before it is killed."""


ABANDONED_INTERVAL = 30.0
ABANDONED_CHECKS = 2
"""Checks in a row, ABANDONED_INTERVAL apart, that must find the group abandoned."""


async def watch_abandoned(
    bundles: Callable[[], Iterable[str]],
    interval: float = ABANDONED_INTERVAL,
    checks: int = ABANDONED_CHECKS,
) -> None:
    """Return once :func:`abandoned` has held for CHECKS checks in a row."""
    confirmed = 0
    while confirmed < checks:
        await asyncio.sleep(interval)
        confirmed = confirmed + 1 if abandoned(bundles()) else 0


def abandoned(bundles: Iterable[str]) -> bool:
    """True when the group had tasks and containerd removed every one's bundle directory."""
    known = list(bundles)
    return bool(known) and not any(os.path.isdir(b) for b in known)


def end_runc_shim(upstream: bootstrap.Bootstrap, container_id: str) -> None:
    """Shut the runc shim at UPSTREAM down, and kill it if it is still there after
    :data:`SHUTDOWN_GRACE` (see the module docstring)."""
    path = bootstrap.unix_path(upstream.address)
    pids = listener_pids(path)
    if not pids:
        log.info("runc shim %s is gone already", path)
        return
    launcher.stop_runc_shim(upstream, container_id)
    deadline = time.monotonic() + SHUTDOWN_GRACE
    while time.monotonic() < deadline and listener_pids(path):
        time.sleep(0.05)
    if stubborn := listener_pids(path):
        log.warning("runc shim %s (pid %s) ignored Shutdown: killing it", path, stubborn)
        procfd.kill(stubborn)


def listener_pids(path: str, proc: Path = Path("/proc")) -> list[int]:
    """The processes holding the listening unix socket bound at PATH."""
    inodes = set()
    try:
        with open(proc / "net" / "unix") as f:
            next(f)
            for line in f:
                fields = line.split()
                # Num RefCount Protocol Flags Type St Inode Path; St 01 = listening
                if len(fields) >= 8 and fields[7] == path and fields[5] == "01":
                    inodes.add(f"socket:[{fields[6]}]")
    except (OSError, StopIteration):
        return []
    return procfd.fd_holders(procfd.all_pids(proc), inodes.__contains__, proc)
