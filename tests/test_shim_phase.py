"""The shim's per-container phase table, walked edge by edge, and the Tracker that owns it."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from zeropod.shim.taskapi import V3
from zeropod.shim.taskphase import HIDDEN, TRANSITIONS, TaskPhase, TaskPhaseError, check
from zeropod.shim.tasks import TaskRecord, Tracker

P = TaskPhase
# Written out by hand (the shim's view of a runc task and of a checkpoint), not read from the
# table: a wrong edge in TRANSITIONS fails these tests.
ALLOWED = [
    (P.CREATED, P.RUNNING), (P.CREATED, P.EXITED), (P.CREATED, P.DELETED),
    (P.RUNNING, P.CHECKPOINTING), (P.RUNNING, P.EXITED), (P.RUNNING, P.DELETED),
    (P.RUNNING, P.RESTORING),  # a lazy restore's page server failed: killed, started cold
    (P.CHECKPOINTING, P.SCALED_DOWN), (P.CHECKPOINTING, P.RUNNING),  # dumped; dump failed
    (P.SCALED_DOWN, P.RESTORING), (P.SCALED_DOWN, P.ENDED),  # wake; killed while asleep
    (P.RESTORING, P.RUNNING), (P.RESTORING, P.ENDED), (P.RESTORING, P.SCALED_DOWN),
    (P.EXITED, P.DELETED), (P.ENDED, P.DELETED),
]  # fmt: skip
FORBIDDEN = [(a, b) for a, b in itertools.product(TaskPhase, TaskPhase) if (a, b) not in ALLOWED]


def test_the_table_is_exactly_the_expected_edges() -> None:
    assert {(a, b) for a, targets in TRANSITIONS.items() for b in targets} == set(ALLOWED)


def container(cid: str = "c1", phase: TaskPhase = TaskPhase.CREATED) -> TaskRecord:
    req = V3.messages.CreateTaskRequest(id=cid, bundle="/nonexistent")
    return TaskRecord(cid, V3, req, [], phase=phase)


def test_table_covers_every_phase() -> None:
    assert set(TRANSITIONS) == set(TaskPhase)
    assert {TaskPhase.CHECKPOINTING, TaskPhase.SCALED_DOWN, TaskPhase.RESTORING} == HIDDEN
    assert TRANSITIONS[TaskPhase.DELETED] == frozenset()


@pytest.mark.parametrize(("current", "wanted"), ALLOWED, ids=lambda p: p.value)
async def test_allowed_transition(current: TaskPhase, wanted: TaskPhase) -> None:
    tracker = Tracker()
    c = container(phase=current)
    tracker.add(c)
    tracker.move(c, wanted)
    assert c.phase is wanted
    assert (tracker.get("c1") is None) == (wanted is TaskPhase.DELETED)


@pytest.mark.parametrize(("current", "wanted"), FORBIDDEN, ids=lambda p: p.value)
def test_forbidden_transition(current: TaskPhase, wanted: TaskPhase) -> None:
    with pytest.raises(TaskPhaseError, match=f"from {current.value} to {wanted.value}"):
        check("c1", current, wanted)


async def test_tracker_counts_generations_and_attention() -> None:
    tracker = Tracker()
    c = container()
    tracker.add(c)
    tracker.move(c, TaskPhase.RUNNING)
    assert (c.generation, tracker.attention) == (0, 0)
    for _ in range(2):
        tracker.move(c, TaskPhase.CHECKPOINTING)
        assert tracker.attention == 1
        tracker.move(c, TaskPhase.SCALED_DOWN)
        tracker.move(c, TaskPhase.RESTORING)
        tracker.move(c, TaskPhase.RUNNING)
    assert (c.generation, tracker.attention) == (2, 1)  # restored: its events may be ours
    tracker.move(c, TaskPhase.EXITED)
    tracker.move(c, TaskPhase.DELETED)
    assert (tracker.all(), tracker.attention) == ([], 0)


async def test_waiters_see_phase_changes() -> None:
    tracker = Tracker()
    c = container(phase=TaskPhase.RUNNING)
    tracker.add(c)
    tracker.move(c, TaskPhase.CHECKPOINTING)
    visible = asyncio.create_task(tracker.visible(c))
    settled = asyncio.create_task(tracker.settled(c))
    await asyncio.sleep(0)
    tracker.move(c, TaskPhase.SCALED_DOWN)
    assert await asyncio.wait_for(settled, 1) is TaskPhase.SCALED_DOWN
    assert not visible.done()
    tracker.move(c, TaskPhase.RESTORING)
    tracker.move(c, TaskPhase.RUNNING)
    assert await asyncio.wait_for(visible, 1) is TaskPhase.RUNNING


async def test_status_reports_last_pid_while_asleep() -> None:
    c = container(phase=TaskPhase.SCALED_DOWN)
    c.pid = 42
    assert c.status() == {
        "container_id": "c1",
        "phase": "scaled_down",
        "pid": 0,
        "last_pid": 42,
        "generation": 0,
        "image_dir": None,
        "task_api": 3,
    }
