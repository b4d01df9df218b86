"""A pod's states, each implementing only the operations legal in it.

:class:`~zeropod.daemon.lifecycle.podlife.PodLife` holds one of these and delegates every
operation to it; an operation a state does not implement raises :class:`IllegalOperation`
(code ``conflict``), naming the state and the operation. The states at rest (running, asleep,
failed) follow from the containers' phases (:func:`at_rest`); the two in between (going to
sleep, waking) last while a sequence holds the pod's lock.

=============  =========================  ========================
state          sleep                      wake
=============  =========================  ========================
running        the sleep sequence         nothing to do
going_to_sleep (lock held: unreachable)   (lock held: unreachable)
asleep         nothing to do              the wake sequence
waking         (lock held: unreachable)   (lock held: unreachable)
failed         illegal                    the wake sequence
=============  =========================  ========================

A client that comes while the pod goes to sleep or wakes waits in the held socket's queue:
the held-port watch asks for a wake, which runs once the sequence holding the lock ended.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from zeropod.contract.protocol import CONFLICT, ControlError
from zeropod.daemon.model.phase import Phase
from zeropod.steptimer import StepTimer

if TYPE_CHECKING:
    from zeropod.daemon.lifecycle.podlife import PodLife


class IllegalOperation(ControlError):
    """An operation the pod's state does not allow."""

    def __init__(self, label: str, state: str, operation: str) -> None:
        self.state = state
        self.operation = operation
        super().__init__(CONFLICT, f"pod {label} is {state}: {operation} is not legal there")


class PodState:
    """The base: every operation is illegal unless a state implements it."""

    name: ClassVar[str]

    async def sleep(self, life: PodLife, reason: str) -> None:
        raise IllegalOperation(life.key.label, self.name, "sleep")

    async def wake(
        self, life: PodLife, reason: str, client_since: float | None, timer: StepTimer | None
    ) -> None:
        raise IllegalOperation(life.key.label, self.name, "wake")

    def __repr__(self) -> str:
        return self.name


class Running(PodState):
    name = "running"

    async def sleep(self, life: PodLife, reason: str) -> None:
        await life.run_sleep(reason)

    async def wake(
        self, life: PodLife, reason: str, client_since: float | None, timer: StepTimer | None
    ) -> None:
        return  # awake already


class GoingToSleep(PodState):
    name = "going_to_sleep"


class Asleep(PodState):
    name = "asleep"

    async def sleep(self, life: PodLife, reason: str) -> None:
        return  # asleep already

    async def wake(
        self, life: PodLife, reason: str, client_since: float | None, timer: StepTimer | None
    ) -> None:
        await life.run_wake(reason, client_since, timer)


class Waking(PodState):
    name = "waking"


class Failed(PodState):
    """A sleep or wake left some container neither running nor cleanly asleep."""

    name = "failed"

    async def wake(
        self, life: PodLife, reason: str, client_since: float | None, timer: StepTimer | None
    ) -> None:
        await life.run_wake(reason, client_since, timer)


RUNNING, GOING_TO_SLEEP, ASLEEP, WAKING, FAILED = (
    Running(),
    GoingToSleep(),
    Asleep(),
    Waking(),
    Failed(),
)

MOVES: dict[PodState, frozenset[PodState]] = {
    RUNNING: frozenset({GOING_TO_SLEEP}),
    GOING_TO_SLEEP: frozenset({ASLEEP, RUNNING, FAILED}),
    ASLEEP: frozenset({WAKING}),
    WAKING: frozenset({RUNNING, FAILED}),
    FAILED: frozenset({WAKING}),
}
"""The moves a sequence makes; :func:`at_rest` may also settle any state at rest into
another (containers registered or forgotten while no sequence runs)."""


def at_rest(phases: Sequence[Phase]) -> PodState:
    """The pod's state when no sequence runs, from its scaled containers' phases."""
    distinct = set(phases)
    if distinct <= {Phase.RUNNING}:
        return RUNNING
    if distinct == {Phase.SCALED_DOWN}:
        return ASLEEP
    return FAILED
