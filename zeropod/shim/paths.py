"""Where an interposer's sockets and state files live, and how a pod's group id is found.

One interposer serves one runc shim, and the runc shim serves every container of a pod
(grouped by the ``io.kubernetes.cri.sandbox-id`` annotation of the bundle's config.json,
else the container id). Names derive from a hash of (containerd address, namespace, group)
so they are stable across ``start`` calls and short enough for ``sun_path`` (108 bytes).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

SANDBOX_ANNOTATION = "io.kubernetes.cri.sandbox-id"
CRIU_DIR = "/opt/zeropod/bin"
"""Where an installed zeropod keeps its CRIU build (zeropod.install): first on the runc
shim's PATH, so that runc (which looks CRIU up on its PATH) uses it for zeropod's pods only,
whatever CRIU the node has; the lazy restore's page server is the same CRIU."""
DEFAULT_DIR = "/run/zeropod/shim"
SUN_PATH_MAX = 107


def run_dir() -> Path:
    return Path(os.environ.get("ZEROPOD_SHIM_DIR", DEFAULT_DIR))


def group_id(bundle: Path, container_id: str) -> str:
    """The sandbox id from the bundle's OCI spec annotations, else ``container_id``."""
    try:
        with open(bundle / "config.json", "rb") as f:
            spec = json.load(f)
    except (OSError, ValueError):
        return container_id
    annotations = spec.get("annotations") or {}
    return str(annotations.get(SANDBOX_ANNOTATION) or container_id)


@dataclass(frozen=True, slots=True)
class GroupPaths:
    socket: Path  # containerd talks to the interposer here
    events: Path  # the runc shim publishes events here
    bootstrap: Path  # what ``start`` printed, for later starts of the same group
    lock: Path  # serialises concurrent starts of one group
    log: Path  # the interposer's stderr when there is no journal
    control: Path  # the interposer's control socket (checkpoint/restore/status)
    upstream: Path  # what the runc shim's ``start`` printed: where to shut it down

    @classmethod
    def for_group(cls, address: str, namespace: str, group: str) -> GroupPaths:
        digest = hashlib.sha256(f"{address}\0{namespace}\0{group}".encode()).hexdigest()[:32]
        base = run_dir()
        paths = cls(
            socket=base / f"{digest}.sock",
            events=base / f"{digest}.ev.sock",
            bootstrap=base / f"{digest}.bootstrap",
            lock=base / f"{digest}.lock",
            log=base / f"{digest}.log",
            control=base / f"{digest}.ctl.sock",
            upstream=upstream_file(base / f"{digest}.bootstrap"),
        )
        if len(str(paths.control)) > SUN_PATH_MAX:
            raise ValueError(f"socket path {paths.control} is longer than {SUN_PATH_MAX} bytes")
        return paths

    def sockets(self) -> tuple[Path, Path]:
        return self.socket, self.events

    def remove(self) -> None:
        """Remove the sockets and state files (not the lock, which other starts may hold)."""
        for path in (self.socket, self.events, self.control, self.bootstrap, self.upstream):
            path.unlink(missing_ok=True)


def upstream_file(bootstrap: str | Path) -> Path:
    """The group's runc shim answer (``GroupPaths.upstream``), next to its bootstrap file:
    the interposer knows only the latter's path."""
    return Path(bootstrap).with_suffix(".runc")


def connectable(path: Path) -> bool:
    """True if something accepts connections on the unix socket ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


def bind_listener(path: Path) -> socket.socket:
    """A listening unix socket at ``path`` (replacing a stale file), mode 0600."""
    path.unlink(missing_ok=True)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.bind(str(path))
        os.chmod(path, 0o600)
        s.listen(128)
    except OSError:
        s.close()
        raise
    return s
