"""The port holder on the real node: systemd's socket joins a running app's reuseport group.

What the daemon will do before a checkpoint, step by step, with the library modules running in
the node (the checkout is on the node's Python path): find the app's listener through its pid
(zeropod.sockets.listeners), set SO_REUSEPORT on it (zeropod.sockets.reuseport), set
tcp_migrate_req=1 in the pod netns (zeropod.netns.sysctl), start a transient socket unit in
the pod netns on the same address (zeropod.systemd.socket_unit). Then what a user sees: both
sockets listen on the same address, every HTTP request is answered, and once the unit stops
the connections that were waiting in systemd's socket are served by the app, none reset.

The units are `zeropod-test-hold@<instance>.socket`, activating a throwaway template service
installed into the node's /run/systemd/system, so nothing here touches `zeropod@.service`.
"""

from __future__ import annotations

import json
import shlex
import uuid
from collections.abc import Iterator

import pytest

from e2e import http
from e2e.cri import ContainerSpec, Cri, Pod, wait_for
from e2e.images import APP_PORT
from e2e.node import Node
from zeropod._gen.cri.runtime.v1 import api_pb2 as api
from zeropod.systemd.names import instance_name, unit_name

TEMPLATE = "zeropod-test-hold"
TEMPLATE_PATH = f"/run/systemd/system/{TEMPLATE}@.service"
# Stands in for zeropod@.service: takes the activation, closes the listening fd it is handed
# (so systemd's is the last one) and stays up, so the socket does not re-trigger it.
TEMPLATE_UNIT = """\
[Unit]
Description=zeropod e2e stand-in for zeropod@.service (holds no fd)

[Service]
ExecStart=/bin/sh -c 'exec 3>&-; exec sleep infinity'
"""

# Runs in the node: steps 1-3 of the gapless scale-down for one app process; prints JSON.
HOLD = """
import asyncio, json, sys
from zeropod.systemd.manager import Systemd
from zeropod.netns.sysctl import TCP_MIGRATE_REQ, enable_tcp_migrate_req, read_sysctl
from zeropod.sockets.listeners import listeners
from zeropod.sockets.reuseport import set_reuseport
from zeropod.systemd.socket_unit import start_socket_unit

pid, netns, unit, reuseport = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4] == "1"
found = listeners(pid)
before = [set_reuseport(pid, x.fd) for x in found] if reuseport else []
enable_tcp_migrate_req(netns)

async def hold():
    async with await Systemd.connect() as systemd:
        try:
            await start_socket_unit(systemd, unit, found, netns, timeout=10)
            return None
        except Exception as err:
            return f"{type(err).__name__}: {err}"

error = asyncio.run(hold())
print(json.dumps({
    "listeners": [
        {"family": int(x.family), "address": x.address, "port": x.port, "v6only": x.v6only,
         "listen": x.listen_address, "fd": x.fd}
        for x in found
    ],
    "reuseport_before": before,
    "migrate_req": read_sysctl(netns, TCP_MIGRATE_REQ),
    "error": error,
}))
"""

# Runs in the node: stop the socket unit, then the service it may have activated.
RELEASE = """
import asyncio, json, sys
from zeropod.systemd.manager import Systemd
from zeropod.systemd.socket_unit import stop_unit

async def release():
    async with await Systemd.connect() as systemd:
        return [await stop_unit(systemd, name, timeout=10) for name in sys.argv[1:]]

print(json.dumps(asyncio.run(release())))
"""


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def hold_template(node: Node) -> Iterator[str]:
    """Install the stand-in template service in the node; yield the template prefix."""
    script = f"printf %s {shlex.quote(TEMPLATE_UNIT)} > {TEMPLATE_PATH} && systemctl daemon-reload"
    node.run(["sh", "-c", script], check=True)
    yield TEMPLATE
    # Best effort: /run is emptied anyway when the node reboots.
    node.run(["sh", "-c", f"rm -f {TEMPLATE_PATH} && systemctl daemon-reload"])


def pod_netns(cri: Cri, pod: Pod) -> str:
    """The pod's network namespace path in the node (CNI's /var/run/netns/cni-...)."""
    req = api.PodSandboxStatusRequest(pod_sandbox_id=pod.id, verbose=True)
    info = json.loads(cri.call("PodSandboxStatus", req).info["info"])
    (path,) = [
        ns["path"] for ns in info["runtimeSpec"]["linux"]["namespaces"] if ns["type"] == "network"
    ]
    return path


def run_json(node: Node, script: str, *args: str) -> object:
    res = node.run(["python3", "-", *args], input=script, timeout=60)
    assert res.returncode == 0, f"node script failed ({res.returncode}): {res.stderr}"
    return json.loads(res.stdout)


