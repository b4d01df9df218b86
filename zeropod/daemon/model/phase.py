"""A container's phase, its explicit transition table, and the one object that owns it.

The life of a scaled container (DESIGN.md): RUNNING -> CHECKPOINTING -> SCALED_DOWN ->
RESTORING -> RUNNING, with FAILED when a sleep or wake leaves it in no usable state, and
STOPPED once its task has exited or been deleted (terminal). Every move not in
:data:`TRANSITIONS` raises :class:`IllegalTransition`.

Not thread-safe: the daemon drives phases from its one asyncio event loop.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


class Phase(enum.Enum):
    """Where a container is in its sleep/wake life."""

    RUNNING = "RUNNING"
    """The task runs with its memory; idle tracking is on when the container is managed."""
    CHECKPOINTING = "CHECKPOINTING"
    """Ports are held and CRIU is dumping (or, with checkpointing disabled, the task stops)."""
    SCALED_DOWN = "SCALED_DOWN"
    """Nothing of the app is in memory; systemd holds its ports; containerd sees RUNNING."""
    RESTORING = "RESTORING"
    """A wake is under way: restore from the image, or a cold start."""
    FAILED = "FAILED"
    """A sleep or wake left the task neither running nor restorable; a wake may be retried."""
    STOPPED = "STOPPED"
    """The task exited or was deleted; terminal, the container leaves the registry."""


TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    # Idle: hold the ports and dump. The task may also exit on its own.
    Phase.RUNNING: frozenset({Phase.CHECKPOINTING, Phase.STOPPED}),
    # The dump worked (SCALED_DOWN), failed with the app still alive (back to RUNNING),
    # failed leaving nothing running (FAILED), or the task was killed meanwhile (STOPPED).
    Phase.CHECKPOINTING: frozenset({Phase.SCALED_DOWN, Phase.RUNNING, Phase.FAILED, Phase.STOPPED}),
    # A connection or an exec wakes it; stop/delete while asleep ends it without a restore.
    Phase.SCALED_DOWN: frozenset({Phase.RESTORING, Phase.STOPPED}),
    # Restored or cold-started (RUNNING), neither worked (FAILED), or deleted meanwhile.
    Phase.RESTORING: frozenset({Phase.RUNNING, Phase.FAILED, Phase.STOPPED}),
    # A failed container can be woken again (cold start) or cleaned up.
    Phase.FAILED: frozenset({Phase.RESTORING, Phase.STOPPED}),
    Phase.STOPPED: frozenset(),
}

HISTORY_LENGTH = 16


class IllegalTransition(RuntimeError):
    """A phase change that :data:`TRANSITIONS` does not allow."""

    def __init__(self, current: Phase, target: Phase, reason: str) -> None:
        self.current = current
        self.target = target
        self.reason = reason
        allowed = ", ".join(sorted(p.value for p in TRANSITIONS[current])) or "none (terminal)"
        super().__init__(
            f"illegal phase transition {current.value} -> {target.value} ({reason}); "
            f"allowed from {current.value}: {allowed}"
        )


@dataclass(frozen=True)
class Transition:
    """One recorded phase change; ``at`` is wall-clock seconds since the epoch."""

    previous: Phase
    phase: Phase
    reason: str
    at: float


class PhaseOwner:
    """Owns one container's phase: validates moves, timestamps them, keeps recent history.

    ``observer`` (optional) is called with each :class:`Transition` after it is recorded, and
    ``on_illegal`` with each :class:`IllegalTransition` before it is raised; the daemon uses
    them to log and publish events.
    """

    def __init__(
        self,
        initial: Phase = Phase.RUNNING,
        *,
        reason: str = "registered",
        observer: Callable[[Transition], None] | None = None,
        on_illegal: Callable[[IllegalTransition], None] | None = None,
        clock: Callable[[], float] = time.time,
        history_length: int = HISTORY_LENGTH,
    ) -> None:
        self._clock = clock
        self._observer = observer
        self._on_illegal = on_illegal
        self._phase = initial
        self._since = clock()
        self._history: deque[Transition] = deque(maxlen=history_length)
        self._history.append(Transition(initial, initial, reason, self._since))

    @property
    def phase(self) -> Phase:
        """The current phase."""
        return self._phase

    @property
    def since(self) -> float:
        """Wall-clock time (epoch seconds) the current phase began."""
        return self._since

    @property
    def history(self) -> tuple[Transition, ...]:
        """The most recent transitions, oldest first (the first entry may be the initial one)."""
        return tuple(self._history)

    def can_transition(self, target: Phase) -> bool:
        """True when the table allows moving from the current phase to ``target``."""
        return target in TRANSITIONS[self._phase]

    def transition(self, target: Phase, reason: str) -> Transition:
        """Move to ``target``, or raise :class:`IllegalTransition` leaving the phase unchanged."""
        if not self.can_transition(target):
            error = IllegalTransition(self._phase, target, reason)
            if self._on_illegal is not None:
                self._on_illegal(error)
            raise error
        record = Transition(self._phase, target, reason, self._clock())
        self._phase = target
        self._since = record.at
        self._history.append(record)
        if self._observer is not None:
            self._observer(record)
        return record
