"""What a pod's lifecycle acts through, as small interfaces (the adapters implement them).

The sequences in :mod:`.sleep` and :mod:`.wake` read as DESIGN.md's steps; each step goes
through one of these, so the lifecycle is tested against fakes (``tests/daemon_fakes.py``)
and :mod:`zeropod.daemon.adapters` wires the real ones: the shim's control socket, /proc and
pidfd_getfd, systemd over D-Bus, the image directory, sock_diag in the pod netns.
"""

from __future__ import annotations

import socket
from collections.abc import Collection, Sequence
from typing import Any, Protocol

from zeropod.contract.shimops import Mode, TaskReply, TaskStatus
from zeropod.daemon.model.pod import HeldPort, PodKey
from zeropod.daemon.model.registry import Container, ContainerIdentity
from zeropod.sockets.synlog import Syn


class ShimError(Exception):
    """The shim refused or failed an op (``code`` from :mod:`zeropod.contract.protocol`), or
    could not be reached (``unavailable``)."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


class Shim(Protocol):
    """A container's shim (the interposer's control socket, named by the container)."""

    async def checkpoint(self, container: Container, image_dir: str, mode: Mode) -> TaskReply:
        """Dump (or stop) the task; raises :class:`ShimError` leaving it running."""
        ...

    async def restore(
        self, container: Container, image_dir: str | None, *, lazy: bool = False
    ) -> TaskReply:
        """Re-create the task from ``image_dir`` (None: cold), with lazy pages if ``lazy``.
        Raises :class:`ShimError`; a failed restore (``restore_failed``) leaves the
        container scaled down."""
        ...


class ShimStatus(Protocol):
    """A shim asked what is true of a container's task (after a daemon restart)."""

    async def task_status(self, identity: ContainerIdentity) -> TaskStatus | None:
        """The task as the shim knows it, None when it does not; raises :class:`ShimError`
        when the shim cannot be reached."""
        ...


class Network(Protocol):
    """The pod's network namespace and the app's listening sockets, from the node."""

    async def enable_migrate(self, netns: str) -> None:
        """``net.ipv4.tcp_migrate_req=1`` in the namespace at ``netns``; raises OSError."""
        ...

    async def share_listeners(self, pid: int, ports: Sequence[int]) -> list[HeldPort]:
        """SO_REUSEPORT (and root as owner) on the listeners of ``pid``'s process tree (only
        ``ports`` when given); returns them. Raises OSError."""
        ...

    async def take_copies(self, netns: str, ports: Sequence[HeldPort]) -> HeldCopies:
        """The daemon's own copies of the sockets systemd listens on for ``ports`` in
        ``netns``; raises OSError unless there is one per address."""
        ...


class NetView(Protocol):
    """One long-lived sock_diag view of a pod's netns (:mod:`zeropod.daemon.adapters.podnet`)."""

    async def snapshot(self, ports: Sequence[int]) -> Any:
        """Listeners and connections on ``ports`` now (the idle loop's poll)."""
        ...

    async def connections(self, ports: Sequence[int], states: Collection[Any]) -> list[Any]:
        """The connections on ``ports`` now in ``states`` (TcpState members), accepted or
        still queued; the kernel filters them, so a busy pod's TIME_WAITs cost nothing."""
        ...

    async def wait_listening(self, ports: Sequence[int], count: int, timeout: float) -> int:
        """Wait until each port has ``count`` listeners; returns the polls beyond the first.
        Raises TimeoutError."""
        ...

    def close(self) -> None:
        """Release the view's sockets."""
        ...


class SocketUnits(Protocol):
    """The pod's transient socket unit and its activated service."""

    async def start(self, key: PodKey, ports: Sequence[HeldPort], netns: str) -> None:
        """Start ``zeropod@<instance>.socket`` holding ``ports``; raises on failure."""
        ...

    async def stop(self, key: PodKey) -> None:
        """Stop the pod's socket unit and service (gone already is fine)."""
        ...

    async def listening(self) -> set[str]:
        """The names of zeropod's socket units systemd has loaded and not failed."""
        ...

    async def stop_orphan(self, socket_unit: str) -> None:
        """Stop a socket unit of no known pod, and its service."""
        ...


class Images(Protocol):
    """Where checkpoint images live."""

    def prepare(self, container_id: str) -> str:
        """A fresh, empty image directory for ``container_id``; raises OSError."""
        ...

    def path(self, container_id: str) -> str | None:
        """The image directory of ``container_id`` if it holds an image, else None."""
        ...

    def remove(self, container_id: str) -> None:
        """Delete the image of ``container_id`` (missing is fine)."""
        ...


class SynRecord(Protocol):
    """The SYNs a pod's held sockets received (:class:`zeropod.sockets.synlog.SynLog`)."""

    def syns(self) -> list[Syn]:
        """The last SYN per (source, destination, port); raises OSError if unreadable."""
        ...


class HeldCopies(Protocol):
    """The daemon's copies of the listening sockets systemd holds for a sleeping pod."""

    sockets: list[socket.socket]
    closed: bool
    syn_log: SynRecord | None
    """Who knocked, recorded by the kernel; None where it cannot record (sock_diag then)."""

    def close(self) -> None:
        """Close the daemon's copies (a pending :meth:`readable` returns None)."""
        ...

    def hand_over(self) -> None:
        """Stop the held sockets listening (their queue moves to the app's listener), then
        close the copies."""
        ...

    async def readable(self) -> socket.socket | None:
        """The first socket with a connection queued; None once closed."""
        ...

    def drain(self) -> list[socket.socket]:
        """Accept every connection waiting in the held sockets' queues (never blocks)."""
        ...
