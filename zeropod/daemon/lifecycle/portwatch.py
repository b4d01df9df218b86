"""Which ports a running pod's idle loop watches, and when to look for them again.

Each scaled container's ports come from its ``ports-map`` entry, else from detection: the
listening sockets held by the container's processes (``zeropod.sockets.listeners``). Detection
reads the netns's whole TCP table from /proc (``/proc/PID/net/tcp`` walks every bucket of the
kernel's connection hash) and every fd of the container's processes: ~3 ms of CPU, which
every running pod paid every second. Its answer can only change when the netns's listening
sockets or the containers' processes change, so :class:`PortWatch` detects again only then,
and tells by a LISTEN-only sock_diag dump, which walks the listening hash alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from zeropod.daemon.model.registry import Container

Detected = tuple[list[int], dict[str, tuple[int, ...]]]


def mapped_ports(container: Container) -> tuple[int, ...]:
    """The container's ``ports-map`` entry (empty: its ports are detected)."""
    if container.config is None:
        return ()
    return tuple(container.config.ports_for(container.identity.container))


def watched_ports(
    containers: Iterable[Container], detect: Callable[[int], Sequence[int]]
) -> Detected:
    """The ports to watch: each container's ports-map entry, else ``detect(pid)``; and, by
    container id, the ports found by detection (the caller records them on the loop)."""
    ports: set[int] = set()
    detected: dict[str, tuple[int, ...]] = {}
    for container in containers:
        mapped = mapped_ports(container)
        found = mapped or tuple(detect(container.pid))
        if not mapped:
            detected[container.identity.container_id] = tuple(sorted(found))
        ports.update(found)
    return sorted(ports), detected


def detect_ports(pid: int) -> list[int]:
    """The ports ``pid`` listens on (empty when it is gone or cannot be read)."""
    from zeropod.sockets.listeners import tree_entries

    try:
        return sorted({entry.port for entry, _, _ in tree_entries(pid)})
    except (OSError, ValueError):
        return []


class ListeningView(Protocol):
    async def listening(self) -> frozenset[int]: ...


class PortWatch:
    """One idle loop's watched ports, detected again only when they may have changed: when
    the netns's set of listening sockets (their inodes) or the containers (ids and pids)
    differ from the last detection's. The set is read before detecting, so a listener that
    appears during a detection is seen as a change at the next poll, never missed."""

    def __init__(self, detect: Callable[[int], Sequence[int]] = detect_ports) -> None:
        self._detect = detect
        self._seen: Any = None
        """What the last detection was made for (None: none yet)."""
        self._found: Detected = ([], {})
        self.detections = 0

    async def ports(self, net: ListeningView, containers: Sequence[Container]) -> Detected:
        if all(mapped_ports(c) for c in containers):
            return watched_ports(containers, self._detect)  # nothing to detect
        seen = (
            await net.listening(),
            tuple((c.identity.container_id, c.pid) for c in containers),
        )
        if seen != self._seen:
            self._found = await asyncio.to_thread(watched_ports, containers, self._detect)
            self._seen = seen
            self.detections += 1
        return self._found
