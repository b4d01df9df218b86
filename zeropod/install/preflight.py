"""What a node must have before anything is changed on it; each problem says why and what to do.

- systemd as the init system (the daemon is a unit; sleeping pods' ports are systemd's);
- containerd 1.7 or 2.x (the versions the e2e suite runs; 1.6 is refused: untested here);
- the host's python3 >= 3.11 (the node's venv runs on it);
- a kernel with ``net.ipv4.tcp_migrate_req`` (5.14+: the hand-off of queued connections) and
  pidfd_getfd (5.6+: SO_REUSEPORT on the app's socket);
- zeropod's CRIU build runs and ``criu check`` passes (Debian 12's 3.17 fails on kernels >=
  6.16, 4.1 cannot dump TCP sockets there).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from zeropod.install.host import Host, HostError

SUPPORTED_CONTAINERD = ((1, 7), (2, 0), (2, 1), (2, 2))
MIN_KERNEL = (5, 14)
MIN_PYTHON = (3, 11)
MIN_CRIU = (4, 2)
_VERSION = re.compile(r"(?<![\w.])v?(\d+)\.(\d+)(?:\.(\d+))?")


def version_tuple(text: str) -> tuple[int, int] | None:
    """The first ``major.minor`` in TEXT (``containerd ... v2.1.9`` -> (2, 1))."""
    match = _VERSION.search(text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def check(host: Host, criu: Path) -> list[str]:
    """Every problem found (empty: the node can take zeropod)."""
    problems: list[str] = []
    if not host.exists("/run/systemd/system"):
        problems.append("systemd is not the init system: the daemon and the held ports need it")
    problems += _containerd(host)
    problems += _python(host)
    problems += _kernel()
    problems += _criu(criu)
    return problems


def _containerd(host: Host) -> list[str]:
    try:
        out = host.run(["containerd", "--version"]).stdout
    except HostError as err:
        return [f"containerd: cannot run `containerd --version`: {err}"]
    version = version_tuple(out.split(None, 2)[-1] if out.split() else out)
    if version is None:
        return [f"containerd: cannot read a version from {out.strip()!r}"]
    if version not in SUPPORTED_CONTAINERD:
        allowed = ", ".join(f"{a}.{b}" for a, b in SUPPORTED_CONTAINERD)
        why = " (1.6 is not tested end to end by zeropod)" if version == (1, 6) else ""
        return [f"containerd {version[0]}.{version[1]} is not supported{why}; allowed: {allowed}"]
    return []


def _python(host: Host) -> list[str]:
    try:
        out = host.run(["python3", "-c", "import sys; print(*sys.version_info[:2])"]).stdout
    except HostError as err:
        return [f"python3: the node's interpreter does not run: {err}"]
    version = tuple(int(x) for x in out.split()[:2])
    if version < MIN_PYTHON:
        return [f"python3 {'.'.join(map(str, version))} is too old; zeropod needs >= 3.11"]
    return []


def _kernel() -> list[str]:
    release = os.uname().release
    version = version_tuple(release)
    problems = []
    if version is None or version < MIN_KERNEL:
        problems.append(f"kernel {release}: zeropod needs >= 5.14 (tcp_migrate_req)")
    elif not os.path.exists("/proc/sys/net/ipv4/tcp_migrate_req"):
        problems.append("kernel: no net.ipv4.tcp_migrate_req, queued connections cannot move")
    return problems


def _criu(criu: Path) -> list[str]:
    try:
        out = subprocess.run(
            [str(criu), "--version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError) as err:
        return [f"CRIU: zeropod's build at {criu} does not run: {err}"]
    version = version_tuple(out)
    if version is None or version < MIN_CRIU:
        return [f"CRIU at {criu} is {out.strip()!r}; zeropod needs >= 4.2 on this kernel"]
    proc = subprocess.run([str(criu), "check"], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return [f"CRIU: `criu check` fails on this kernel: {' / '.join(tail)}"]
    return []
