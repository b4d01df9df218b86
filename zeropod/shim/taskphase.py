"""The life of one container as the interposer sees it: a phase enum and its transition table.

containerd only ever sees CREATED, RUNNING and EXITED: the phases in :data:`HIDDEN` (the
process is being dumped, is gone, or is being restored) are reported to containerd as RUNNING
with the last pid. :data:`ENDED` is a task that containerd killed while it was scaled down: it
has no runc task behind it, so the interposer answers for it from its own record.
"""

from __future__ import annotations

import enum


class TaskPhase(enum.Enum):
    CREATED = "created"  # Create returned; Start not yet
    RUNNING = "running"  # a runc task runs the process
    CHECKPOINTING = "checkpointing"  # the runc shim dumps it (or kills it, mode "stop")
    SCALED_DOWN = "scaled_down"  # no process, no runc task; containerd sees RUNNING
    RESTORING = "restoring"  # re-creating the runc task from the image (or cold)
    EXITED = "exited"  # the process really ended; the runc task still exists
    ENDED = "ended"  # killed while scaled down; no runc task, we answer for it
    DELETED = "deleted"  # containerd deleted the task; the record is dropped


HIDDEN = frozenset({TaskPhase.CHECKPOINTING, TaskPhase.SCALED_DOWN, TaskPhase.RESTORING})
"""Phases in which containerd must keep seeing a running task."""

TRANSITIONS: dict[TaskPhase, frozenset[TaskPhase]] = {
    TaskPhase.CREATED: frozenset({TaskPhase.RUNNING, TaskPhase.EXITED, TaskPhase.DELETED}),
    # RESTORING again: a lazy restore's page server failed, the app is killed and cold-started
    TaskPhase.RUNNING: frozenset(
        {TaskPhase.CHECKPOINTING, TaskPhase.EXITED, TaskPhase.DELETED, TaskPhase.RESTORING}
    ),
    # a failed dump leaves the process running
    TaskPhase.CHECKPOINTING: frozenset({TaskPhase.SCALED_DOWN, TaskPhase.RUNNING}),
    TaskPhase.SCALED_DOWN: frozenset({TaskPhase.RESTORING, TaskPhase.ENDED}),
    # neither the restore nor a cold start brought a process back: ENDED; a failed restore
    # without fallback (the daemon starts it cold itself): back to SCALED_DOWN
    TaskPhase.RESTORING: frozenset({TaskPhase.RUNNING, TaskPhase.ENDED, TaskPhase.SCALED_DOWN}),
    TaskPhase.EXITED: frozenset({TaskPhase.DELETED}),
    TaskPhase.ENDED: frozenset({TaskPhase.DELETED}),
    TaskPhase.DELETED: frozenset(),
}


class TaskPhaseError(RuntimeError):
    """A transition the table does not allow (a bug, or a request at the wrong time)."""

    def __init__(self, container_id: str, current: TaskPhase, wanted: TaskPhase) -> None:
        super().__init__(
            f"container {container_id}: cannot go from {current.value} to {wanted.value}"
        )
        self.container_id = container_id
        self.current = current
        self.wanted = wanted


def check(container_id: str, current: TaskPhase, wanted: TaskPhase) -> None:
    """Raise :class:`TaskPhaseError` unless ``current -> wanted`` is in :data:`TRANSITIONS`."""
    if wanted not in TRANSITIONS[current]:
        raise TaskPhaseError(container_id, current, wanted)
