"""The activated service hands its sockets to the daemon; the daemon answers probes on them
and wakes the pod for anything else."""

from __future__ import annotations

import asyncio
import io
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import pytest
from daemon_fakes import World

from zeropod.activity.sockdiag import Connection, TcpState
from zeropod.activity.sources import LOOPBACK
from zeropod.daemon.adapters.handoff import ActivationServer, HeldSockets
from zeropod.daemon.lifecycle.probes import OK_RESPONSE
from zeropod.daemon.model.phase import Phase
from zeropod.daemon.model.pod import PodKey

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNIT = "zeropod@shop_web\\x2d1.service"


@pytest.fixture
def tmp_short() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="zp-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def listener() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


def spawn_activator(sock: socket.socket, activation: str) -> subprocess.Popen[bytes]:
    """Run the activator as systemd would: the socket as fd 3, LISTEN_PID = its own pid."""
    env = {**os.environ, "PYTHONPATH": REPO, "ZEROPOD_ACTIVATOR_SOCKET": activation}
    script = f'LISTEN_PID=$$ LISTEN_FDS=1 exec {sys.executable} -m zeropod.activator "$0"'
    return subprocess.Popen(
        ["sh", "-c", script, UNIT],
        env=env,
        pass_fds=(3,),
        preexec_fn=lambda: os.dup2(sock.fileno(), 3),
        stderr=subprocess.PIPE,
    )


async def wait_until(predicate, what: str, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def test_activator_hands_over_its_sockets_and_waits(tmp_short: str) -> None:
    path = os.path.join(tmp_short, "activator.sock")
    received: list[HeldSockets] = []

    async def take(held: HeldSockets) -> None:
        received.append(held)

    errors: list[str] = []
    checked: list[tuple[int, str]] = []

    def trust(conn: socket.socket, unit: str) -> None:  # the test process is no unit of root's
        checked.append((conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)[0], unit))

    server = ActivationServer(path, take, errors.append, check_peer=trust)
    await server.start()
    sock = listener()
    activator = spawn_activator(sock, path)
    try:
        await wait_until(lambda: received, "the hand-off")
        assert checked == [(checked[0][0], UNIT)]
        held = received[0]
        assert held.unit == UNIT
        assert [s.getsockname() for s in held.sockets] == [sock.getsockname()]
        assert activator.poll() is None  # stays until the daemon ends the hand-off
        held.close()
        await wait_until(lambda: activator.poll() is not None, "the activator to exit")
        assert activator.returncode == 0, activator.stderr.read() if activator.stderr else ""
    finally:
        activator.kill()
        activator.wait()
        sock.close()
        await server.close()
    assert errors == []


def test_activator_without_sockets_is_a_usage_error() -> None:
    env = {**os.environ, "PYTHONPATH": REPO}
    env.pop("LISTEN_FDS", None)
    result = subprocess.run(
        [sys.executable, "-m", "zeropod.activator", UNIT], env=env, capture_output=True, text=True
    )
    assert result.returncode == 2 and "LISTEN_FDS" in result.stderr


def queued_from(address: str, port: int) -> Connection:
    here = ipaddress.ip_address("127.0.0.1")
    return Connection(TcpState.ESTABLISHED, here, port, ipaddress.ip_address(address), 1, 1)


