"""When a process started, as wall-clock time: the start of a client's wait on a sleeping pod.

systemd starts a sleeping pod's activated service when the first connection reaches its
socket unit, so the service's start time (the peer of the hand-off connection, SO_PEERCRED)
is when that client began to wait, some tens of ms before the daemon gets the sockets.
``/proc/<pid>/stat`` gives the start in clock ticks since boot (CLOCK_BOOTTIME), 10 ms
resolution.
"""

from __future__ import annotations

import os
import socket
import time

from zeropod.sockets.peercred import peer_pid


def started_at(pid: int, proc: str = "/proc") -> float | None:
    """Wall-clock time (epoch seconds) ``pid`` started; None when it is gone."""
    try:
        with open(f"{proc}/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22, counted after "pid (comm)"
    except (OSError, IndexError, ValueError):
        return None
    since_boot = ticks / os.sysconf("SC_CLK_TCK")
    age = time.clock_gettime(time.CLOCK_BOOTTIME) - since_boot
    return time.time() - max(0.0, age)


def connection_peer_started(connection: socket.socket) -> float | None:
    """When the process at the other end of ``connection`` started (see :func:`started_at`)."""
    pid = peer_pid(connection)
    return None if pid is None else started_at(pid)
