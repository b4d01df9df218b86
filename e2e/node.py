"""A small API over the test node for end-to-end tests (stdlib only).

The node is a Debian 12 rootfs booted with systemd-nspawn by ``node/start``; commands run inside
it through ``node/run`` (a transient systemd service over the node's D-Bus). The host reaches
the node's files and unix sockets through ``/proc/<leader>/root``.

    node = Node.ensure_started(containerd="2.1")
    node.run(["ctr", "version"]).stdout
    node.host_path("/run/containerd/containerd.sock")
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NODE_SCRIPTS = REPO / "node"
CACHE = Path(os.environ.get("ZEROPOD_CACHE", "/var/cache/zeropod"))
RUN_DIR = Path(os.environ.get("ZEROPOD_NODE_RUN", "/run/zeropod-node"))
CONTAINERD_VERSIONS = ("2.1", "1.7")


def _same_dir(a: Path, b: Path) -> bool:
    """True if a and b are the same directory (readlink of /proc/PID/root says "/" after
    nspawn's pivot_root, so compare device and inode)."""
    try:
        sa, sb = a.stat(), b.stat()
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


class NodeError(RuntimeError):
    """The node could not be started or reached."""


@dataclass(frozen=True)
class Node:
    """A running test node: its rootfs, its PID 1 as seen from the host, its containerd."""

    root: Path
    leader_pid: int
    containerd: str
    env: tuple[tuple[str, str], ...] = ()
    """What points the node/ scripts at this node when it is not the test node (node/bare)."""

    @classmethod
    def ensure_started(cls, containerd: str = "2.1", timeout: float = 180) -> Node:
        """Start the node with the given containerd version unless it already runs it.

        Blocks until the node's systemd and containerd answer and the test images are
        imported: about a second when booting, near nothing when already running.
        """
        if containerd not in CONTAINERD_VERSIONS:
            raise ValueError(f"containerd={containerd!r}: expected one of {CONTAINERD_VERSIONS}")
        try:
            subprocess.run(
                [str(NODE_SCRIPTS / "start"), "--containerd", containerd],
                check=True,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.CalledProcessError as err:
            raise NodeError(f"node/start failed ({err.returncode}): {err.stderr.strip()}") from err
        except subprocess.TimeoutExpired as err:
            raise NodeError(f"node/start did not finish in {timeout} s") from err
        return cls.current(containerd)

    @classmethod
    def current(cls, containerd: str | None = None) -> Node:
        """The node as it runs now; raises NodeError when it is not running."""
        root = CACHE / "node" / "rootfs"
        try:
            pid = int((RUN_DIR / "leader.pid").read_text())
        except (OSError, ValueError) as err:
            raise NodeError("the node is not running (node/start)") from err
        if not _same_dir(Path(f"/proc/{pid}/root"), root):
            raise NodeError(f"pid {pid} is not the node's init (stale {RUN_DIR}/leader.pid)")
        if containerd is None:
            env = (root / "etc/containerd/active.env").read_text()
            containerd = next(
                line.split("=", 1)[1]
                for line in env.splitlines()
                if line.startswith("ZEROPOD_CONTAINERD=")
            )
        return cls(root=root, leader_pid=pid, containerd=containerd)

    def run(
        self,
        args: list[str],
        input: str | bytes | None = None,
        timeout: float = 60,
        check: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``args`` inside the node (node/run) and return its outcome with text output.

        Blocks until the command exits or ``timeout`` seconds pass (then TimeoutExpired).
        """
        if isinstance(input, bytes):
            input = input.decode()
        return subprocess.run(
            [str(NODE_SCRIPTS / "run"), *args],
            env={**os.environ, **dict(self.env)} if self.env else None,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
            stdin=None if input is not None else subprocess.DEVNULL,
        )

    def host_path(self, path_in_node: str | Path) -> Path:
        """The host's path to a file or unix socket of the node."""
        path = Path(path_in_node)
        if not path.is_absolute():
            raise ValueError(f"{path_in_node!r}: expected an absolute path inside the node")
        return Path(f"/proc/{self.leader_pid}/root") / path.relative_to("/")

    @property
    def containerd_socket(self) -> Path:
        """containerd's gRPC socket, reachable from the host."""
        return self.host_path("/run/containerd/containerd.sock")


def runc_shim_pid(node: Node, pod_id: str) -> int:
    """The pid of the runc shim serving pod POD_ID (not the ``unshare`` that started it)."""
    lines = node.run(["ps", "-eo", "pid,args", "--no-headers"], check=True).stdout.splitlines()
    found = [
        int(line.split()[0])
        for line in lines
        if "containerd-shim-runc-v2" in line and pod_id in line and "unshare" not in line
    ]
    assert len(found) == 1, lines
    return found[0]
