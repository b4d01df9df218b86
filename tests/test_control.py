"""The control protocol end to end over a real unix socket in a temporary directory."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from daemon_fakes import World

from tests.control_calls import register_container, unregister_container
from zeropod.contract import protocol
from zeropod.contract.daemonclient import ControlClient
from zeropod.contract.protocol import ControlError, DaemonUnavailable
from zeropod.contract.requests import RegisterRequest, StatusRequest, parse_request
from zeropod.daemon.api.controlserver import ControlServer
from zeropod.daemon.api.eventhub import EventHub
from zeropod.daemon.api.service import ControlService
from zeropod.daemon.model.phase import Phase
from zeropod.journal import Journal

GOOD = {
    "v": 2,
    "op": "register",
    "id": "c0ffee",
    "pod": "web-1",
    "namespace": "default",
    "container": "app",
    "sandbox_id": "5a4db0x",
    "netns": "/var/run/netns/cni-1",
    "bundle": "/run/containerd/io.containerd.runtime.v2.task/k8s.io/c0ffee",
    "pid": 42,
    "annotations": {"zeropod.ctrox.dev/ports-map": "app=8080"},
}


def register_kwargs(**changes: Any) -> dict[str, Any]:
    kwargs = {
        "container_id": GOOD["id"],
        "pod": GOOD["pod"],
        "namespace": GOOD["namespace"],
        "container": GOOD["container"],
        "sandbox_id": GOOD["sandbox_id"],
        "netns": GOOD["netns"],
        "bundle": GOOD["bundle"],
        "pid": GOOD["pid"],
        "annotations": GOOD["annotations"],
    }
    kwargs.update(changes)
    return kwargs


class Captured:
    """A journal sink that keeps entries in memory."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, int, dict[str, str]]] = []

    def __call__(self, message: str, priority: int, fields: dict[str, str]) -> None:
        self.entries.append((message, priority, fields))


def wait_until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached before the deadline")
        time.sleep(0.005)


@pytest.fixture
def sock_dir() -> Iterator[str]:
    # A short path: unix socket paths are limited to 108 bytes.
    path = tempfile.mkdtemp(prefix="zp-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def daemon(sock_dir: str) -> AsyncIterator[tuple[ControlServer, ControlService, Captured]]:
    captured = Captured()
    journal = Journal(captured)
    service = World(journal).service
    server = ControlServer(os.path.join(sock_dir, "control.sock"), service, journal.error)
    await server.start()
    yield server, service, captured
    await server.close()


# --- request validation (no socket) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "code", "needle"),
    [
        ({"v": 3}, protocol.UNSUPPORTED_VERSION, "'v'"),
        ({"v": True}, protocol.UNSUPPORTED_VERSION, "'v'"),
        ({"v": None}, protocol.UNSUPPORTED_VERSION, "'v'"),
        ({"op": 3}, protocol.BAD_REQUEST, "'op'"),
        ({"op": "fly"}, protocol.UNKNOWN_OP, "'fly'"),
        ({"id": ""}, protocol.BAD_REQUEST, "'id'"),
        ({"id": "a/b"}, protocol.BAD_REQUEST, "'id'"),
        ({"id": "x" * 77}, protocol.BAD_REQUEST, "'id'"),
        ({"id": 5}, protocol.BAD_REQUEST, "'id'"),
        ({"pod": "Web"}, protocol.BAD_REQUEST, "'pod'"),
        ({"pod": ""}, protocol.BAD_REQUEST, "'pod'"),
        ({"namespace": "a.b"}, protocol.BAD_REQUEST, "'namespace'"),
        ({"container": "-x"}, protocol.BAD_REQUEST, "'container'"),
        ({"sandbox_id": None}, protocol.BAD_REQUEST, "'sandbox_id'"),
        ({"netns": "relative/path"}, protocol.BAD_REQUEST, "'netns'"),
        ({"bundle": ""}, protocol.BAD_REQUEST, "'bundle'"),
        ({"bundle": "/a\0b"}, protocol.BAD_REQUEST, "'bundle'"),
        ({"pid": 0}, protocol.BAD_REQUEST, "'pid'"),
        ({"pid": "42"}, protocol.BAD_REQUEST, "'pid'"),
        ({"pid": True}, protocol.BAD_REQUEST, "'pid'"),
        ({"pid": 4.2}, protocol.BAD_REQUEST, "'pid'"),
        ({"annotations": []}, protocol.BAD_REQUEST, "'annotations'"),
        ({"annotations": {"k": 1}}, protocol.BAD_REQUEST, "'annotations.k'"),
        ({"extra": 1}, protocol.BAD_REQUEST, "'extra'"),
    ],
)
def test_register_validation(changes: dict[str, Any], code: str, needle: str) -> None:
    with pytest.raises(ControlError) as info:
        parse_request({**GOOD, **changes})
    assert info.value.code == code
    assert needle in info.value.message


