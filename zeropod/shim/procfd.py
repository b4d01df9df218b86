"""Finding processes by what they hold open, and killing them: the shim's one /proc fd walk.

Used to end a dump's CRIU (found by the image files it has open, :mod:`.restorebound`), an
orphaned runc shim (found by its listening socket, :mod:`.runcshim`), what a failed restore
left in a container's cgroup (:mod:`.leftovers`), and to see what a lazy restore's page
server has open (:mod:`.lazypages`).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path


def all_pids(proc: Path = Path("/proc")) -> list[int]:
    """Every pid /proc lists now."""
    return [int(entry.name) for entry in proc.iterdir() if entry.name.isdigit()]


def iter_fds(pid: int, proc: Path = Path("/proc")) -> Iterator[tuple[int, str]]:
    """(fd, link target: a path, ``socket:[inode]``, ``anon_inode:[...]``) of each fd PID
    has open; fds closed meanwhile are left out, none once PID is gone."""
    try:
        entries = list((proc / str(pid) / "fd").iterdir())
    except OSError:
        return
    for entry in entries:
        try:
            yield int(entry.name), os.readlink(entry)
        except (OSError, ValueError):
            continue


def open_fds(pid: int, proc: Path = Path("/proc")) -> dict[int, str]:
    """fd -> link target of every fd PID has open ({} once it is gone)."""
    return dict(iter_fds(pid, proc))


def fd_holders(
    pids: Iterable[int], wanted: Callable[[str], bool], proc: Path = Path("/proc")
) -> list[int]:
    """Of PIDS, those with an open fd whose link target WANTED accepts (a process's fds are
    read only up to the first such); processes gone meanwhile are skipped."""
    return sorted(pid for pid in pids if any(wanted(t) for _, t in iter_fds(pid, proc)))


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
