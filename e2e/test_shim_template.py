"""The interposer template on the node: containerd's ``start`` has it fork each pod's
interposer, the pods share its pages, and its death touches no pod.

What an operator sees: ``ps`` names each pod's interposer by its sandbox id; one
``zeropod.shim.template`` per node; killing that template leaves sleeping pods sleeping and
waking with their state, and the next pod gets a new template.
"""

from __future__ import annotations

import signal
import uuid

from e2e import http
from e2e.cri import ContainerSpec, Cri, wait_for
from e2e.images import APP_PORT
from e2e.node import Node
from e2e.scaling import NEVER_ON_ITS_OWN, Daemon, client_get, ensure_client_netns

TEMPLATE = "zeropod.shim.template import main"


def processes(node: Node) -> list[tuple[int, str]]:
    ps = node.run(["ps", "-eo", "pid,args", "--no-headers"], check=True).stdout
    out = []
    for line in ps.splitlines():
        pid, _, args = line.strip().partition(" ")
        out.append((int(pid), args))
    return out


def interposer_of(node: Node, sandbox_id: str) -> int:
    (pid,) = [
        p for p, a in processes(node) if a.startswith(f"zeropod.shim.interposer id={sandbox_id}")
    ]
    return pid


def templates(node: Node) -> list[int]:
    return [p for p, a in processes(node) if TEMPLATE in a]


def shared_kb(node: Node, pid: int) -> int:
    """Pages this process shares with others (the template's, copy-on-write), in kB."""
    text = node.host_path(f"/proc/{pid}/smaps_rollup").read_text()
    fields = {line.split(":")[0]: int(line.split()[1]) for line in text.splitlines()[1:]}
    return fields["Shared_Clean"] + fields["Shared_Dirty"]


def test_pods_interposers_are_forked_and_survive_their_template(
    node: Node, cri: Cri, daemon: Daemon
) -> None:
    suffix = uuid.uuid4().hex[:5]
    spec = ContainerSpec("web-1", "counter")
    with (
        cri.pod(f"shop-{suffix}", [spec], namespace="retail", annotations=NEVER_ON_ITS_OWN) as a,
        cri.pod(f"cart-{suffix}", [spec], namespace="retail", annotations=NEVER_ON_ITS_OWN) as b,
    ):
        ensure_client_netns(node)  # after the first pod: it joins the pods' bridge
        first, second = interposer_of(node, a.pod.id), interposer_of(node, b.pod.id)
        (template,) = templates(node)
        for pid in (first, second):
            # Forked twice: the template is not its parent, and it shares the template's pages.
            assert node.run(["ps", "-o", "ppid=", "-p", str(pid)]).stdout.strip() != str(template)
            assert shared_kb(node, pid) > 8 * 1024, shared_kb(node, pid)

        cid = a.containers["web-1"]
        daemon.wait_state(cid, "RUNNING", timeout=60)
        url = http.url(cri.pod_ip(a.pod), APP_PORT)
        wait_for(lambda: client_get(node, url, timeout=30).ok, 60, what="the pod answers")
        assert client_get(node, url, timeout=30).bodies() == ["count=2\n"]
        daemon.sleep(a.pod.name, "retail")

        node.run(["kill", f"-{signal.SIGKILL.value}", str(template)], check=True)
        wait_for(lambda: templates(node) == [], 10, what="the template gone")
        # The sleeping pod wakes with its state: its interposer is the same process.
        assert client_get(node, url, timeout=30).bodies() == ["count=3\n"]
        assert daemon.wait_state(cid, "RUNNING")["cold_starts"] == 0
        assert interposer_of(node, a.pod.id) == first

        with cri.pod(f"till-{suffix}", [spec], namespace="retail") as c:
            assert templates(node) not in ([], [template])
            assert interposer_of(node, c.pod.id) not in (first, second)
