"""What the scale-to-zero parts of one interposer share: records, runc shim, events, daemon."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from google.protobuf.message import Message

from zeropod.shim.daemonlink import DaemonLink
from zeropod.shim.eventfilter import FilteringRelay
from zeropod.shim.phase import Phase
from zeropod.shim.tasks import Container, Tracker
from zeropod.shim.upstream import Upstream

log = logging.getLogger(__name__)

# Error codes of the interposer's control socket beyond zeropod.control.protocol's.
CHECKPOINT_FAILED = "checkpoint_failed"
RESTORE_FAILED = "restore_failed"
BAD_PHASE = "bad_phase"


@dataclass
class ShimContext:
    tracker: Tracker
    upstream: Upstream
    relay: FilteringRelay
    daemon: DaemonLink

    def exited(self, c: Container, event: Message | None = None) -> None:
        """The task's process really ended (its exit event passed to containerd)."""
        if c.phase in (Phase.CREATED, Phase.RUNNING):
            why = f"exit status {event.exit_status}" if event is not None else "exited"
            self.tracker.move(c, Phase.EXITED, why)
        self.daemon.unregister(c, "exited")