@pytest.mark.parametrize("missing", ["id", "pod", "namespace", "container", "pid", "bundle"])
def test_register_missing_field(missing: str) -> None:
    message = {k: v for k, v in GOOD.items() if k != missing}
    with pytest.raises(ControlError, match=f"field '{missing}' is missing"):
        parse_request(message)


def test_register_round_trip() -> None:
    request = parse_request(GOOD)
    assert isinstance(request, RegisterRequest)
    assert request.to_message() == GOOD
    assert parse_request({**GOOD, "netns": ""}).netns == ""  # type: ignore[union-attr]
    no_annotations = {k: v for k, v in GOOD.items() if k != "annotations"}
    assert parse_request(no_annotations).annotations == {}  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("message", "needle"),
    [
        ({"v": 1, "op": "status", "all": True}, "'all'"),
        ({"v": 1, "op": "events", "x": 1}, "'x'"),
        ({"v": 1, "op": "unregister"}, "'id'"),
        ({"v": 2, "op": "restarted_cold", "id": "c1", "error": "x"}, "'pid'"),
        ({"v": 2, "op": "restarted_cold", "id": "c1", "pid": 0, "error": "x"}, "'pid'"),
    ],
)
def test_other_ops_validation(message: dict[str, Any], needle: str) -> None:
    with pytest.raises(ControlError) as info:
        parse_request(message)
    assert info.value.code == protocol.BAD_REQUEST
    assert needle in info.value.message


# --- over the socket ------------------------------------------------------------------------


def raw_exchange(path: str, payload: bytes, lines: int) -> list[dict[str, Any]]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(path)
        sock.sendall(payload)
        reader = sock.makefile("rb")
        return [json.loads(reader.readline()) for _ in range(lines)]


async def test_register_status_unregister(daemon: Any) -> None:
    server, service, _ = daemon
    client = ControlClient(server.path)
    outcome = await asyncio.to_thread(register_container, path=server.path, **register_kwargs())
    assert outcome.ok and outcome.managed is True and outcome.error is None
    status = await asyncio.to_thread(client.status)
    assert [(c["id"], c["state"], c["ports"], c["managed"]) for c in status] == [
        ("c0ffee", "RUNNING", [8080], True)
    ]
    assert await asyncio.to_thread(unregister_container, "c0ffee", path=server.path)
    assert len(service.registry) == 0
    again = await asyncio.to_thread(unregister_container, "c0ffee", path=server.path)
    assert not again.ok and again.error is not None and "not_found" in again.error


async def test_register_only_sends_zeropod_annotations(daemon: Any) -> None:
    server, service, _ = daemon
    annotations = {"zeropod.ctrox.dev/scaledown-duration": "5s", "io.kubernetes.x": "y"}
    kwargs = register_kwargs(annotations=annotations)
    assert (await asyncio.to_thread(register_container, path=server.path, **kwargs)).ok
    container = service.registry.get("c0ffee")
    assert container.config.scaledown_seconds == 5.0


async def test_malformed_lines_keep_the_connection(daemon: Any) -> None:
    server, _, _ = daemon
    payload = b"not json\n[1]\n\n" + protocol.encode(StatusRequest().to_message())
    answers = await asyncio.to_thread(raw_exchange, server.path, payload, 3)
    assert answers[0]["error"]["code"] == protocol.BAD_JSON
    assert answers[1]["error"]["code"] == protocol.BAD_JSON
    assert answers[2] == {"ok": True, "containers": []}


