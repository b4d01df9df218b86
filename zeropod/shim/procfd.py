"""Finding processes by what they hold open, and killing them: the shim's one /proc fd walk.

Used to end a dump's CRIU (found by the image files it has open, :mod:`.restorebound`), an
orphaned runc shim (found by its listening socket, :mod:`.runcshim`) and what a failed restore
left in a container's cgroup (:mod:`.leftovers`).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterable
from pathlib import Path


def all_pids(proc: Path = Path("/proc")) -> list[int]:
    """Every pid /proc lists now."""
    return [int(entry.name) for entry in proc.iterdir() if entry.name.isdigit()]


def fd_holders(
    pids: Iterable[int], wanted: Callable[[str], bool], proc: Path = Path("/proc")
) -> list[int]:
    """Of PIDS, those with an open fd whose link target (a path, ``socket:[inode]``...)
    WANTED accepts; processes gone meanwhile are skipped."""
    found = []
    for pid in pids:
        try:
            fds = list((proc / str(pid) / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if wanted(os.readlink(fd)):
                    found.append(pid)
                    break
            except OSError:
                continue
    return sorted(found)


def kill(pids: Iterable[int]) -> list[int]:
    """SIGKILL each of PIDS; the ones still there to signal."""
    killed = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        killed.append(pid)
    return killed
