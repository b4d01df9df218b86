"""Walk the whole phase transition table: every allowed and every illegal pair."""

import itertools

import pytest

from zeropod.daemon.model.phase import (
    TRANSITIONS,
    IllegalTransition,
    Phase,
    PhaseOwner,
    Transition,
)

R, C, S, X, F, T = (
    Phase.RUNNING,
    Phase.CHECKPOINTING,
    Phase.SCALED_DOWN,
    Phase.RESTORING,
    Phase.FAILED,
    Phase.STOPPED,
)
# Written out by hand from DESIGN.md's life of a container, not read from the table: a wrong
# edge in TRANSITIONS (added or missing) fails these tests.
ALLOWED = [
    (R, C), (R, T),  # idle: hold the ports and dump; or the task exits
    (C, S), (C, R), (C, F), (C, T),  # dumped; dump failed (app alive); nothing left; killed
    (S, X), (S, T),  # a connection or exec wakes it; stop/delete while asleep
    (X, R), (X, F), (X, T),  # restored or cold; neither; deleted meanwhile
    (F, X), (F, T),  # a failed container is woken again, or cleaned up
]  # fmt: skip
ILLEGAL = [(a, b) for a, b in itertools.product(Phase, Phase) if (a, b) not in ALLOWED]


def test_the_table_is_exactly_the_expected_edges() -> None:
    assert {(a, b) for a, targets in TRANSITIONS.items() for b in targets} == set(ALLOWED)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_table_covers_every_phase() -> None:
    assert set(TRANSITIONS) == set(Phase)
    assert len(ALLOWED) + len(ILLEGAL) == len(Phase) ** 2


def test_expected_shape_of_the_table() -> None:
    cycle = [Phase.RUNNING, Phase.CHECKPOINTING, Phase.SCALED_DOWN, Phase.RESTORING]
    for current, target in itertools.pairwise([*cycle, Phase.RUNNING]):
        assert target in TRANSITIONS[current]
    assert TRANSITIONS[Phase.STOPPED] == frozenset()
    assert all(Phase.STOPPED in TRANSITIONS[p] for p in Phase if p is not Phase.STOPPED)
    assert all(p not in TRANSITIONS[p] for p in Phase)


@pytest.mark.parametrize(("current", "target"), ALLOWED, ids=lambda p: p.value)
def test_allowed_transition(current: Phase, target: Phase) -> None:
    clock = FakeClock()
    seen: list[Transition] = []
    owner = PhaseOwner(current, clock=clock, observer=seen.append)
    clock.now = 1005.0
    record = owner.transition(target, "test")
    assert record == Transition(current, target, "test", 1005.0)
    assert owner.phase is target
    assert owner.since == 1005.0
    assert owner.history[-1] == record
    assert seen == [record]


@pytest.mark.parametrize(("current", "target"), ILLEGAL, ids=lambda p: p.value)
def test_illegal_transition(current: Phase, target: Phase) -> None:
    clock = FakeClock()
    seen: list[Transition] = []
    illegal: list[IllegalTransition] = []
    owner = PhaseOwner(current, clock=clock, observer=seen.append, on_illegal=illegal.append)
    clock.now = 1005.0
    assert not owner.can_transition(target)
    with pytest.raises(IllegalTransition) as info:
        owner.transition(target, "why not")
    assert info.value.current is current
    assert info.value.target is target
    assert f"{current.value} -> {target.value}" in str(info.value)
    assert "why not" in str(info.value)
    assert illegal == [info.value]
    assert owner.phase is current
    assert owner.since == 1000.0
    assert len(owner.history) == 1
    assert seen == []


def test_history_is_bounded_and_ordered() -> None:
    owner = PhaseOwner(history_length=4)
    cycle = [Phase.CHECKPOINTING, Phase.SCALED_DOWN, Phase.RESTORING, Phase.RUNNING]
    for i in range(3):
        for phase in cycle:
            owner.transition(phase, f"cycle {i}")
    history = owner.history
    assert len(history) == 4
    assert [t.phase for t in history] == cycle
    assert all(t.reason == "cycle 2" for t in history)


def test_initial_entry() -> None:
    owner = PhaseOwner(clock=FakeClock(), reason="shim registered")
    assert owner.phase is Phase.RUNNING
    assert owner.history == (Transition(Phase.RUNNING, Phase.RUNNING, "shim registered", 1000.0),)
