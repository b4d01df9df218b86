"""Scale to zero and back, as a user sees it: state kept, nothing reset, Kubernetes unaware.

Pods run under the `zeropod` handler through CRI. Real clients send from their own network
namespace on the pod bridge (e2e.scaling); the node's own address is kubelet's, whose probes
must neither wake a pod nor keep it awake. Sleeps are forced through the daemon's control
socket where a test needs one now, or come from idleness with a short scaledown-duration.
"""

from __future__ import annotations

import threading
import uuid

import pytest

from e2e import http
from e2e.cri import ContainerSpec, Cri, wait_for
from e2e.images import APP_PORT
from e2e.node import Node
from e2e.scaling import (
    CLIENT_IP,
    CLIENT_NETNS,
    NEVER_ON_ITS_OWN,
    Daemon,
    annotations,
    client_get,
    client_start,
    counter_pod,
    ensure_client_netns,
    journal,
)

QUICK = annotations(scaledown_duration="2s")


def pid_alive(node: Node, pid: int) -> bool:
    return node.run(["test", "-d", f"/proc/{pid}"]).returncode == 0


def test_memory_state_survives_three_sleeps(node: Node, cri: Cri, daemon: Daemon) -> None:
    with counter_pod(cri, node, daemon, "cycles", NEVER_ON_ITS_OWN) as (running, cid, url):
        assert client_get(node, url).bodies() == ["count=1\n"]
        for cycle in range(3):
            pid = daemon.container(cid)["pid"]
            daemon.sleep(running.pod.name)
            assert daemon.state(cid) == "SCALED_DOWN"
            assert not pid_alive(node, pid), "the app's process is still in memory"
            assert cri.container_state(cid) == "CONTAINER_RUNNING"
            res = client_get(node, url, timeout=10)
            assert res.bodies() == [f"count={cycle + 2}\n"], res.describe()
            daemon.wait_state(cid, "RUNNING")
            assert cri.container_state(cid) == "CONTAINER_RUNNING"


def test_fifty_clients_wake_a_sleeping_pod(node: Node, cri: Cri, daemon: Daemon) -> None:
    with counter_pod(cri, node, daemon, "fifty", NEVER_ON_ITS_OWN) as (running, cid, url):
        daemon.sleep(running.pod.name)
        res = client_get(node, url.replace(":8080/", ":8080/peer"), concurrency=50, timeout=15)
        assert len(res.ok) == 50 and not res.errors(), res.describe()
        # The restored app sees the clients' own address: no proxy in between.
        assert all(CLIENT_IP in body for body in res.bodies()), res.bodies()[:3]
        daemon.wait_state(cid, "RUNNING")


def test_no_request_lost_while_sleeping_under_load(node: Node, cri: Cri, daemon: Daemon) -> None:
    with counter_pod(cri, node, daemon, "load", NEVER_ON_ITS_OWN) as (running, cid, url):
        steady = client_start(node, url, duration=12, interval=0.02, timeout=10)
        bursts = client_start(node, url, duration=12, interval=0.5, concurrency=20, timeout=10)
        worst_ms = 0.0
        for _ in range(3):
            wait_for(lambda: daemon.state(cid) == "RUNNING", 20, what="running again")
            daemon.sleep(running.pod.name)
            info = wait_for(lambda: daemon.state(cid) == "RUNNING" and daemon.container(cid), 20)
            worst_ms = max(worst_ms, info["last_checkpoint_ms"] + info["last_restore_ms"] + 1000.0)
        for load in (steady.result(60), bursts.result(60)):
            assert not load.errors("reset") and not load.errors("refused"), load.describe()
            assert not load.errors(), load.describe()
            slowest = max(r.latency_ms for r in load.results)
            assert slowest <= worst_ms, f"slowest {slowest:.0f} ms > {worst_ms:.0f} ms"


def test_probes_neither_wake_nor_keep_awake(node: Node, cri: Cri, daemon: Daemon) -> None:
    with counter_pod(cri, node, daemon, "probes", QUICK) as (_, cid, url):
        # kubelet's probes come from the node's own address, every second.
        probe_headers = ["User-Agent: kube-probe/1.31"]
        http_probes = http.start(node, url, duration=8, interval=1.0, headers=probe_headers)
        tcp_probes = node_tcp_probes(node, url, seconds=8)
        daemon.wait_state(cid, "SCALED_DOWN", timeout=8)
        asleep_from = len(daemon.container(cid)["history"])
        results = http_probes.result(60)
        tcp_probes.join(60)
        assert not results.errors() and all(r.status == 200 for r in results.results)
        described = daemon.container(cid)
        assert described["state"] == "SCALED_DOWN", described["history"]
        assert len(described["history"]) == asleep_from, "probes woke the pod"


def node_tcp_probes(node: Node, url: str, seconds: int) -> threading.Thread:
    """Connect and close (a TCP probe) every second from the node, in the background."""
    host, port = url.split("//")[1].rstrip("/").rsplit(":", 1)
    script = (
        "import socket, time\n"
        f"end = time.monotonic() + {seconds}\n"
        "while time.monotonic() < end:\n"
        f"    socket.create_connection(({host!r}, {port}), timeout=5).close()\n"
        "    time.sleep(1)\n"
    )
    thread = threading.Thread(target=node.run, args=(["python3", "-c", script],), daemon=True)
    thread.start()
    return thread


