"""What the sleep and wake sequences act on, as small interfaces, and how steps are timed.

:mod:`zeropod.daemon.sleep` and :mod:`zeropod.daemon.wake` read as the contract's steps
(docs/scale-to-zero.md); each step goes through one of these interfaces, so the sequences are
tested against fakes and :mod:`zeropod.daemon.machinery` wires the real ones (the shim's
control socket, /proc and pidfd_getfd, systemd over D-Bus, the image directory).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

from zeropod.daemon.pods import HeldPort, PodKey
from zeropod.daemon.registry import Container

CHECKPOINT_FAILED = "checkpoint_failed"
RESTORE_FAILED = "restore_failed"


class ShimError(Exception):
    """The shim refused or failed an op (``code`` as in the control protocol), or was not
    reachable (``code`` ``unavailable``)."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


@dataclass(frozen=True)
class ShimReply:
    """A shim's answer to checkpoint or restore."""

    pid: int
    duration_ms: float
    cold: bool = False
    error: str | None = None


class Shim(Protocol):
    """The interposer's control socket (one per shim; the container names it)."""

    async def checkpoint(self, container: Container, image_dir: str, mode: str) -> ShimReply:
        """Dump (``mode`` "checkpoint") or kill (``"stop"``) the container's task.

        Raises :class:`ShimError`; on failure the task is still running.
        """
        ...

    async def restore(
        self, container: Container, image_dir: str | None, *, fallback: bool = True
    ) -> ShimReply:
        """Re-create the task from ``image_dir``, or cold when ``None`` or the restore fails.

        Raises :class:`ShimError` when neither worked; with ``fallback=False`` a failed
        restore is not followed by a cold start (code :data:`RESTORE_FAILED`, still asleep).
        """
        ...


class Network(Protocol):
    """The pod's network namespace and the app's listening sockets."""

    async def enable_migrate(self, netns: str) -> None:
        """``net.ipv4.tcp_migrate_req=1`` in the namespace at ``netns``; raises OSError."""
        ...

    async def share_listeners(self, pid: int, ports: Sequence[int]) -> list[HeldPort]:
        """Set SO_REUSEPORT on the listeners of ``pid`` (only ``ports`` when given) and
        return them; raises OSError."""
        ...

    async def wait_listening(
        self, netns: str, ports: Sequence[int], count: int, timeout: float
    ) -> int:
        """Wait until each of ``ports`` has ``count`` listeners (2: the holder and the
        restored app; 1: a cold-started app alone); return how many polls that took beyond
        the first. Raises TimeoutError."""
        ...


class SocketUnits(Protocol):
    """The pod's transient socket unit and its activated service."""

    async def start(self, key: PodKey, ports: Sequence[HeldPort], netns: str) -> None:
        """Start ``zeropod@<instance>.socket`` holding ``ports``; raises on failure."""
        ...

    async def stop(self, key: PodKey) -> None:
        """Stop the pod's socket unit and service (gone already is fine)."""
        ...


class Images(Protocol):
    """Where checkpoint images live."""

    def prepare(self, container_id: str) -> str:
        """A fresh, empty image directory for ``container_id``."""
        ...

    def path(self, container_id: str) -> str | None:
        """The image directory of ``container_id`` if it holds an image, else None."""
        ...

    def remove(self, container_id: str) -> None:
        """Delete the image of ``container_id`` (missing is fine)."""
        ...


@dataclass(frozen=True)
class Machinery:
    """Everything the sequences act on."""

    shim: Shim
    network: Network
    units: SocketUnits
    images: Images


@dataclass
class StepTimer:
    """Milliseconds per named step, in order; ``fields()`` gives them as journal fields."""

    clock: Callable[[], float] = time.monotonic
    steps: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._start = self._now()

    def _now(self) -> float:
        return self.clock()

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Time the body as step ``name`` (recorded even when it raises)."""
        started = self._now()
        try:
            yield
        finally:
            self.steps[name] = round((self._now() - started) * 1000, 1)

    def total_ms(self) -> float:
        """Milliseconds since the timer was made."""
        return round((self._now() - self._start) * 1000, 1)

    def fields(self) -> dict[str, float]:
        """``{"STEP_<NAME>_MS": ms, ...}`` for the journal."""
        return {f"step_{name}_ms": ms for name, ms in self.steps.items()}