async def test_too_large_line(daemon: Any) -> None:
    server, _, _ = daemon
    payload = b"x" * (protocol.MAX_LINE + 10) + b"\n"
    answers = await asyncio.to_thread(raw_exchange, server.path, payload, 1)
    assert answers[0]["error"]["code"] == protocol.TOO_LARGE


async def test_client_raises_control_error(daemon: Any) -> None:
    server, _, _ = daemon
    client = ControlClient(server.path)
    with pytest.raises(ControlError) as info:
        await asyncio.to_thread(client.request, {"v": 1, "op": "nope"})
    assert info.value.code == protocol.UNKNOWN_OP


async def test_handler_failure_is_internal_and_logged(daemon: Any) -> None:
    server, service, captured = daemon

    async def broken(request: Any) -> dict[str, Any]:
        raise KeyError("boom")

    service.handle = broken
    with pytest.raises(ControlError) as info:
        await asyncio.to_thread(ControlClient(server.path).status)
    assert info.value.code == protocol.INTERNAL
    assert any("'status' failed" in message for message, _, _ in captured.entries)


async def test_events_stream(daemon: Any) -> None:
    server, service, _ = daemon
    received: list[dict[str, Any]] = []
    client = ControlClient(server.path)
    stream = client.events()

    def follow() -> None:
        for event in stream:
            received.append(event)
            if len(received) == 3:
                break
        stream.close()

    follower = threading.Thread(target=follow)
    follower.start()
    await asyncio.to_thread(wait_until, lambda: service.hub.subscriber_count == 1)
    await asyncio.to_thread(register_container, path=server.path, **register_kwargs())
    container = service.registry.get("c0ffee")
    container.phase.transition(Phase.CHECKPOINTING, "idle for 60s")
    container.phase.transition(Phase.SCALED_DOWN, "checkpointed")
    await asyncio.to_thread(follower.join, 5)
    assert [(e["type"], e["previous"], e["state"]) for e in received] == [
        ("registered", None, "RUNNING"),
        ("transition", "RUNNING", "CHECKPOINTING"),
        ("transition", "CHECKPOINTING", "SCALED_DOWN"),
    ]
    assert received[1]["reason"] == "idle for 60s"
    assert received[1]["pod"] == "web-1" and received[1]["namespace"] == "default"
    # The client hung up: the server notices and drops the subscription.
    await asyncio.to_thread(wait_until, lambda: service.hub.subscriber_count == 0)


async def test_close_ends_event_streams_and_removes_socket(daemon: Any) -> None:
    server, service, _ = daemon
    done = threading.Event()

    def follow() -> None:
        for _ in ControlClient(server.path).events():
            pass
        done.set()

    follower = threading.Thread(target=follow)
    follower.start()
    await asyncio.to_thread(wait_until, lambda: service.hub.subscriber_count == 1)
    await server.close()
    await asyncio.to_thread(follower.join, 5)
    assert done.is_set()
    assert not os.path.exists(server.path)
    assert service.hub.subscriber_count == 0


# --- daemon unavailable, stale and live sockets ---------------------------------------------


def test_missing_socket_is_unavailable(sock_dir: str) -> None:
    path = os.path.join(sock_dir, "none.sock")
    with pytest.raises(DaemonUnavailable, match="no control socket"):
        ControlClient(path).status()
    outcome = register_container(path=path, **register_kwargs())
    assert not outcome.ok and "no control socket" in (outcome.error or "")


