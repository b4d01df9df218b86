"""Every socket zeropod listens on, under idle connections, garbage and a non-root user.

The sockets: the daemon's control socket, the metrics endpoint, and a
pod's interposer sockets (containerd's task API, the runc shim's events, the control socket
the daemon uses). After each fault the pod must still sleep and wake with its state, and the
node hold nothing more than before (the ``fault`` fixture).
"""

from __future__ import annotations

import json

from e2e.cri import Cri
from e2e.faults.conftest import Fault
from e2e.node import Node
from e2e.scaling import CONTROL_SOCKET, Daemon, client_get, counter_pod
from zeropod.shim import paths
from zeropod.ttrpc import server as ttrpc_server

PROBE = "/opt/zeropod/src/e2e/faults/socketprobe.py"
METRICS = "127.0.0.1:9925"
CONTAINERD = "/run/containerd/containerd.sock"
IDLE = 200
KEPT = {"shim events": ttrpc_server.MAX_CONNECTIONS}
"""Sockets that keep up to this many connections open by design (the runc shim's one
long-lived events connection among them); beyond it they close new ones at once."""
IDLE_WAIT = 45.0
"""Seconds the idle connections stay silent: past every socket's idle timeout (30 s)."""


def shim_sockets(sandbox_id: str) -> dict[str, str]:
    """The interposer's sockets of the pod (as the shim names them for its group)."""
    group = paths.GroupPaths.for_group(CONTAINERD, "k8s.io", sandbox_id)
    return {
        "shim task API": str(group.socket),
        "shim events": str(group.events),
        "shim control": str(group.control),
    }


def all_sockets(sandbox_id: str) -> dict[str, str]:
    return {
        "daemon control": CONTROL_SOCKET,
        "metrics": METRICS,
        **shim_sockets(sandbox_id),
    }


def probe(node: Node, *args: str, user: str | None = None, timeout: float = 120) -> dict:
    argv = ["python3", PROBE, *args]
    if user is not None:
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *argv]
    out = node.run(argv, check=True, timeout=timeout).stdout
    return json.loads(out)


def still_sleeps_and_wakes(node: Node, daemon: Daemon, name: str, url: str, count: int) -> None:
    daemon.sleep(name)
    woken = client_get(node, url, timeout=15)
    assert woken.bodies() == [f"count={count}\n"], woken.describe()


def test_two_hundred_idle_connections_on_every_socket(
    node: Node, cri: Cri, daemon: Daemon, fault: Fault
) -> None:
    row = fault(
        f"{IDLE} idle connections",
        f"{IDLE} silent connections to every socket for {IDLE_WAIT:g} s",
        "each socket closes them at its idle timeout, or (ttrpc) keeps at most "
        f"{ttrpc_server.MAX_CONNECTIONS} and closes the rest; status answers meanwhile; "
        "the pod still sleeps and wakes",
    )
    with counter_pod(cri, node, daemon, "idle") as (running, cid, url):
        first = client_get(node, url)
        sockets = all_sockets(running.pod.id)
        del sockets["shim task API"]  # containerd's own connection is long-lived by design
        held = probe(node, "idle", str(IDLE), str(IDLE_WAIT), *sockets.values(), timeout=300)
        assert daemon.container(cid)["state"] == "RUNNING"
        not_closed = {
            name: held["opened"][path] - held["closed"][path]
            for name, path in sockets.items()
            if held["closed"][path] < held["opened"][path] - KEPT.get(name, 0)
        }
        assert not not_closed, json.dumps({"not closed": not_closed, **held})
        still_sleeps_and_wakes(node, daemon, running.pod.name, url, 2)
        row.clients(first)
    row.seen = "closed by the socket of those accepted: " + ", ".join(
        f"{name} {held['closed'][path]}/{held['opened'][path]}" for name, path in sockets.items()
    )
    row.kept(True)


def test_garbage_on_every_socket(node: Node, cri: Cri, daemon: Daemon, fault: Fault) -> None:
    row = fault(
        "garbage on every socket",
        "4 KiB of random bytes, a 70 KB line and a bogus frame on every socket",
        "an error or a closed connection; daemon, shim and pod go on as before",
    )
    with counter_pod(cri, node, daemon, "garbage") as (running, cid, url):
        first = client_get(node, url)
        sockets = all_sockets(running.pod.id)
        seen = probe(node, "garbage", *sockets.values())
        for name, path in sockets.items():
            answer = seen[path]
            assert isinstance(answer, dict), (name, answer)
            assert answer["end"] in ("closed", "reset") or answer["reply"], (name, answer)
        assert daemon.container(cid)["state"] == "RUNNING"
        still_sleeps_and_wakes(node, daemon, running.pod.name, url, 2)
        row.clients(first)
    row.seen = "; ".join(
        f"{name}: {seen[path]['end']}{' with an error' if seen[path]['reply'] else ''}"
        for name, path in sockets.items()
    )
    row.kept(True)


NOBODY = "65534"


def test_a_non_root_user_on_every_socket(
    node: Node, cri: Cri, daemon: Daemon, fault: Fault
) -> None:
    row = fault(
        "non-root local user",
        "uid 65534 connects to every socket and asks for status",
        "refused everywhere but the node-local metrics",
    )
    with counter_pod(cri, node, daemon, "nobody") as (running, _, url):
        first = client_get(node, url)
        sockets = all_sockets(running.pod.id)
        seen = probe(node, "try", *sockets.values(), user=NOBODY)
        assert seen["uid"] == int(NOBODY)
        let_in = {
            name: seen[path]
            for name, path in sockets.items()
            if name != "metrics" and not str(seen[path]).startswith(("refused", "closed"))
        }
        assert not let_in, let_in
        still_sleeps_and_wakes(node, daemon, running.pod.name, url, 2)
        row.clients(first)
    row.seen = "; ".join(  # one line each: a table cell (the metrics answer is HTML)
        f"{name}: {' '.join(str(seen[path]).split())[:40]}" for name, path in sockets.items()
    )
    row.kept(True)
