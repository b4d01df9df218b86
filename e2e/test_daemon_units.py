"""The daemon as an operator sees it on the node: unit status and journal of a sleeping pod,
zeropodctl inside the node. (A daemon killed while pods sleep is in e2e/faults.)"""

from __future__ import annotations

import subprocess
import time
import uuid

import pytest

from e2e import http
from e2e.cri import ContainerSpec, Cri
from e2e.images import APP_PORT
from e2e.node import NODE_SCRIPTS, Node
from e2e.scaling import (
    CLIENT_NETNS,
    NEVER_ON_ITS_OWN,
    Daemon,
    client_get,
    counter_pod,
    ensure_client_netns,
    journal,
)
from zeropod.contract.protocol import ControlError

pytestmark = pytest.mark.node


def ctl(node: Node, *args: str) -> str:
    return node.run(["python3", "-m", "zeropod.cli.main", *args], check=True).stdout


def test_unit_status_and_journal_tell_the_story(node: Node, cri: Cri, daemon: Daemon) -> None:
    with counter_pod(cri, node, daemon) as (running, cid, url):
        name = running.pod.name
        assert "SCALED_DOWN" in ctl(node, "sleep", name)
        unit = daemon.container(cid)["unit"]
        assert unit == f"zeropod@default_{name.replace('-', chr(92) + 'x2d')}.service"
        status = node.run(["systemctl", "status", "--no-pager", "-n", "20", unit]).stdout
        assert "CHECKPOINTING -> SCALED_DOWN" in status, status
        listening = node.run(["systemctl", "is-active", unit.replace(".service", ".socket")])
        assert listening.stdout.strip() == "active"

        assert client_get(node, url, timeout=10).bodies() == ["count=1\n"]
        daemon.wait_state(cid, "RUNNING")
        assert "RUNNING" in ctl(node, "wake", name)  # already awake: a no-op
        entries = journal(node, f"POD={name}")
        assert {"CONTAINER", "NAMESPACE", "STATE"} <= set(entries[-1])
        assert any("CHECKPOINT_MS" in e for e in entries)
        woke = [e for e in entries if "WAKE_MS" in e]
        assert woke and "RESTORE_MS" in woke[-1] and woke[-1]["OBJECT_SYSTEMD_UNIT"] == unit
        gone = node.run(["systemctl", "is-active", unit.replace(".service", ".socket")])
        assert gone.stdout.strip() != "active"


def test_a_request_from_the_node_that_is_no_probe_wakes_and_is_relayed(
    node: Node, cri: Cri, daemon: Daemon
) -> None:
    with counter_pod(cri, node, daemon) as (running, cid, url):
        assert client_get(node, url).bodies() == ["count=1\n"]
        daemon.sleep(running.pod.name)
        # From the node's own address (like kubelet) but without kube-probe's User-Agent:
        # the daemon accepts it as a possible probe, wakes the pod, then relays it.
        res = http.get(node, url, timeout=15)
        assert res.bodies() == ["count=2\n"], res.describe()
        daemon.wait_state(cid, "RUNNING")
        probe = http.get(node, url, headers=["User-Agent: kube-probe/1.31"])
        assert probe.bodies() == ["count=3\n"]  # awake: the app itself answers


def test_a_refused_dump_leaves_the_pod_running_and_the_ports_released(
    node: Node, cri: Cri, daemon: Daemon
) -> None:
    with counter_pod(cri, node, daemon) as (running, cid, url):
        host, port = url.split("//")[1].rstrip("/").rsplit(":", 1)
        # An open client connection: CRIU refuses to dump a connected TCP socket.
        script = (
            "import socket, sys\n"
            f"s = socket.create_connection(({host!r}, {port}), timeout=5)\n"
            "print('open', flush=True)\n"
            "sys.stdin.read()\n"
            "s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')\n"
            "print(s.recv(4096).decode().splitlines()[-1], flush=True)\n"
        )
        holder = subprocess.Popen(
            [
                str(NODE_SCRIPTS / "run"),
                "ip",
                "netns",
                "exec",
                CLIENT_NETNS,
                "python3",
                "-c",
                script,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
            with pytest.raises(ControlError) as info:
                daemon.sleep(running.pod.name)
            assert info.value.code == "sleep_failed", info.value
            described = daemon.container(cid)
            assert described["state"] == "RUNNING" and described["checkpoint_errors"] == 1
            socket_unit = described["unit"].replace(".service", ".socket")
            active = node.run(["systemctl", "is-active", socket_unit]).stdout.strip()
            assert active != "active"
            out, _ = holder.communicate("go\n", timeout=15)
            assert out.strip() == "count=1", out  # the open connection was never cut
        finally:
            holder.kill()
        assert client_get(node, url).bodies() == ["count=2\n"]


def test_two_scaled_containers_sleep_and_wake_together(
    node: Node, cri: Cri, daemon: Daemon
) -> None:
    containers = [
        ContainerSpec("app", "counter"),
        ContainerSpec("side", "counter", env={"PORT": "8081"}),
    ]
    with cri.pod(f"d2-{uuid.uuid4().hex[:6]}", containers, annotations=NEVER_ON_ITS_OWN) as pod:
        ensure_client_netns(node)
        app, side = pod.containers["app"], pod.containers["side"]
        daemon.wait_state(app, "RUNNING")
        daemon.wait_state(side, "RUNNING")
        ip = cri.pod_ip(pod.pod)
        assert client_get(node, http.url(ip, 8081)).bodies() == ["count=1\n"]
        described = daemon.sleep(pod.pod.name)["pod"]
        assert described["state"] == "SCALED_DOWN"
        assert sorted(described["ports"]) == ["[::]:8080", "[::]:8081"]
        # A client of either container wakes both.
        assert client_get(node, http.url(ip, 8081), timeout=10).bodies() == ["count=2\n"]
        daemon.wait_state(app, "RUNNING")
        assert daemon.state(side) == "RUNNING"
        assert client_get(node, http.url(ip, APP_PORT)).bodies() == ["count=1\n"]


def unit_processes(node: Node, unit: str) -> tuple[str, str]:
    """(SubState, MainPID) of UNIT as systemd shows them."""
    shown = node.run(["systemctl", "show", "-p", "SubState", "-p", "MainPID", unit]).stdout
    values = dict(line.split("=", 1) for line in shown.split())
    return values.get("SubState", "?"), values.get("MainPID", "?")


def test_no_process_stays_up_for_a_sleeping_pod_between_probes(
    node: Node, cri: Cri, daemon: Daemon
) -> None:
    with counter_pod(cri, node, daemon) as (running, cid, url):
        daemon.sleep(running.pod.name)
        unit = daemon.container(cid)["unit"]
        probe = ["User-Agent: kube-probe/1.31"]
        for _ in range(2):
            answered = http.get(node, url, headers=probe)
            assert [r.status for r in answered.results] == [200], answered.describe()
            # The triggered service is a oneshot that stays "active (exited)": no process
            # runs for the sleeping pod; the socket unit keeps listening.
            deadline = time.monotonic() + 15
            while (shown := unit_processes(node, unit))[0] not in ("exited", "dead"):
                assert time.monotonic() < deadline, f"{unit} stays up: {shown}"
                time.sleep(0.2)
            assert shown[1] == "0", f"{unit} has a main process: {shown}"
            socket_unit = unit.replace(".service", ".socket")
            assert node.run(["systemctl", "is-active", socket_unit]).stdout.strip() == "active"
        assert daemon.state(cid) == "SCALED_DOWN"
        assert client_get(node, url, timeout=10).bodies() == ["count=1\n"]
