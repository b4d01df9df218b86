"""The event filter: which runc shim events containerd sees around a checkpoint and restore."""

from __future__ import annotations

import pytest
from google.protobuf.message import Message

from zeropod._gen.containerd.api.events import task_pb2 as ev
from zeropod._gen.containerd.api.services.ttrpc.events.v1 import events_pb2
from zeropod._gen.ttrpc import request_pb2
from zeropod.shim.eventfilter import (
    CHECKPOINTED,
    CREATE,
    DELETE,
    EXIT,
    START,
    FilteringRelay,
    Verdict,
    decide,
)
from zeropod.shim.eventrelay import SERVICE
from zeropod.shim.taskapi import V3
from zeropod.shim.taskphase import TaskPhase
from zeropod.shim.tasks import TaskRecord, Tracker
from zeropod.ttrpc import Call

CID = "c1"


def container(phase: TaskPhase, generation: int = 0, pid: int = 200) -> TaskRecord:
    req = V3.messages.CreateTaskRequest(id=CID, bundle="/b")
    return TaskRecord(CID, V3, req, [], phase=phase, pid=pid, generation=generation)


def event(topic: str, pid: int = 100, process: str = CID) -> Message:
    if topic == EXIT:
        return ev.TaskExit(container_id=CID, id=process, pid=pid, exit_status=137)
    if topic == DELETE:
        return ev.TaskDelete(container_id=CID, pid=pid, exit_status=137)
    if topic == CREATE:
        return ev.TaskCreate(container_id=CID, pid=pid, checkpoint="/img")
    if topic == START:
        return ev.TaskStart(container_id=CID, pid=pid)
    return ev.TaskCheckpointed(container_id=CID, checkpoint="/img")


def forward_call(topic: str, message: Message, extra: str = "") -> Call:
    fwd = events_pb2.ForwardRequest()
    fwd.envelope.topic = topic
    fwd.envelope.namespace = "k8s.io"
    fwd.envelope.event.type_url = message.DESCRIPTOR.full_name
    fwd.envelope.event.value = message.SerializeToString()
    req = request_pb2.Request(service=SERVICE, method="Forward", payload=fwd.SerializeToString())
    req.metadata.add(key="k", value=extra or topic)
    return Call(req, req.SerializeToString())


ALL = (EXIT, DELETE, CREATE, START, CHECKPOINTED)
HIDDEN_PHASES = (TaskPhase.CHECKPOINTING, TaskPhase.SCALED_DOWN, TaskPhase.RESTORING)
CASES = [
    # hidden: every watched event of the container is held back
    *[(phase, 1, t, 100, CID, Verdict.HOLD) for phase in HIDDEN_PHASES for t in ALL],
    # never checkpointed: everything passes
    *[(TaskPhase.RUNNING, 0, t, 100, CID, Verdict.PASS) for t in ALL],
    # restored (generation 1, current pid 200): late events of the restore are ours
    (TaskPhase.RUNNING, 1, CREATE, 200, CID, Verdict.DROP),
    (TaskPhase.RUNNING, 1, START, 200, CID, Verdict.DROP),
    (TaskPhase.RUNNING, 1, CHECKPOINTED, 0, CID, Verdict.DROP),
    (TaskPhase.RUNNING, 1, EXIT, 100, CID, Verdict.DROP),  # the dumped process
    (TaskPhase.RUNNING, 1, DELETE, 100, CID, Verdict.DROP),
    (TaskPhase.RUNNING, 1, EXIT, 200, CID, Verdict.PASS),  # the restored process really exits
    (TaskPhase.EXITED, 1, DELETE, 200, CID, Verdict.PASS),
    (TaskPhase.RUNNING, 1, EXIT, 300, "exec-1", Verdict.PASS),  # an exec's exit
]  # fmt: skip


@pytest.mark.parametrize(("phase", "generation", "topic", "pid", "process", "verdict"), CASES)
def test_decide(
    phase: TaskPhase, generation: int, topic: str, pid: int, process: str, verdict: Verdict
) -> None:
    c = container(phase, generation)
    assert decide(c, topic, event(topic, pid, process)) is verdict


class Recorder(FilteringRelay):
    def __init__(self, tracker: Tracker) -> None:
        self.exits: list[tuple[str, int]] = []
        super().__init__("/nonexistent", tracker, "k8s.io", self._on_exit)
        self.published: list[Call] = []

    def _on_exit(self, c: TaskRecord, e: Message) -> None:
        self.exits.append((c.id, e.pid))

    def publish(self, call: Call) -> None:
        self.published.append(call)


def topics(calls: list[Call]) -> list[str]:
    return [events_pb2.ForwardRequest.FromString(c.payload).envelope.topic for c in calls]


async def test_intercept_holds_and_reports_real_exits() -> None:
    tracker = Tracker()
    relay = Recorder(tracker)
    c = container(TaskPhase.RUNNING, pid=100)
    tracker.add(c)
    # cheap path: nothing needs attention and it is no exit: not even decoded
    assert relay.intercept(Call(request_pb2.Request(payload=b"\xff garbage"), b""))
    tracker.move(c, TaskPhase.CHECKPOINTING)
    for topic in (EXIT, DELETE, CHECKPOINTED):
        assert not relay.intercept(forward_call(topic, event(topic, 100)))
    assert topics(c.held) == [EXIT, DELETE, CHECKPOINTED]
    # an event of another container passes
    other = ev.TaskExit(container_id="other", id="other", pid=5)
    assert relay.intercept(forward_call(EXIT, other))
    assert relay.exits == []
    # a failed dump whose process ended anyway: its exit and delete go out after all
    tracker.move(c, TaskPhase.RUNNING)
    assert relay.release_real_exit(c) is True
    assert topics(relay.published) == [EXIT, DELETE] and c.held == []
    # a real exit of a running container is relayed and reported
    assert relay.intercept(forward_call(EXIT, event(EXIT, 100)))
    assert relay.exits == [(CID, 100)]


async def test_published_exit_and_delete_events() -> None:
    tracker = Tracker()
    relay = Recorder(tracker)
    relay.intercept(forward_call(START, event(START), extra="meta"))  # metadata to copy
    c = container(TaskPhase.ENDED, pid=100)
    c.end(143)
    relay.publish_exit(c)
    relay.publish_delete(c)
    assert topics(relay.published) == [EXIT, DELETE]
    first = relay.published[0]
    assert (first.service, first.method, first.metadata()) == (SERVICE, "Forward", [("k", "meta")])
    envelope = events_pb2.ForwardRequest.FromString(first.payload).envelope
    assert envelope.namespace == "k8s.io"
    assert envelope.event.type_url == "containerd.events.TaskExit"
    exit_event = ev.TaskExit.FromString(envelope.event.value)
    assert (exit_event.container_id, exit_event.id, exit_event.pid) == (CID, CID, 100)
    assert exit_event.exit_status == 143
    assert abs(exit_event.exited_at.ToNanoseconds() / 1e9 - c.exited_at) < 1e-3
