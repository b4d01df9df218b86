"""Which of the runc shim's events containerd must not see, and events we publish ourselves.

A checkpoint makes the runc shim publish ``/tasks/exit`` and ``/tasks/delete`` for the
dumped process (``/tasks/checkpointed`` too); a restore publishes ``/tasks/create`` and
``/tasks/start``. containerd must see none of them: for it the task never stopped. While a
container is hidden (checkpointing, scaled down, restoring) every such event of it is held
back; the runc shim publishes asynchronously, so a restore's events may also arrive after the
restore returned: once a container has been checkpointed, its create/start events and the
exit/delete events of earlier pids are ours and dropped. A real exit of the current process
passes, and tells the tracker (via ``on_exit``).

The cheap path: while no container needs attention, only payloads that mention
``/tasks/exit`` are decoded at all.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable

from google.protobuf import any_pb2
from google.protobuf.message import DecodeError, Message

from zeropod._gen.containerd.api.events import task_pb2 as events
from zeropod._gen.containerd.api.services.ttrpc.events.v1 import events_pb2
from zeropod._gen.ttrpc import request_pb2
from zeropod.shim.eventrelay import SERVICE, EventRelay
from zeropod.shim.tasks import TaskRecord, Tracker
from zeropod.ttrpc import Call

log = logging.getLogger(__name__)

EXIT, DELETE, CREATE, START = "/tasks/exit", "/tasks/delete", "/tasks/create", "/tasks/start"
CHECKPOINTED = "/tasks/checkpointed"
EVENT_TYPES: dict[str, type[Message]] = {
    EXIT: events.TaskExit,
    DELETE: events.TaskDelete,
    CREATE: events.TaskCreate,
    START: events.TaskStart,
    CHECKPOINTED: events.TaskCheckpointed,
}
NAMESPACE_METADATA = "containerd-namespace-ttrpc"


class Verdict(enum.Enum):
    PASS = "pass"  # relay to containerd
    HOLD = "hold"  # keep in the container's record (released if a checkpoint fails)
    DROP = "drop"  # ours: containerd must never see it


def decide(c: TaskRecord, topic: str, event: Message) -> Verdict:
    """What to do with ``event`` (of ``topic``) of container ``c``; pure, for tests."""
    if c.hidden:
        return Verdict.HOLD
    if not c.generation:
        return Verdict.PASS
    if topic in (CREATE, START, CHECKPOINTED):
        return Verdict.DROP
    process = getattr(event, "id", "")
    if topic in (EXIT, DELETE) and process in ("", c.id) and event.pid != c.pid:
        return Verdict.DROP  # an earlier incarnation, dumped or a failed restore attempt
    return Verdict.PASS


def parse(call: Call) -> tuple[str, Message] | None:
    """(topic, event) of a Forward request whose topic we watch, else None."""
    try:
        envelope = events_pb2.ForwardRequest.FromString(call.payload).envelope
        kind = EVENT_TYPES.get(envelope.topic)
        if kind is None:
            return None
        return envelope.topic, kind.FromString(envelope.event.value)
    except DecodeError as err:
        log.warning("undecodable event from the runc shim, relaying it: %s", err)
        return None


class FilteringRelay(EventRelay):
    """The event relay with the scale-to-zero decision, and publishing of our own events."""

    def __init__(
        self,
        containerd_address: str,
        tracker: Tracker,
        namespace: str,
        on_exit: Callable[[TaskRecord, Message], None],
    ) -> None:
        super().__init__(containerd_address)
        self.tracker = tracker
        self.namespace = namespace
        self.on_exit = on_exit
        self._metadata: list[tuple[str, str]] | None = None

    def intercept(self, call: Call) -> bool:
        if self._metadata is None:
            self._metadata = call.metadata()
        if not self.tracker.attention and EXIT.encode() not in call.payload:
            return True
        parsed = parse(call)
        if parsed is None:
            return True
        topic, event = parsed
        c = self.tracker.get(event.container_id)
        if c is None:
            return True
        verdict = decide(c, topic, event)
        log.debug("event %s of %s (pid %s): %s", topic, c.id, getattr(event, "pid", ""), verdict)
        if verdict is Verdict.HOLD:
            c.held.append(call)
        elif verdict is Verdict.PASS and topic == EXIT and event.id in ("", c.id):
            self.on_exit(c, event)
        return verdict is Verdict.PASS

    def release_real_exit(self, c: TaskRecord) -> bool:
        """After a failed checkpoint: relay held exit/delete events of the current process.

        The dump failed but the process may have ended meanwhile on its own. Other held
        events are dropped. True if an exit of the current process was released.
        """
        held, c.held = c.held, []
        exited = False
        for call in held:
            parsed = parse(call)
            if parsed is None:
                continue
            topic, event = parsed
            if topic in (EXIT, DELETE) and event.pid == c.pid:
                exited = exited or topic == EXIT
                self.publish(call)
        return exited

    def publish_event(self, topic: str, event: Message) -> None:
        """Publish an event of our own (e.g. the exit of a task killed while asleep)."""
        now = time.time()
        req = events_pb2.ForwardRequest()
        envelope = req.envelope
        envelope.timestamp.FromNanoseconds(int(now * 1e9))
        envelope.namespace = self.namespace
        envelope.topic = topic
        envelope.event.CopyFrom(
            any_pb2.Any(
                type_url=event.DESCRIPTOR.full_name,
                value=event.SerializeToString(),
            )
        )
        request = request_pb2.Request(
            service=SERVICE, method="Forward", payload=req.SerializeToString()
        )
        for key, value in self._metadata or [(NAMESPACE_METADATA, self.namespace)]:
            request.metadata.add(key=key, value=value)
        self.publish(Call(request, request.SerializeToString()))

    def publish_exit(self, c: TaskRecord) -> None:
        """``/tasks/exit`` for a task that ended without a process (from its record)."""
        event = events.TaskExit(container_id=c.id, id=c.id, pid=c.pid, exit_status=c.exit_status)
        event.exited_at.FromNanoseconds(int(c.exited_at * 1e9))
        self.publish_event(EXIT, event)

    def publish_delete(self, c: TaskRecord) -> None:
        event = events.TaskDelete(container_id=c.id, pid=c.pid, exit_status=c.exit_status)
        event.exited_at.FromNanoseconds(int(c.exited_at * 1e9))
        self.publish_event(DELETE, event)
