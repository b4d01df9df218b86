"""How long a dump and a restore may take: one policy, scaled by size, for daemon and shim.

The shim bounds its own calls to the runc shim by these numbers; the daemon waits for the
shim's answer :data:`MARGIN` longer (the shim's steps after the bound: ending a stuck CRIU,
deleting the half-made task), so the two sides never disagree about how an op ended (a dump
declared failed by the daemon while the shim completes it, an image deleted under a live
restore). Standard library only: both sides import it.

- A dump: :data:`BASE` plus :data:`PER_100MB` for every 100 MB resident in the container's
  process tree, at most :data:`MAX` (CRIU writes well over 100 MB/s here; the base covers
  its freeze and runc's own work).
- A restore attempt: the same for the image's ``pages-*.img``; a failed attempt from an
  intact image is tried once more (:data:`RESTORE_ATTEMPTS`), each killed at its bound and
  given :data:`AFTER_KILL` to fail (:func:`restore`).
- A cold start: a Create and a Start of the runc shim, :data:`CALL` each.
"""

from __future__ import annotations

import os
from pathlib import Path

BASE = 10.0
PER_100MB = 1.0
MAX = 100.0
CALL = 30.0
"""One ordinary call to the runc shim (Create, Delete, Kill, Wait)."""
AFTER_KILL = 15.0
"""How long a restore's Start may take to fail after its CRIU was killed at the bound."""
RESTORE_ATTEMPTS = 2
MARGIN = 45.0
"""What the daemon waits beyond the shim's bound for the shim's answer: one more call to the
runc shim (deleting the dumped task) and what ending a stuck CRIU takes."""


def scaled(size_bytes: int) -> float:
    """Seconds for a dump or restore of SIZE_BYTES of memory."""
    return min(BASE + PER_100MB * max(size_bytes, 0) / 100e6, MAX)


def restore(size_bytes: int) -> float:
    """Seconds the shim's restore op may take from an image of SIZE_BYTES, every attempt."""
    return RESTORE_ATTEMPTS * (scaled(size_bytes) + AFTER_KILL)


def cold_start() -> float:
    """Seconds a cold start (Create and Start) may take."""
    return 2 * CALL


def daemon_wait(bound: float) -> float:
    """How long the daemon waits for the shim's answer to an op bounded by BOUND."""
    return bound + MARGIN


def wake_wait(image_bytes: int) -> float:
    """How long a shim waits for the daemon to wake a pod whose image holds IMAGE_BYTES: the
    daemon's own wait for the restore, and the cold start it may fall back to."""
    return daemon_wait(restore(image_bytes)) + cold_start()


def pages_bytes(image_dir: str) -> int:
    """The total size of an image's ``pages-*.img`` files (0 if none can be read)."""
    total = 0
    try:
        for path in Path(image_dir).glob("pages-*.img"):
            try:
                total += path.stat().st_size
            except OSError:
                continue
    except OSError:
        return 0
    return total


def resident_bytes(pid: int) -> int:
    """Resident memory of PID and its descendants (/proc statm; 0 for what is gone)."""
    from zeropod.sockets.listeners import ProcessGoneError, process_tree

    page = os.sysconf("SC_PAGE_SIZE")
    try:
        tree = process_tree(pid)
    except ProcessGoneError:
        return 0
    total = 0
    for member in tree:
        try:
            with open(f"/proc/{member}/statm") as f:
                total += int(f.read().split()[1]) * page
        except (OSError, ValueError, IndexError):
            continue  # exited meanwhile
    return total