def test_open_quiet_connection_keeps_pod_awake(node: Node, cri: Cri, daemon: Daemon) -> None:
    with counter_pod(cri, node, daemon, "open", QUICK) as (_, cid, url):
        host, port = url.split("//")[1].rstrip("/").rsplit(":", 1)
        release = f"/tmp/zp-release-{uuid.uuid4().hex[:8]}"
        script = (
            "import os, socket, time\n"
            f"s = socket.create_connection(({host!r}, {port}), timeout=5)\n"
            "print('open', flush=True)\n"
            f"while not os.path.exists({release!r}):\n"
            "    time.sleep(0.05)\n"
            "s.close()\n"
        )
        holder = threading.Thread(
            target=node.run,
            args=(["ip", "netns", "exec", CLIENT_NETNS, "python3", "-c", script],),
            kwargs={"timeout": 60},
            daemon=True,
        )
        holder.start()
        # Longer than scaledown-duration plus the daemon's polling: it must not sleep.
        with pytest.raises(TimeoutError):
            wait_for(lambda: daemon.state(cid) != "RUNNING", 5, what="a sleep (must not come)")
        node.run(["touch", release], check=True)
        holder.join(30)
        daemon.wait_state(cid, "SCALED_DOWN", timeout=15)


def test_exec_wakes_a_sleeping_container(node: Node, cri: Cri, daemon: Daemon) -> None:
    with counter_pod(cri, node, daemon, "exec", NEVER_ON_ITS_OWN) as (running, cid, _):
        daemon.sleep(running.pod.name)
        code, out, _ = cri.exec_sync(cid, ["echo", "awake"], timeout=30)
        assert (code, out) == (0, b"awake\n")
        assert daemon.state(cid) == "RUNNING"


def test_logs_after_restore_reach_the_cri_log(node: Node, cri: Cri, daemon: Daemon) -> None:
    with counter_pod(cri, node, daemon, "logs", NEVER_ON_ITS_OWN) as (running, cid, url):
        daemon.sleep(running.pod.name)
        marker = uuid.uuid4().hex
        res = client_get(node, url.replace(":8080/", f":8080/log?msg=restored-{marker}"))
        assert res.ok, res.describe()
        log_file = node.host_path(cri.log_file(cid))
        wait_for(lambda: f"restored-{marker}" in log_file.read_text(), 10, what="log line")


def test_only_named_containers_sleep(node: Node, cri: Cri, daemon: Daemon) -> None:
    pod_annotations = {**QUICK, **annotations(container_names="app")}
    containers = [
        ContainerSpec("app", "counter"),
        ContainerSpec("side", "counter", env={"PORT": "8081"}),
    ]
    with cri.pod(f"two-{uuid.uuid4().hex[:6]}", containers, annotations=pod_annotations) as running:
        ensure_client_netns(node)
        app, side = running.containers["app"], running.containers["side"]
        ip = cri.pod_ip(running.pod)
        daemon.wait_state(app, "SCALED_DOWN", timeout=15)
        described = daemon.container(side)
        assert described is None or described["state"] == "RUNNING", described
        res = client_get(node, http.url(ip, 8081))
        assert res.bodies() == ["count=1\n"], res.describe()
        assert daemon.state(app) == "SCALED_DOWN"


def test_disable_checkpointing_stops_and_cold_starts(node: Node, cri: Cri, daemon: Daemon) -> None:
    pod_annotations = {**QUICK, **annotations(disable_checkpointing="true")}
    with counter_pod(cri, node, daemon, "cold", pod_annotations) as (_, cid, url):
        assert client_get(node, url).bodies() == ["count=1\n"]
        daemon.wait_state(cid, "SCALED_DOWN", timeout=15)
        res = client_get(node, url, timeout=15)
        # A cold start: served, but the memory did not survive.
        assert res.bodies() == ["count=1\n"], res.describe()
        assert cri.container_state(cid) == "CONTAINER_RUNNING"


def test_bad_annotation_runs_unscaled_and_says_why(node: Node, cri: Cri, daemon: Daemon) -> None:
    bad = annotations(scaledown_duration="soon")
    name = f"bad-{uuid.uuid4().hex[:6]}"
    with cri.pod(name, [ContainerSpec("app", "counter")], annotations=bad) as running:
        ensure_client_netns(node)
        cid = running.containers["app"]
        described = wait_for(lambda: daemon.container(cid), 15, what="registration")
        assert described["managed"] is False
        url = http.url(cri.pod_ip(running.pod), APP_PORT)
        assert client_get(node, url).bodies() == ["count=1\n"]
        lines = [e.get("MESSAGE", "") for e in journal(node, f"POD={name}")]
        assert any("zeropod.ctrox.dev/scaledown-duration" in m for m in lines), lines
