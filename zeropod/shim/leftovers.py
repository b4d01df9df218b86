"""Ending what a failed restore left running in the container's cgroup.

A restore's CRIU that dies after it has built the process tree (killed at its bound, or by
anyone, at ``pre-resume`` say) does not take that tree with it: measured with CRIU 4.2.1 and
runc, CRIU SIGKILLed at ``pre-resume`` left the restored app running, reparented to the runc
shim, while runc's restore failed. A cold start then ran beside it, and the leftover's exit
reached containerd as the container's. Before anything else runs in the container's place,
every process in the container's cgroup is killed and gone.

A process is the container's when a line of its ``/proc/PID/cgroup`` names the container id
(runc's cgroup is ``.../cri-containerd-<id>.scope`` with the systemd driver, ``.../<id>``
with cgroupfs; one line on cgroup v2, one per hierarchy on v1).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from zeropod.shim import procfd

log = logging.getLogger(__name__)

GONE_TIMEOUT = 5.0


def container_pids(container_id: str, proc: Path = Path("/proc")) -> list[int]:
    """Processes whose cgroup path names CONTAINER_ID."""
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            lines = (entry / "cgroup").read_text().splitlines()
            if (entry / "stat").read_text().rpartition(")")[2].split()[0] == "Z":
                continue  # dead, waiting for its parent to reap it
        except (OSError, IndexError):
            continue  # gone meanwhile
        for line in lines:
            path = line.split(":", 2)[-1]
            leaf = path.rstrip("/").rsplit("/", 1)[-1]
            if leaf == container_id or leaf.endswith(f"-{container_id}.scope"):
                found.append(int(entry.name))
                break
    return sorted(found)


def kill_container_processes(
    container_id: str, timeout: float = GONE_TIMEOUT, proc: Path = Path("/proc")
) -> list[int]:
    """SIGKILL every process of the container and wait (up to TIMEOUT) until none is left;
    the pids signalled."""
    killed: list[int] = []
    deadline = time.monotonic() + timeout
    while pids := container_pids(container_id, proc):
        killed += [pid for pid in procfd.kill(pids) if pid not in killed]
        if time.monotonic() > deadline:
            log.warning("container %s: processes %s outlived SIGKILL", container_id, pids)
            break
        time.sleep(0.02)
    if killed:
        log.warning("container %s: killed what a failed restore left: %s", container_id, killed)
    return killed