def test_refused_socket_is_unavailable(sock_dir: str) -> None:
    path = os.path.join(sock_dir, "stale.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(path)  # bound, never listening: connect is refused
        with pytest.raises(DaemonUnavailable, match="nothing listens"):
            ControlClient(path).status()


def test_silent_daemon_times_out_quickly(sock_dir: str) -> None:
    path = os.path.join(sock_dir, "silent.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.bind(path)
        silent.listen()
        started = time.monotonic()
        outcome = register_container(path=path, timeout=0.2, **register_kwargs())
        elapsed = time.monotonic() - started
    assert not outcome.ok and "in time" in (outcome.error or "")
    assert elapsed < 1.0


def test_env_overrides_socket_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(protocol.SOCKET_ENV, raising=False)
    assert protocol.socket_path() == "/run/zeropod/control.sock"
    monkeypatch.setenv(protocol.SOCKET_ENV, "/tmp/x.sock")
    assert protocol.socket_path() == "/tmp/x.sock"
    assert ControlClient().path == "/tmp/x.sock"


async def test_stale_socket_is_replaced_and_live_one_refused(sock_dir: str) -> None:
    path = os.path.join(sock_dir, "control.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(path)
    service = World().service
    first = ControlServer(path, service, print)
    await first.start()
    try:
        assert await asyncio.to_thread(ControlClient(path).status) == []
        with pytest.raises(RuntimeError, match="already listens"):
            await ControlServer(path, service, print).start()
    finally:
        await first.close()
    assert not os.path.exists(path)


async def test_non_socket_file_is_not_replaced(sock_dir: str) -> None:
    path = os.path.join(sock_dir, "control.sock")
    with open(path, "w") as handle:
        handle.write("keep me")
    service = World().service
    with pytest.raises(RuntimeError, match="not a socket"):
        await ControlServer(path, service, print).start()
    assert os.path.isfile(path)


# --- event hub ------------------------------------------------------------------------------


async def test_slow_subscriber_is_cut_off() -> None:
    hub = EventHub(queue_size=2)
    slow = hub.subscribe()
    for n in range(3):
        hub.publish({"n": n})
    assert hub.subscriber_count == 0
    assert await slow.get() == {"n": 0}
    assert await slow.get() == {"n": 1}
    with pytest.raises(ControlError) as info:
        await slow.get()
    assert info.value.code == protocol.OVERFLOW


async def test_silent_clients_are_closed_and_a_flood_is_answered_busy(sock_dir: str) -> None:
    """200 clients that connect and say nothing neither pile up nor starve a real request."""
    service = World().service
    path = os.path.join(sock_dir, "control.sock")
    server = ControlServer(path, service, print, max_connections=8, idle_timeout=0.3)
    await server.start()
    try:
        silent = [await asyncio.open_unix_connection(path) for _ in range(8)]
        extra_reader, extra_writer = await asyncio.open_unix_connection(path)
        line = await asyncio.wait_for(extra_reader.readline(), 5)
        assert json.loads(line)["error"]["code"] == "busy"
        assert await asyncio.wait_for(extra_reader.read(), 5) == b""  # closed
        extra_writer.close()
        # The silent ones are dropped after the idle timeout; then a request is served.
        for reader, _ in silent:
            assert await asyncio.wait_for(reader.read(), 5) == b""
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(b'{"v": 1, "op": "status"}\n')
        answer = json.loads(await asyncio.wait_for(reader.readline(), 5))
        assert answer == {"ok": True, "containers": []}
        writer.close()
        for _, w in silent:
            w.close()
    finally:
        await server.close()


@pytest.mark.parametrize(
    ("peer", "read_gid", "status", "sleep"),
    [
        ((1, 0, 0), None, "ok", "not_found"),  # root: past the gate (no such pod)
        ((1, 4321, 4321), None, "permission_denied", "permission_denied"),  # another user
        ((1, 4321, 999), 999, "ok", "permission_denied"),  # the read-only group: status only
    ],
)
async def test_who_may_talk_to_the_daemon(
    sock_dir: str, peer: tuple[int, int, int], read_gid: int | None, status: str, sleep: str
) -> None:
    """SO_PEERCRED decides: root (and the daemon's own user) may do anything, members of the
    configured read-only group may read status and events, nobody else anything."""
    service = World().service
    path = os.path.join(sock_dir, "control.sock")
    server = ControlServer(path, service, print, peer=lambda sock: peer)
    server._read_gid = read_gid  # the group's chown of the socket file needs root
    server._owner = 0
    await server.start()
    try:
        outcomes = []
        for request in (
            b'{"v": 1, "op": "status"}\n',
            b'{"v": 1, "op": "sleep", "pod": "p", "namespace": "shop"}\n',
        ):
            reader, writer = await asyncio.open_unix_connection(path)
            writer.write(request)
            answer = json.loads(await asyncio.wait_for(reader.readline(), 5))
            outcomes.append("ok" if answer.get("ok") else answer["error"]["code"])
            writer.close()
        assert outcomes == [status, sleep]
    finally:
        await server.close()
