"""Each step of a sleep or a wake (daemon and shim), timed; the timings become journal fields."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

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
