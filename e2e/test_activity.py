"""Idle tracking on the node: what counts as activity on a pod's port, seen through CRI pods.

A counter pod runs under the zeropod runtime; `python3 -m zeropod.activity` (the library's
live monitor, from the checkout mounted in the node) watches its port from inside the node,
printing the tracker's view every 0.2 s. Traffic comes from three places:

- a real client: a second pod (runc handler, only a traffic source) whose busybox `wget`
  reaches the pod IP through ExecSync, or a python client that enters that pod's netns and
  holds a quiet connection open, or sends one keep-alive request and closes first (a
  connection that lives a few ms between two polls and leaves no TIME_WAIT in the pod);
- the node itself, like kubelet: `curl` to the pod IP from the node's netns (its source is
  the CNI bridge address);
- loopback inside the pod: `wget 127.0.0.1` through ExecSync in the counter pod.

Only the first may count. The monitor also lists the connections it ignored, so the tests
show the node's and the loopback's requests were seen and excluded, not missed.

The last test needs root but not the node: it checks the kernel side of `PodSockets` (accept
queue, tcp_info bytes, destroy events) in a private netns of a helper thread on the host.
"""

from __future__ import annotations

import ctypes
import json
import os
import socket
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from e2e.cri import ContainerSpec, Cri, RunningPod, wait_for
from e2e.images import APP_PORT
from e2e.node import NODE_SCRIPTS, Node
from zeropod._gen.cri.runtime.v1 import api_pb2 as api
from zeropod.activity.podsockets import PodSockets, run_in_netns
from zeropod.activity.sockdiag import CLONE_NEWNET, Connection, TcpState

INTERVAL = 0.2
# Polls to wait after a request that must *not* count, so its close has surely been seen.
SETTLE_POLLS = 5

# A client in another pod's netns (argv: netns ip port mode). "hold": connect, stay quiet
# until stdin ends. "request": one keep-alive GET, read the answer, close first.
CLIENT = """
import ctypes, os, socket, sys
netns, ip, port, mode = sys.argv[1:5]
fd = os.open(netns, os.O_RDONLY)
if ctypes.CDLL(None, use_errno=True).setns(fd, 0x40000000) != 0:
    sys.exit(f"setns {netns}: errno {ctypes.get_errno()}")
conn = socket.create_connection((ip, int(port)), timeout=10)
print("connected", *conn.getsockname()[:2], flush=True)
if mode == "hold":
    sys.stdin.read()
else:
    conn.sendall(b"GET / HTTP/1.1\\r\\nHost: x\\r\\nConnection: keep-alive\\r\\n\\r\\n")
    answer = b""
    while b"count=" not in answer:
        answer += conn.recv(4096)
    print(answer.decode().split("\\r\\n")[-1].strip(), flush=True)
conn.close()
"""

# Lists the pod netns's sockets on a port, TIME_WAIT entries included (argv: netns port).
DUMP = """
import sys
from zeropod.activity.podsockets import PodSockets
from zeropod.activity.sockdiag import Connection
with PodSockets(sys.argv[1]) as pod:
    for c in pod.dump():
        if isinstance(c, Connection) and c.local_port == int(sys.argv[2]):
            print(c.describe())
"""

Line = dict[str, Any]


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def netns_of(cri: Cri, pod_id: str) -> str:
    """The pod's network namespace as a path inside the node (via the sandbox's pid)."""
    req = api.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=True)
    info = json.loads(cri.call("PodSandboxStatus", req).info["info"])
    return f"/proc/{info['pid']}/ns/net"