def listen_lines(node: Node, netns: str, port: int) -> list[tuple[int, str]]:
    """(Recv-Q, local address) of every TCP listener on PORT in the netns, via ss."""
    name = netns.rsplit("/", 1)[-1]
    res = node.run(
        ["ip", "netns", "exec", name, "ss", "-ltnH", f"sport = :{port}"], check=True, timeout=30
    )
    return [(int(f[1]), f[3]) for f in (line.split() for line in res.stdout.splitlines())]


def load_state(node: Node, unit: str) -> str:
    res = node.run(["systemctl", "show", "-P", "LoadState", unit], check=True)
    return res.stdout.strip()


@pytest.mark.parametrize(
    ("listen", "held_as"),
    [("::", f"[::]:{APP_PORT}"), ("0.0.0.0", f"0.0.0.0:{APP_PORT}")],
    ids=["dual-stack", "ipv4"],
)
def test_holder_shares_the_apps_port_and_hands_connections_back(
    node: Node, cri: Cri, hold_template: str, listen: str, held_as: str
) -> None:
    pod_name = _name("hold")
    app = ContainerSpec("app", "counter", env={"LISTEN": listen})
    with cri.pod(pod_name, [app]) as running:
        pid = cri.task_pid(running.containers["app"])
        netns = pod_netns(cri, running.pod)
        url = http.url(cri.pod_ip(running.pod), APP_PORT)
        assert http.get(node, url).bodies() == ["count=1\n"]
        instance = instance_name(running.pod.namespace, pod_name)
        sock_unit = unit_name(hold_template, instance, "socket")
        service_unit = unit_name(hold_template, instance, "service")
        try:
            held = run_json(node, HOLD, str(pid), netns, sock_unit, "1")
            assert held["error"] is None, held
            # The counter on "::" has v6only off (both families); on 0.0.0.0 it is IPv4 only.
            assert [(x["listen"], x["v6only"]) for x in held["listeners"]] == [(held_as, False)]
            assert held["reuseport_before"] == [False]
            assert held["migrate_req"] == "1"
            assert load_state(node, sock_unit) == "loaded"

            # Two listeners on exactly the same address: one reuseport group (a holder in
            # another group could not have bound [::]:8080 next to the app at all).
            lines = listen_lines(node, netns, APP_PORT)
            assert len(lines) == 2 and lines[0][1] == lines[1][1], lines

            # Clients while both listen: the kernel spreads them over both sockets. The app
            # answers its share at once; the rest wait in systemd's socket...
            pending = http.start(node, url, count=1, concurrency=20, timeout=30)
            wait_for(
                lambda: pending.done() or any(q for q, _ in listen_lines(node, netns, APP_PORT)),
                20,
                what="connections queued in systemd's socket",
            )
            assert not pending.done(), "every request was answered while systemd listened"
        finally:
            # ...until the unit stops: tcp_migrate_req moves them into the app's queue.
            stopped = run_json(node, RELEASE, sock_unit, service_unit)
        assert stopped[0] is True
        results = pending.result(timeout=60)
        assert len(results.ok) == 20 and not results.errors(), results.describe()
        assert all(b.startswith("count=") for b in results.bodies()), results.bodies()

        wait_for(lambda: load_state(node, sock_unit) == "not-found", 10, what="unit unloaded")
        assert len(listen_lines(node, netns, APP_PORT)) == 1
        # The app goes on counting where it was: 1 + 20 requests so far.
        assert http.get(node, url).bodies() == ["count=22\n"]


def test_holder_without_reuseport_on_the_app_fails_cleanly(
    node: Node, cri: Cri, hold_template: str
) -> None:
    pod_name = _name("noreuse")
    with cri.pod(pod_name, [ContainerSpec("app", "counter")]) as running:
        pid = cri.task_pid(running.containers["app"])
        netns = pod_netns(cri, running.pod)
        sock_unit = unit_name(hold_template, instance_name("default", pod_name), "socket")
        try:
            # The app's socket lacks SO_REUSEPORT: systemd's bind fails, the start job fails,
            # and the failed transient unit is collected, so the name is free again.
            held = run_json(node, HOLD, str(pid), netns, sock_unit, "0")
            assert held["error"] and "JobFailedError" in held["error"], held
            assert "'failed'" in held["error"], held
            wait_for(
                lambda: load_state(node, sock_unit) == "not-found", 10, what="failed unit gone"
            )
            assert len(listen_lines(node, netns, APP_PORT)) == 1
            # With SO_REUSEPORT set the same name can be started right away.
            held = run_json(node, HOLD, str(pid), netns, sock_unit, "1")
            assert held["error"] is None, held
        finally:
            run_json(node, RELEASE, sock_unit)
        wait_for(lambda: load_state(node, sock_unit) == "not-found", 10, what="unit unloaded")
