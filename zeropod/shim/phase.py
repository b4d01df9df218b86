"""The life of one container as the interposer sees it: a phase enum and its transition table.

containerd only ever sees CREATED, RUNNING and EXITED: the phases in :data:`HIDDEN` (the
process is being dumped, is gone, or is being restored) are reported to containerd as RUNNING
with the last pid. :data:`ENDED` is a task that containerd killed while it was scaled down: it
has no runc task behind it, so the interposer answers for it from its own record.
"""

from __future__ import annotations

import enum


class Phase(enum.Enum):
    CREATED = "created"  # Create returned; Start not yet
    RUNNING = "running"  # a runc task runs the process
    CHECKPOINTING = "checkpointing"  # the runc shim dumps it (or kills it, mode "stop")
    SCALED_DOWN = "scaled_down"  # no process, no runc task; containerd sees RUNNING
    RESTORING = "restoring"  # re-creating the runc task from the image (or cold)
    EXITED = "exited"  # the process really ended; the runc task still exists
    ENDED = "ended"  # killed while scaled down; no runc task, we answer for it
    DELETED = "deleted"  # containerd deleted the task; the record is dropped


HIDDEN = frozenset({Phase.CHECKPOINTING, Phase.SCALED_DOWN, Phase.RESTORING})
"""Phases in which containerd must keep seeing a running task."""

TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.CREATED: frozenset({Phase.RUNNING, Phase.EXITED, Phase.DELETED}),
    Phase.RUNNING: frozenset({Phase.CHECKPOINTING, Phase.EXITED, Phase.DELETED}),
    # a failed dump leaves the process running
    Phase.CHECKPOINTING: frozenset({Phase.SCALED_DOWN, Phase.RUNNING}),
    Phase.SCALED_DOWN: frozenset({Phase.RESTORING, Phase.ENDED}),
    # neither the restore nor a cold start brought a process back: ENDED; a failed restore
    # without fallback (the daemon starts it cold itself): back to SCALED_DOWN
    Phase.RESTORING: frozenset({Phase.RUNNING, Phase.ENDED, Phase.SCALED_DOWN}),
    Phase.EXITED: frozenset({Phase.DELETED}),
    Phase.ENDED: frozenset({Phase.DELETED}),
    Phase.DELETED: frozenset(),
}


class PhaseError(RuntimeError):
    """A transition the table does not allow (a bug, or a request at the wrong time)."""

    def __init__(self, container_id: str, current: Phase, wanted: Phase) -> None:
        super().__init__(
            f"container {container_id}: cannot go from {current.value} to {wanted.value}"
        )
        self.container_id = container_id
        self.current = current
        self.wanted = wanted


def check(container_id: str, current: Phase, wanted: Phase) -> None:
    """Raise :class:`PhaseError` unless ``current -> wanted`` is in :data:`TRANSITIONS`."""
    if wanted not in TRANSITIONS[current]:
        raise PhaseError(container_id, current, wanted)