class NodeProcess:
    """A long-running command in the node (node/run) whose stdout lines are collected.

    Closing its stdin ends it (both the monitor and the holding client exit on EOF).
    """

    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen(
            [str(NODE_SCRIPTS / "run"), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self._cond:
                self.lines.append(raw.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_line(self, predicate: Callable[[str], bool], start: int, timeout: float) -> int:
        """Index of the first line from START on that satisfies PREDICATE (TimeoutError)."""
        with self._cond:
            i = start
            ok = self._cond.wait_for(
                lambda: any(predicate(x) for x in self.lines[start:]) or not self._alive(),
                timeout,
            )
            for i in range(start, len(self.lines)):
                if predicate(self.lines[i]):
                    return i
        err = "" if ok else f" in {timeout:g}s"
        raise TimeoutError(f"no matching line{err}; exited={self.proc.poll()}; {self.describe()}")

    def _alive(self) -> bool:
        return self._reader.is_alive()

    def describe(self) -> str:
        tail = self.lines[-3:]
        stderr = ""
        if self.proc.poll() is not None and self.proc.stderr is not None:
            stderr = self.proc.stderr.read()[-500:]
        return f"last lines {tail!r} stderr {stderr!r}"

    def close(self, timeout: float = 15) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._reader.join(5)


class Monitor(NodeProcess):
    """`python3 -m zeropod.activity` on one pod's port, read as JSON lines."""

    def __init__(self, netns: str, interval: float = INTERVAL) -> None:
        args = [netns, f"--ports={APP_PORT}", f"--interval={interval}", "--max-seconds=120"]
        super().__init__(["python3", "-m", "zeropod.activity", *args])

    def doc(self, i: int) -> Line:
        return json.loads(self.lines[i])

    def wait(self, predicate: Callable[[Line], bool], start: int = 0, timeout: float = 15) -> int:
        return self.wait_line(lambda raw: predicate(json.loads(raw)), start, timeout)

    def count(self) -> int:
        with self._cond:
            return len(self.lines)

    def docs(self, start: int, end: int | None = None) -> list[Line]:
        with self._cond:
            return [json.loads(x) for x in self.lines[start:end]]

    def settle(self) -> int:
        """Wait for SETTLE_POLLS more polls; return the index of the last one."""
        n = self.count()
        return self.wait(lambda _: True, n + SETTLE_POLLS - 1)


@pytest.fixture(scope="module")
def pods(cri: Cri) -> Iterator[tuple[RunningPod, RunningPod]]:
    """The watched counter pod (zeropod) and a client pod (runc) as traffic source."""
    app = [ContainerSpec("app", "counter")]
    with (
        cri.pod(_name("activity"), app) as server,
        cri.pod(_name("client"), app, runtime_handler="runc") as client,
    ):
        yield server, client


@pytest.fixture
def monitor(cri: Cri, pods: tuple[RunningPod, RunningPod]) -> Iterator[Monitor]:
    mon = Monitor(netns_of(cri, pods[0].pod.id))
    try:
        mon.wait(lambda d: d["listeners"], 0, timeout=20)  # up, and the app listens
        yield mon
    finally:
        mon.close()


def wget(cri: Cri, container_id: str, ip: str) -> str:
    code, out, err = cri.exec_sync(container_id, ["wget", "-qO-", f"http://{ip}:{APP_PORT}/"])
    assert code == 0, f"wget {ip} in {container_id}: {code} {err!r}"
    return out.decode()


def test_node_and_loopback_traffic_do_not_count(
    node: Node, cri: Cri, pods: tuple[RunningPod, RunningPod], monitor: Monitor
) -> None:
    server, _ = pods
    ip = cri.pod_ip(server.pod)
    start = monitor.wait(lambda d: d["idle_for"] >= 3 * INTERVAL)

    # kubelet's place: the node's own netns, whose source address is the CNI bridge.
    for _ in range(2):
        res = node.run(["curl", "-sS", "--max-time", "10", f"http://{ip}:{APP_PORT}/"])
        assert res.returncode == 0 and res.stdout.startswith("count="), res
    # Loopback inside the pod.
    assert wget(cri, server.containers["app"], "127.0.0.1").startswith("count=")

    end = monitor.settle()
    docs = monitor.docs(start, end + 1)
    ignored = " ".join(c for d in docs for c in d["ignored"])
    assert "127.0.0.1" in ignored, "the loopback request was not seen at all"
    assert any(not a.startswith("127.") for d in docs for a in d["ignored"]), ignored
    assert all(d["reason"] == "tracking started" and not d["open"] for d in docs), docs[-1]
    idle = [d["idle_for"] for d in docs]
    assert idle == sorted(idle) and idle[-1] >= idle[0] + (len(docs) - 2) * INTERVAL, idle


def test_request_from_another_pod_is_activity(
    cri: Cri, pods: tuple[RunningPod, RunningPod], monitor: Monitor
) -> None:
    server, client = pods
    ip, client_ip = cri.pod_ip(server.pod), cri.pod_ip(client.pod)
    start = monitor.wait(lambda d: d["idle_for"] >= 3 * INTERVAL)

    assert wget(cri, client.containers["app"], ip).startswith("count=")

    hit = monitor.wait(lambda d: f" {client_ip}:" in d["reason"], start)
    seen = monitor.doc(hit)
    assert seen["last_activity"] > monitor.doc(start)["last_activity"], seen
    # A finished request leaves no open connection: idle time runs again from it.
    later = monitor.doc(monitor.wait(lambda d: d["idle_for"] >= 3 * INTERVAL, hit))
    assert later["last_activity"] == seen["last_activity"] and not later["open"], later


def test_open_quiet_connection_keeps_it_active(
    cri: Cri, pods: tuple[RunningPod, RunningPod], monitor: Monitor
) -> None:
    server, client = pods
    ip = cri.pod_ip(server.pod)
    start = monitor.wait(lambda d: d["idle_for"] >= 3 * INTERVAL)

    holder = NodeProcess(
        ["python3", "-c", CLIENT, netns_of(cri, client.pod.id), ip, str(APP_PORT), "hold"]
    )
    try:
        holder.wait_line(lambda x: x.startswith("connected"), 0, timeout=20)
        _, client_ip, client_port = holder.lines[0].split()
        peer = f"{client_ip}:{client_port}"
        opened = monitor.wait(lambda d: any(c.startswith(f"{peer} ") for c in d["open"]), start)
        # Quiet for 2 s (the app itself closes silent connections after 10 s): still active.
        t_open = monitor.doc(opened)["t"]
        held = monitor.wait(lambda d: d["t"] >= t_open + 2.0, opened)
        docs = monitor.docs(opened, held + 1)
        assert all(d["idle_for"] == 0 and d["open"] for d in docs), docs
    finally:
        holder.close()

    closed = monitor.wait(lambda d: not d["open"], held)
    after = monitor.wait(lambda d: d["idle_for"] >= 3 * INTERVAL, closed)
    assert monitor.doc(after)["last_activity"] >= t_open + 2.0


def test_short_connection_between_slow_polls_is_seen(
    node: Node, cri: Cri, pods: tuple[RunningPod, RunningPod]
) -> None:
    """Polls 2 s apart; a keep-alive request that the *client* closes first lives a few ms
    and leaves no TIME_WAIT entry in the pod: the kernel's destroy event still reports it."""
    server, client = pods
    ip = cri.pod_ip(server.pod)
    netns = netns_of(cri, server.pod.id)
    mon = Monitor(netns, interval=2.0)
    try:
        first = mon.wait(lambda d: d["listeners"], 0, timeout=20)
        args = [netns_of(cri, client.pod.id), ip, str(APP_PORT), "request"]
        res = node.run(["python3", "-c", CLIENT, *args], timeout=30)
        assert res.returncode == 0, res
        _, client_ip, client_port = res.stdout.splitlines()[0].split()
        assert res.stdout.splitlines()[1].startswith("count="), res.stdout
        peer = f"{client_ip}:{client_port} "

        hit = mon.wait(lambda d: any(c.startswith(peer) for c in d["closed"]), first)
        doc = mon.doc(hit)
        assert doc["last_activity"] > mon.doc(first)["last_activity"], doc
        assert f" {peer}" in doc["reason"], doc
        listed = node.run(["python3", "-c", DUMP, netns, str(APP_PORT)], check=True).stdout
        assert peer not in listed, f"the server closed first after all: {listed}"
    finally:
        mon.close()


# --- the kernel side on the host, without the node: a private netns of a helper thread ---


@pytest.fixture
def private_netns() -> Iterator[str]:
    """A fresh network namespace with loopback up, as a path (/proc/self/fd/N); needs root."""
    if os.geteuid() != 0:
        pytest.skip("needs root (unshare CLONE_NEWNET)")
    iproute = pytest.importorskip("pyroute2").IPRoute
    box: dict[str, Any] = {}

    def enter() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.unshare(CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")
            with iproute() as ipr:
                ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
            box["fd"] = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except Exception as err:  # raised again in the test's thread
            box["error"] = err

    thread = threading.Thread(target=enter)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    try:
        yield f"/proc/self/fd/{box['fd']}"
    finally:
        os.close(box["fd"])


@pytest.mark.parametrize(
    ("listen", "connect", "family"),
    [
        ("127.0.0.1", "127.0.0.1", socket.AF_INET),
        ("::1", "::1", socket.AF_INET6),
        ("::", "127.0.0.1", socket.AF_INET6),  # dual-stack: the client shows as plain IPv4
    ],
    ids=["ipv4", "ipv6", "dual-stack"],
)
def test_pod_sockets_see_queue_bytes_and_freed_connections(
    private_netns: str, listen: str, connect: str, family: int
) -> None:
    server = run_in_netns(
        private_netns,
        lambda: socket.create_server((listen, 0), family=family, dualstack_ipv6=listen == "::"),
    )
    port = server.getsockname()[1]
    with server, PodSockets(private_netns) as pod:
        snap = pod.snapshot({port})
        assert [(li.family, li.local_port, li.accept_queue) for li in snap.listeners] == [
            (family, port, 0)
        ]
        assert snap.connections == snap.closed == ()
        # The raw LISTEN-only dump finds the same socket (and no other: a netns of its own).
        assert pod.listeners() == {li.inode: port for li in snap.listeners}
        assert 0 not in pod.listeners()
        # Nothing accepted since: no dump needed (the PassiveOpens counter did not move).
        assert pod.snapshot({port}).listeners == snap.listeners and pod.dumps == 1

        client = run_in_netns(private_netns, lambda: socket.create_connection((connect, port)))
        client_port = client.getsockname()[1]
        snap = pod.snapshot({port})
        assert [li.accept_queue for li in snap.listeners] == [1]
        (conn,) = snap.connections
        assert (conn.state, str(conn.remote_addr), conn.remote_port) == (
            TcpState.ESTABLISHED,
            connect,
            client_port,
        )

        accepted, _ = server.accept()
        client.sendall(b"0123456789")
        assert accepted.recv(10) == b"0123456789"
        (conn,) = [c for c in pod.dump() if isinstance(c, Connection) and c.local_port == port]
        assert (conn.bytes_received, conn.last_data_recv_ms is not None) == (10, True)
        # Nothing accepted since the last dump: the snapshot lists the open connection as
        # that dump saw it, with no walk of the TCP hash.
        dumps = pod.dumps
        (seen,) = pod.snapshot({port}).connections
        assert (seen.cookie, pod.dumps) == (conn.cookie, dumps)

        client.close()  # the client closes first: the server side leaves no TIME_WAIT
        accepted.close()
        freed: list[Connection] = []

        def seen_freed() -> bool:
            snap = pod.snapshot({port})
            freed.extend(snap.closed)
            return any(c.remote_port == client_port for c in freed) and not snap.connections

        wait_for(seen_freed, 10, 0.05, what="the destroy event of the server-side socket")
        assert all(c.state is TcpState.CLOSE for c in freed), freed
        dumps = pod.dumps
        assert pod.snapshot({port}).connections == () and pod.dumps == dumps  # idle again
