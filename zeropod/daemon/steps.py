"""What the sleep and wake sequences act on, as small interfaces, and how steps are timed.

:mod:`zeropod.daemon.sleep` and :mod:`zeropod.daemon.wake` read as the contract's steps
(docs/scale-to-zero.md); each step goes through one of these interfaces, so the sequences are
tested against fakes and :mod:`zeropod.daemon.machinery` wires the real ones (the shim's
control socket, /proc and pidfd_getfd, systemd over D-Bus, the image directory).
"""

from __future__ import annotations

import re
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


STEP_NAME = re.compile(r"[a-z][a-z0-9_]*")
"""Step names are fixed identifiers from the code, never from a pod's or container's name:
they become journal field names (``STEP_<NAME>_MS``), which journald restricts."""


@dataclass
class StepTimer:
    """Milliseconds per named step, in order; ``fields()`` gives them as journal fields.

    Steps of the pod as a whole (``migrate``, ``release``) and steps of one container
    (``checkpoint``, ``restore``) are kept apart: a container's step is recorded under its
    container name, so that each container's journal entry carries its own
    ``STEP_RESTORE_MS`` and the container itself goes in ``CONTAINER=``.
    """

    clock: Callable[[], float] = time.monotonic
    steps: dict[str, float] = field(default_factory=dict)
    """Pod-wide steps: name -> ms."""
    container_steps: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per container name: step name -> ms."""

    def __post_init__(self) -> None:
        self._start = self._now()

    def _now(self) -> float:
        return self.clock()

    @contextmanager
    def step(self, name: str, container: str | None = None) -> Iterator[None]:
        """Time the body as step ``name`` (recorded even when it raises), of ``container``
        when given, else of the pod. ``name`` must be a fixed identifier (:data:`STEP_NAME`)."""
        if not STEP_NAME.fullmatch(name):
            raise ValueError(f"step name {name!r} is not an identifier")
        started = self._now()
        try:
            yield
        finally:
            ms = round((self._now() - started) * 1000, 1)
            if container is None:
                self.steps[name] = ms
            else:
                self.container_steps.setdefault(container, {})[name] = ms

    def total_ms(self) -> float:
        """Milliseconds since the timer was made."""
        return round((self._now() - self._start) * 1000, 1)

    def fields(self, container: str | None = None) -> dict[str, float]:
        """``{"step_<name>_ms": ms, ...}`` for the journal: the pod-wide steps, plus the
        steps of ``container`` when given."""
        steps = {**self.steps, **self.container_steps.get(container or "", {})}
        return {f"step_{name}_ms": ms for name, ms in steps.items()}
