"""The node being installed: its files under a root, and commands run on it.

On the node itself (the Ansible role) the root is ``/``; in the DaemonSet's privileged pod it
is the host's root mounted at ``/host``, and commands run chrooted into it, so ``systemctl``
talks to the host's systemd over its own bus and ``python3`` is the host's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

Runner = Callable[..., subprocess.CompletedProcess[str]]


class HostError(RuntimeError):
    """A command on the host failed; the message has its output."""


class Host:
    """Files and commands of the node whose root is at ``root``."""

    def __init__(self, root: str = "/", runner: Runner = subprocess.run) -> None:
        self.root = Path(root)
        self._runner = runner

    def path(self, path: str) -> Path:
        """The local path of the node's absolute PATH."""
        return self.root / path.lstrip("/")

    def read(self, path: str) -> str | None:
        """The text of the node's file PATH, or None when it does not exist."""
        try:
            return self.path(path).read_text()
        except FileNotFoundError:
            return None

    def exists(self, path: str) -> bool:
        return self.path(path).exists()

    def write(self, path: str, text: str, mode: int = 0o644) -> None:
        """Replace the node's file PATH atomically (parents made as needed)."""
        target = self.path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, target)

    def copy(self, source: Path, path: str, mode: int = 0o644) -> None:
        """Copy the local file SOURCE to the node's PATH (atomically)."""
        target = self.path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.zeropod-tmp")
        shutil.copyfile(source, tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, target)

    def remove(self, path: str) -> bool:
        """Remove the node's file or directory tree PATH; False when it was not there."""
        target = self.path(path)
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
            return True
        try:
            target.unlink()
        except FileNotFoundError:
            return False
        return True

    def run(self, argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ARGV on the node (chrooted when the root is not /); HostError when it fails."""
        full = list(argv) if str(self.root) == "/" else ["chroot", str(self.root), *argv]
        try:
            proc = self._runner(full, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise HostError(f"{' '.join(argv)}: {err}") from err
        if check and proc.returncode != 0:
            output = (proc.stderr or proc.stdout).strip()[-1500:]
            raise HostError(f"{' '.join(argv)} exited {proc.returncode}: {output}")
        return proc

    def systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run(["systemctl", *args], check=check)
