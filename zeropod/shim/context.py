"""What the scale-to-zero parts of one interposer share: records, runc shim, events, daemon."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from google.protobuf.message import Message

from zeropod.shim.daemonlink import DaemonLink
from zeropod.shim.eventfilter import FilteringRelay
from zeropod.shim.taskphase import TaskPhase
from zeropod.shim.tasks import TaskRecord, Tracker
from zeropod.shim.upstream import Upstream

log = logging.getLogger(__name__)


@dataclass
class ShimContext:
    tracker: Tracker
    upstream: Upstream
    relay: FilteringRelay
    daemon: DaemonLink

    def exited(self, c: TaskRecord, event: Message | None = None) -> None:
        """The task's process really ended (its exit event passed to containerd)."""
        if c.phase in (TaskPhase.CREATED, TaskPhase.RUNNING):
            why = f"exit status {event.exit_status}" if event is not None else "exited"
            self.tracker.move(c, TaskPhase.EXITED, why)
        self.daemon.unregister(c, "exited")
