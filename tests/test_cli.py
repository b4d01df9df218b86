"""zeropodctl against the real daemon started as a subprocess on a temporary socket."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from tests.control_calls import register_container
from zeropod.cli.main import main
from zeropod.cli.render import age, event_line, status_table
from zeropod.contract.daemonclient import ControlClient
from zeropod.contract.protocol import DaemonUnavailable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def wait_for_daemon(path: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            ControlClient(path, timeout=1.0).status()
            return
        except DaemonUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


@pytest.fixture
def daemon_socket() -> Iterator[str]:
    directory = tempfile.mkdtemp(prefix="zp-", dir="/tmp")
    path = os.path.join(directory, "control.sock")
    env = {**os.environ, "PYTHONPATH": REPO, "ZEROPOD_CONTROL_SOCKET": path}
    env["ZEROPOD_METRICS_ADDRESS"] = "off"  # tests run side by side; the port is tested apart
    env.pop("NOTIFY_SOCKET", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "zeropod.daemon.main"],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_daemon(path)
        yield path
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(10)
        shutil.rmtree(directory, ignore_errors=True)


def register(path: str, container_id: str, container: str, annotations: dict[str, str]) -> None:
    outcome = register_container(
        container_id=container_id,
        pod="web-1",
        namespace="shop",
        container=container,
        sandbox_id="sandbox1",
        netns="/var/run/netns/cni-1",
        bundle=f"/run/bundles/{container_id}",
        pid=100,
        annotations=annotations,
        path=path,
        timeout=2.0,
    )
    assert outcome.ok, outcome.error


def test_status_table_and_json(daemon_socket: str, capsys: pytest.CaptureFixture[str]) -> None:
    register(daemon_socket, "c1", "app", {"zeropod.ctrox.dev/ports-map": "app=80,443"})
    register(daemon_socket, "c2", "side", {"zeropod.ctrox.dev/ports-map": "nonsense"})

    assert main(["--socket", daemon_socket, "status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "NAMESPACE",
        "POD",
        "CONTAINER",
        "STATE",
        "SINCE",
        "CHECKPOINT",
        "RESTORE",
        "IMAGE",
        "PORTS",
    ]
    assert lines[1].split()[:4] == ["shop", "web-1", "app", "RUNNING"]
    assert lines[1].split()[-1] == "80,443"
    assert "RUNNING (unmanaged)" in lines[2]

    assert main(["--socket", daemon_socket, "status", "-o", "json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert [(e["container"], e["managed"]) for e in entries] == [("app", True), ("side", False)]
    assert "zeropod.ctrox.dev/ports-map" in entries[1]["unmanaged_reason"]


def test_status_empty(daemon_socket: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--socket", daemon_socket, "status"]) == 0
    assert capsys.readouterr().out == "No containers registered.\n"


def test_events_follow(daemon_socket: str) -> None:
    env = {**os.environ, "PYTHONPATH": REPO, "ZEROPOD_CONTROL_SOCKET": daemon_socket}
    follower = subprocess.Popen(
        [sys.executable, "-m", "zeropod.cli.main", "events", "-o", "json"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert follower.stdout is not None
    reader = threading.Thread(target=lambda: [lines.put(line) for line in follower.stdout])
    reader.start()
    try:
        # Events from before the follower subscribed are not replayed: register fresh
        # containers until one shows up on the stream.
        deadline = time.monotonic() + 10
        n = 0
        while True:
            assert time.monotonic() < deadline, "no event reached zeropodctl events"
            n += 1
            register(daemon_socket, f"c{n}", "app", {})
            try:
                event = json.loads(lines.get(timeout=0.2))
                break
            except queue.Empty:
                continue
        assert event["type"] == "registered" and event["namespace"] == "shop"
        assert event["state"] == "RUNNING" and event["managed"] is True
    finally:
        follower.send_signal(signal.SIGINT)
        assert follower.wait(10) == 130
        reader.join(10)


def test_daemon_not_running(capsys: pytest.CaptureFixture[str]) -> None:
    missing = "/tmp/zp-no-such-dir/control.sock"
    assert main(["--socket", missing, "status"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "daemon not reachable" in err and missing in err


@pytest.mark.parametrize(
    "argv",
    [[], ["bogus"], ["status", "-o", "yaml"], ["--timeout", "x", "status"], ["status", "--x"]],
)
def test_bad_flags_are_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("zeropodctl: ") and err.count("\n") == 1


def test_nonpositive_timeout(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--timeout", "0", "status"])
    assert info.value.code == 2
    assert "--timeout must be positive" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(seconds=5), "5s"),
        (timedelta(minutes=5, seconds=3), "5m3s"),
        (timedelta(hours=2, minutes=7), "2h7m"),
        (timedelta(days=3, hours=4), "3d4h"),
        (timedelta(seconds=-3), "0s"),
    ],
)
def test_age(delta: timedelta, text: str) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    since = (now - delta).isoformat().replace("+00:00", "Z")
    assert age(since, now) == text


def test_age_of_garbage() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert age(None, now) == "?"
    assert age("yesterday", now) == "?"


def test_render_helpers() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    table = status_table([], now)
    assert table.split() == [
        "NAMESPACE",
        "POD",
        "CONTAINER",
        "STATE",
        "SINCE",
        "CHECKPOINT",
        "RESTORE",
        "IMAGE",
        "PORTS",
    ]
    line = event_line(
        {
            "type": "transition",
            "time": "2026-01-01T00:00:00.000Z",
            "namespace": "ns",
            "pod": "p",
            "container": "c",
            "previous": "RUNNING",
            "state": "CHECKPOINTING",
            "reason": "idle",
        }
    )
    assert line == "2026-01-01T00:00:00.000Z  ns/p/c  RUNNING -> CHECKPOINTING  (idle)"


def test_version_of_both_commands(capsys: pytest.CaptureFixture[str]) -> None:
    from zeropod.daemon.main import main as daemon_main
    from zeropod.version import version

    for entry, name in ((daemon_main, "zeropod"), (main, "zeropodctl")):
        with pytest.raises(SystemExit) as info:
            entry(["--version"])
        assert info.value.code == 0
        assert capsys.readouterr().out.strip() == f"{name} {version()}"
    assert version() == "0.1.0"
