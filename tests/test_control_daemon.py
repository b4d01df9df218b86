"""The daemon as systemd runs it, and its control service: sd_notify, watchdog, SIGTERM,
registration outcomes and the journal lines they leave."""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest
from daemon_fakes import World

from zeropod.config.annotations import CONTAINER_NAMES, PORTS_MAP, SCALEDOWN_DURATION
from zeropod.contract.protocol import NOT_FOUND, ControlError
from zeropod.contract.requests import RegisterRequest, StatusRequest
from zeropod.daemon.adapters import notify
from zeropod.daemon.api.service import ControlService
from zeropod.daemon.model.phase import IllegalTransition, Phase
from zeropod.journal import ERR, INFO, WARNING, Journal, stderr_sink

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def tmp_short() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="zp-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def receive(sock: socket.socket, deadline: float) -> str:
    sock.settimeout(max(0.01, deadline - time.monotonic()))
    return sock.recv(4096).decode()


def test_daemon_notifies_pings_watchdog_and_stops_on_sigterm(tmp_short: str) -> None:
    notify_path = os.path.join(tmp_short, "notify.sock")
    control_path = os.path.join(tmp_short, "control.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(notify_path)
        env = {
            **os.environ,
            "PYTHONPATH": REPO,
            "ZEROPOD_CONTROL_SOCKET": control_path,
            "NOTIFY_SOCKET": notify_path,
            "WATCHDOG_USEC": "200000",
        }
        env.pop("WATCHDOG_PID", None)
        daemon = subprocess.Popen(
            [sys.executable, "-m", "zeropod.daemon.main"], env=env, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 10
        messages = [receive(manager, deadline)]
        assert messages[0].startswith("READY=1")
        assert os.path.exists(control_path)
        pings, stored = 0, []
        while pings < 2:
            message = receive(manager, deadline)
            pings += message == "WATCHDOG=1"
            if message.startswith("FDSTORE=1"):
                stored.append(message.split("FDNAME=")[1])
        daemon.send_signal(signal.SIGTERM)
        while (message := receive(manager, deadline)) != "STOPPING=1":
            assert message == "WATCHDOG=1"
        assert daemon.wait(10) == 0
    assert daemon.stderr is not None
    log = daemon.stderr.read().decode()
    assert "listening on" in log and "stopping" in log
    # Both listening sockets went to the fd store, so their files stay for the next start.
    assert sorted(stored) == ["control"]
    assert os.path.exists(control_path)


def test_daemon_refuses_a_live_socket(tmp_short: str) -> None:
    control_path = os.path.join(tmp_short, "control.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
        other.bind(control_path)
        other.listen()
        env = {**os.environ, "PYTHONPATH": REPO, "ZEROPOD_CONTROL_SOCKET": control_path}
        env.pop("NOTIFY_SOCKET", None)
        result = subprocess.run(
            [sys.executable, "-m", "zeropod.daemon.main"], env=env, capture_output=True, timeout=10
        )
    assert result.returncode == 1
    assert b"already listens" in result.stderr


def test_raw_notify_and_watchdog_interval(tmp_short: str) -> None:
    path = os.path.join(tmp_short, "n.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(path)
        assert notify.notify("READY=1", {"NOTIFY_SOCKET": path})
        assert manager.recv(100) == b"READY=1"
    assert not notify.notify("READY=1", {})
    assert notify.watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert notify.watchdog_interval({}) is None
    assert notify.watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    other_pid = {"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert notify.watchdog_interval(other_pid) is None
    own_pid = {"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())}
    assert notify.watchdog_interval(own_pid) == 0.5


def test_abstract_notify_socket() -> None:
    name = f"zeropod-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind("\0" + name)
        assert notify.raw_notify("WATCHDOG=1", {"NOTIFY_SOCKET": "@" + name})
        assert manager.recv(100) == b"WATCHDOG=1"


# --- the control service and its journal lines ----------------------------------------------


class Captured:
    def __init__(self) -> None:
        self.entries: list[tuple[str, int, dict[str, str]]] = []

    def __call__(self, message: str, priority: int, fields: dict[str, str]) -> None:
        self.entries.append((message, priority, fields))


def make_service() -> tuple[ControlService, Captured]:
    captured = Captured()
    return World(Journal(captured)).service, captured


def request(container: str = "app", annotations: dict[str, str] | None = None, **kw: Any) -> Any:
    values = {
        "container_id": f"id-{container}",
        "pod": "web-1",
        "namespace": "shop",
        "container": container,
        "sandbox_id": "sandbox1",
        "netns": "/var/run/netns/cni-1",
        "bundle": "/run/bundle",
        "pid": 7,
        "annotations": annotations or {},
    }
    values.update(kw)
    return RegisterRequest(**values)


def test_bad_annotation_one_warning_line_and_unmanaged() -> None:
    service, captured = make_service()
    answer = service.register(request(annotations={SCALEDOWN_DURATION: "soon"}))
    assert answer["managed"] is False
    assert SCALEDOWN_DURATION in answer["reason"]
    assert len(captured.entries) == 1
    message, priority, fields = captured.entries[0]
    assert priority == WARNING
    assert fields["ANNOTATION"] == SCALEDOWN_DURATION
    assert "'soon'" in message and "allowed:" in message and "unscaled" in message
    assert fields["POD"] == "web-1" and fields["NAMESPACE"] == "shop"
    assert fields["CONTAINER"] == "app" and fields["STATE"] == "RUNNING"
    assert service.registry.get("id-app").phase.phase is Phase.RUNNING


def test_container_names_select_managed_containers() -> None:
    service, captured = make_service()
    annotations = {CONTAINER_NAMES: "app", PORTS_MAP: "app=8080"}
    assert service.register(request("app", annotations))["managed"] is True
    side = service.register(request("side", annotations))
    assert side["managed"] is False and CONTAINER_NAMES in side["reason"]
    assert [priority for _, priority, _ in captured.entries] == [INFO, INFO]
    assert "ports 8080" in captured.entries[0][0]
    assert captured.entries[1][2]["MANAGED"] == "no"


def test_reregister_keeps_phase_and_updates_pid() -> None:
    service, captured = make_service()
    service.register(request())
    container = service.registry.get("id-app")
    container.phase.transition(Phase.CHECKPOINTING, "idle")
    service.register(request(pid=99))
    assert service.registry.get("id-app") is container
    assert container.pid == 99 and container.phase.phase is Phase.CHECKPOINTING
    assert "re-registered" in captured.entries[-1][0]


def test_transitions_and_illegal_ones_are_logged() -> None:
    service, captured = make_service()
    service.register(request())
    container = service.registry.get("id-app")
    container.phase.transition(Phase.CHECKPOINTING, "idle for 60s")
    message, priority, fields = captured.entries[-1]
    assert "RUNNING -> CHECKPOINTING (idle for 60s)" in message
    assert fields["STATE"] == "CHECKPOINTING" and fields["PREVIOUS_STATE"] == "RUNNING"
    with pytest.raises(IllegalTransition):
        container.phase.transition(Phase.RESTORING, "wake")
    message, priority, _ = captured.entries[-1]
    assert priority == ERR and "illegal phase transition CHECKPOINTING -> RESTORING" in message


async def test_handle_dispatch_and_unregister() -> None:
    service, captured = make_service()
    await service.handle(request())
    status = await service.handle(StatusRequest())
    assert [c["id"] for c in status["containers"]] == ["id-app"]
    service.unregister("id-app")
    assert "RUNNING -> STOPPED" in captured.entries[-1][0]
    with pytest.raises(ControlError) as info:
        service.unregister("id-app")
    assert info.value.code == NOT_FOUND


def test_stderr_journal_format() -> None:
    stream = io.StringIO()
    journal = Journal(stderr_sink(stream))
    journal.warning("hello", pod="p", state="RUNNING", unit="zeropod@x.service", extra_field=3)
    line = stream.getvalue()
    assert line.startswith("zeropod: warning hello ")
    assert "POD='p'" in line and "OBJECT_SYSTEMD_UNIT='zeropod@x.service'" in line
    assert "EXTRA_FIELD='3'" in line and "NAMESPACE" not in line
    # A field journald would refuse is left out and named, never raised to the caller.
    journal.info("x", **{"bad-key": 1, "step_restore_web-1_ms": 2.0, "ok": 3})
    line = stream.getvalue().splitlines()[-1]
    assert "OK='3'" in line and "BAD-KEY=" not in line
    assert "INVALID_FIELDS=\"'BAD-KEY' 'STEP_RESTORE_WEB-1_MS'\"" in line


def test_journal_sink_failure_never_reaches_the_caller() -> None:
    def broken(message: str, priority: int, fields: dict[str, str]) -> None:
        raise OSError("journald socket gone")

    fallback = io.StringIO()
    Journal(broken, fallback).error("woke", pod="web-1")
    assert "journal write failed" in fallback.getvalue() and "woke" in fallback.getvalue()
