"""What the benchmark reads from the node: raw CRIU runs, process memory, versions, the machine.

The raw baseline runs bench/rawcr.py inside the node, in a systemd scope of its own so the
containers it starts outlive the transient service `node/run` uses (that service's end would
kill them). Process memory is read from the node's /proc through the host (Node.host_path).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from e2e.cri import wait_for
from e2e.node import Node

RAWCR = "/opt/zeropod/src/bench/rawcr.py"
ZEROPOD_IMAGES = "/var/lib/zeropod/images"
# How each zeropod process of a pod shows in its command line.
SHIM_KINDS = {"interposer": "zeropod.shim", "runc shim": "containerd-shim-runc-v2"}


def rawcr(node: Node, *args: str, timeout: float = 300) -> dict[str, Any]:
    """Run rawcr.py ARGS in the node (in a scope of its own); its JSON answer."""
    argv = ["systemd-run", "--scope", "--quiet", "--collect", "python3", RAWCR, *args]
    proc = node.run(argv, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"rawcr {' '.join(args)}: exit {proc.returncode}: {proc.stderr[-800:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def criu_stats(node: Node, container_id: str) -> dict[str, Any]:
    """CRIU's stats files in zeropod's image directory of CONTAINER_ID (while it sleeps)."""
    return rawcr(node, "stats", f"{ZEROPOD_IMAGES}/{container_id}")


def processes(node: Node) -> list[tuple[int, str]]:
    """(pid, command line) of every process in the node, as the node numbers them."""
    out = []
    proc_dir = node.host_path("/proc")
    for entry in os.listdir(proc_dir):
        if not entry.isdigit():
            continue
        try:
            cmdline = (proc_dir / entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue  # gone meanwhile
        out.append((int(entry), cmdline.decode(errors="replace").strip()))
    return out


def pss_mb(node: Node, pid: int) -> float:
    """Proportional set size of node process PID in MB (0 when it is gone)."""
    try:
        text = node.host_path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0.0
    kib = next(int(line.split()[1]) for line in text.splitlines() if line.startswith("Pss:"))
    return kib / 1024


def cpu_seconds(node: Node, pid: int) -> float:
    """CPU time of node process PID so far, all its threads, in seconds (ns precision, from
    /proc/PID/task/*/schedstat: utime and stime count 10 ms ticks)."""
    total = 0
    for task in node.host_path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # a thread gone meanwhile
    return total / 1e9


def zeropod_pss(node: Node, pod_id: str) -> dict[str, float]:
    """PSS in MB of each zeropod process serving POD_ID: its interposer and runc shim."""
    found: dict[str, float] = {}
    for pid, args in processes(node):
        for kind, marker in SHIM_KINDS.items():
            if marker in args and pod_id in args:
                found[kind] = found.get(kind, 0.0) + pss_mb(node, pid)
    return found


def quiet_disk(node: Node, container_id: str) -> None:
    """Before a measured checkpoint: the container's last image is deleted (the daemon does
    it after a wake) and the deletion is on disk (``sync``). On this machine's ext4, mounted
    with ``discard``, freeing a 500 MB image discards its blocks at the next journal commit,
    and a dump writing meanwhile stalled behind it (memwrite 650 against 150 ms). The raw
    baseline syncs after deleting its own image too (bench/rawcr.py); a node's pods do not
    sleep milliseconds after a wake."""
    image = node.host_path(f"{ZEROPOD_IMAGES}/{container_id}")
    with contextlib.suppress(TimeoutError):  # kept after a failed restore: the sync still helps
        wait_for(lambda: not image.exists(), 10, interval=0.02, what=f"{image} deleted")
    node.run(["sync"], timeout=120)


def daemon_pid(node: Node) -> int:
    """The pid of the node's one zeropod daemon; RuntimeError when there is not exactly one."""
    pids = [pid for pid, args in processes(node) if "zeropod.daemon" in args]
    if len(pids) != 1:
        raise RuntimeError(f"expected one zeropod daemon, found {pids}")
    return pids[0]


def daemon_pss(node: Node) -> float:
    """The node's zeropod daemon (shared by all pods), in MB."""
    return sum(pss_mb(node, pid) for pid, args in processes(node) if "zeropod.daemon" in args)


def template_pss(node: Node) -> float:
    """The node's interposer template (shared by all pods, zeropod.shim.template), in MB."""
    marker = "zeropod.shim.template import"
    return sum(pss_mb(node, pid) for pid, args in processes(node) if marker in args)


def _version(node: Node, argv: list[str]) -> str:
    proc = node.run(argv)
    return proc.stdout.strip().splitlines()[0] if proc.returncode == 0 and proc.stdout else "?"


def machine(node: Node, date: str, quick: bool) -> dict[str, Any]:
    """The machine and the versions under test."""
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    kernel = platform.release()
    nproc = os.cpu_count()
    return {
        "date": date,
        "mode": "quick" if quick else "full",
        "description": f"{cpu}, {nproc} cores, {mem_kib / 2**20:.0f} GiB, kernel {kernel}, "
        "systemd-nspawn node (Debian 12)",
        "versions": {
            "containerd": _version(node, ["containerd", "--version"]).split(" ")[-1],
            "runc": _version(node, ["runc", "--version"]).split(" ")[-1],
            "criu": _version(node, ["criu", "--version"]).split(" ")[-1],
            "python": _version(node, ["python3", "--version"]).split(" ")[-1],
        },
        "git": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),
    }


def journal_cursor(node: Node) -> str:
    """The node journal's current cursor (entries after it are the ones to come)."""
    out = node.run(["journalctl", "-n", "0", "--show-cursor", "--no-pager"], check=True).stdout
    return out.strip().rpartition("-- cursor: ")[2]


def journal_after(node: Node, cursor: str) -> list[dict[str, Any]]:
    """Node journal entries written after CURSOR, as JSON objects."""
    out = node.run(
        ["journalctl", "--no-pager", "-o", "json", f"--after-cursor={cursor}"], check=True
    ).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]