def client(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(request)
        conn.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := conn.recv(4096):
            data += chunk
        return data


async def test_probes_are_answered_asleep_and_a_real_client_wakes() -> None:
    world = World()
    world.watch.node_networks = lambda: LOOPBACK
    app = world.register()
    key = PodKey.of(app)
    await world.sleep(key, "forced")
    sock = listener()
    sock.setblocking(False)
    port = sock.getsockname()[1]
    held_copy = sock.dup()
    ours, activator_side = socket.socketpair()
    await world.watch.on_activation(HeldSockets(UNIT, [held_copy], ours))
    world.net.queue = [queued_from("127.0.0.1", port)]
    world.life(key).ports.ports = ()  # watch the listener's own port

    probe = b"GET /healthz HTTP/1.1\r\nUser-Agent: kube-probe/1.30\r\n\r\n"
    for _ in range(3):
        assert await asyncio.to_thread(client, port, probe) == OK_RESPONSE
    assert app.phase.phase is Phase.SCALED_DOWN
    assert "restore" not in world.rec.names()
    assert sum("answered a http probe" in m for m in world.captured.messages()) == 3

    world.net.queue = [queued_from("10.88.255.254", port)]
    real = socket.create_connection(("127.0.0.1", port))
    await wait_until(lambda: app.phase.phase is Phase.RUNNING, "the wake")
    assert activator_side.recv(10) == b""  # the hand-off is over
    assert world.life(key).ports.handoff is None
    # The real client was never accepted by the daemon: it waits in the queue for the app.
    accepted, _ = sock.accept()
    accepted.close()
    real.close()
    sock.close()
    activator_side.close()


async def test_a_quiet_hand_off_ends_and_the_pod_stays_asleep(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from zeropod.daemon.lifecycle import watch

    monkeypatch.setattr(watch, "HANDOFF_IDLE", 0.05)
    world = World()
    world.watch.node_networks = lambda: LOOPBACK
    app = world.register()
    key = PodKey.of(app)
    await world.sleep(key, "forced")
    sock = listener()
    ours, activator_side = socket.socketpair()
    await world.watch.on_activation(HeldSockets(UNIT, [sock.dup()], ours))
    await wait_until(lambda: world.life(key).ports.handoff is None, "the hand-off to end")
    assert activator_side.recv(10) == b""  # the activated service may exit now
    assert app.phase.phase is Phase.SCALED_DOWN
    sock.close()
    activator_side.close()


async def test_a_peer_that_is_not_the_named_units_root_process_is_refused(tmp_short: str) -> None:
    """The real check: this test process is not root's zeropod@...service, so its sockets
    are refused, closed, and the refusal is one line."""
    path = os.path.join(tmp_short, "activator.sock")
    received: list[HeldSockets] = []

    async def take(held: HeldSockets) -> None:
        received.append(held)

    errors: list[str] = []
    server = ActivationServer(path, take, errors.append)
    await server.start()
    sock = listener()
    activator = spawn_activator(sock, path)
    try:
        await wait_until(lambda: errors, "the refusal")
        assert received == []
        assert "not root" in errors[0] or f"not in {UNIT}" in errors[0], errors
    finally:
        activator.kill()
        activator.wait()
        sock.close()
        await server.close()


def test_a_non_socket_fd_is_refused_without_leaking_any() -> None:
    from zeropod.daemon.adapters.handoff import _parse

    before = len(os.listdir("/proc/self/fd"))
    for _ in range(40):
        a, b = socket.socketpair()
        r, w = os.pipe()
        fds = [os.dup(a.fileno()), os.dup(r), os.dup(b.fileno())]  # a pipe in the middle
        message = json.dumps({"v": 1, "op": "activated", "unit": UNIT}).encode() + b"\n"
        with pytest.raises(OSError):
            _parse(message, fds, a)
        for x in (a, b):
            x.close()
        os.close(r)
        os.close(w)
    assert len(os.listdir("/proc/self/fd")) == before


@pytest.mark.parametrize(
    ("cgroup", "unit"),
    [
        (
            "12:name=systemd:/system.slice/system-zeropod.slice/zeropod@shop_web\\x2d1.service\n"
            "0::/system.slice/system-zeropod.slice/zeropod@shop_web\\x2d1.service\n",
            "zeropod@shop_web\\x2d1.service",
        ),
        ("0::/system.slice/system-zeropod.slice/zeropod@a_b.service\n", "zeropod@a_b.service"),
        ("0::/user.slice/user-1000.slice/session-3.scope\n", None),
    ],
)
def test_the_unit_a_process_runs_in(tmp_path, monkeypatch, cgroup: str, unit) -> None:
    from zeropod.daemon.adapters import handoff

    real_open = open

    def fake_open(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if path == "/proc/4242/cgroup":
            return io.StringIO(cgroup)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", fake_open)
    assert handoff.unit_of(4242) == unit


def test_the_activator_waits_for_a_daemon_that_is_down(tmp_short: str, capsys) -> None:
    """It never gives up: a socket left readable without its service would be re-triggered
    by systemd until the unit's trigger limit failed it, and the pod could not wake."""
    import threading

    from zeropod.activator.__main__ import connect

    path = os.path.join(tmp_short, "late.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)

    def come_up_later() -> None:
        time.sleep(1.0)  # the daemon, down for a while
        server.bind(path)
        server.listen()

    thread = threading.Thread(target=come_up_later)
    thread.start()
    sock = connect(path, UNIT, notice_every=0.3)
    thread.join()
    assert sock.getpeername() == path
    assert "still waiting for the zeropod daemon" in capsys.readouterr().err
    sock.close()
    server.close()
