"""What a container costs while it runs, and what its checkpoint image takes on disk.

Read once per sleep, just before the dump: the app's resident memory (RSS) and its
proportional share (PSS, shared pages split between their users), summed over the process
and its descendants (``/proc/<pid>/task/*/children``), is the memory the checkpoint frees.
Blocking /proc and directory reads of a few files; not on the wake path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

MAX_PROCESSES = 4096
"""Stop walking a process tree beyond this many processes (a fork bomb is not our business)."""


@dataclass(frozen=True)
class Memory:
    """Bytes of resident (RSS) and proportional (PSS) memory of a process tree."""

    rss: int
    pss: int


def process_tree(pid: int, proc: str = "/proc") -> list[int]:
    """``pid`` and its live descendants, parents first; empty when ``pid`` is gone."""
    if not os.path.exists(f"{proc}/{pid}"):
        return []
    found, todo = [pid], [pid]
    while todo and len(found) < MAX_PROCESSES:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"{proc}/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"{proc}/{parent}/task/{task}/children") as f:
                    children = [int(c) for c in f.read().split()]
            except (OSError, ValueError):
                continue
            for child in children:
                if child not in found:
                    found.append(child)
                    todo.append(child)
    return found


def memory(pid: int, proc: str = "/proc") -> Memory | None:
    """RSS and PSS of ``pid``'s process tree (``smaps_rollup``); None when unreadable."""
    rss = pss = 0
    read_any = False
    for member in process_tree(pid, proc):
        try:
            with open(f"{proc}/{member}/smaps_rollup") as f:
                text = f.read()
        except OSError:
            continue
        read_any = True
        for line in text.splitlines():
            key, _, rest = line.partition(":")
            if key in ("Rss", "Pss"):
                kib = int(rest.split()[0]) * 1024
                if key == "Rss":
                    rss += kib
                else:
                    pss += kib
    return Memory(rss, pss) if read_any else None


def directory_bytes(path: str) -> int | None:
    """The apparent size of the regular files under ``path``; None when it does not exist."""
    if not os.path.isdir(path):
        return None
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                stat = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            total += stat.st_size
    return total
