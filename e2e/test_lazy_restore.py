"""Lazy restore, as a user sees it: the app answers before its memory is in, and loses none.

A memhog pod holds 300 MB of pseudo-random memory; GET / reads all of it (a checksum), GET
/ping none. Woken by /ping with lazy restores on (the default) it answers while CRIU's page
server still streams the rest; GET / then gives the checksum from before the sleep. With
``disable-lazy-restore`` the same pod restores all memory first.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

from e2e import http
from e2e.cri import ContainerSpec, Cri, RunningPod, wait_for
from e2e.images import APP_PORT
from e2e.node import Node
from e2e.scaling import (
    NEVER_ON_ITS_OWN,
    Daemon,
    annotations,
    client_get,
    ensure_client_netns,
    journal,
)

MEM_MB = 300
LAZY_LOG = "restored lazily"
EAGER = annotations(scaledown_duration="10m", disable_lazy_restore="true")


@contextlib.contextmanager
def memhog_pod(
    cri: Cri, node: Node, daemon: Daemon, prefix: str, pod_annotations: dict[str, str]
) -> Iterator[tuple[RunningPod, str, str]]:
    """A memhog pod of MEM_MB; yields (pod, container id, URL) once it answers."""
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    spec = ContainerSpec("app", "memhog", env={"MEM_MB": str(MEM_MB)})
    with cri.pod(name, [spec], annotations=pod_annotations) as running:
        ensure_client_netns(node)
        cid = running.containers["app"]
        daemon.wait_state(cid, "RUNNING", timeout=60)
        url = http.url(cri.pod_ip(running.pod), APP_PORT)
        wait_for(lambda: client_get(node, url, timeout=30).ok, 60, what=f"{name} answering")
        yield running, cid, url


def shim_lines(node: Node, cid: str) -> list[str]:
    """The shim's journal lines about container CID."""
    return [
        str(e.get("MESSAGE", ""))
        for e in journal(node, f"CONTAINER_ID={cid}")
        if str(e.get("MESSAGE", "")).startswith(f"container {cid}")
    ]


def page_servers(node: Node, cid: str) -> list[str]:
    """Pids of ``criu lazy-pages`` processes serving CID's image."""
    out = node.run(["pgrep", "-f", f"lazy-pages.*{cid}"]).stdout
    return out.split()


def test_a_lazy_wake_answers_then_every_page_comes_back(
    node: Node, cri: Cri, daemon: Daemon
) -> None:
    with memhog_pod(cri, node, daemon, "lazy", NEVER_ON_ITS_OWN) as (running, cid, url):
        before = client_get(node, url, timeout=30).bodies()
        assert before and before[0].startswith(f"size_mb={MEM_MB} checksum="), before
        for _ in range(2):
            daemon.sleep(running.pod.name)
            res = client_get(node, url + "ping", timeout=30)
            assert res.bodies() == [f"size_mb={MEM_MB}\n"], res.describe()
            daemon.wait_state(cid, "RUNNING")
            # every page back, none zero: the checksum over all 300 MB is the same
            assert client_get(node, url, timeout=60).bodies() == before
        wait_for(lambda: not page_servers(node, cid), 30, what="the page server gone")
        lines = shim_lines(node, cid)
        assert sum(LAZY_LOG in line for line in lines) == 2, lines
        assert any("all its memory is in from the image" in line for line in lines), lines
        described = daemon.container(cid)
        assert described["restore_errors"] == 0 and described["page_fetch_failures"] == 0


def test_disable_lazy_restore_copies_all_memory_first(node: Node, cri: Cri, daemon: Daemon) -> None:
    with memhog_pod(cri, node, daemon, "eager", EAGER) as (running, cid, url):
        before = client_get(node, url, timeout=30).bodies()
        daemon.sleep(running.pod.name)
        assert client_get(node, url + "ping", timeout=30).ok
        daemon.wait_state(cid, "RUNNING")
        assert client_get(node, url, timeout=60).bodies() == before
        lines = shim_lines(node, cid)
        assert any(f"container {cid} restored in" in line for line in lines), lines
        assert not any(LAZY_LOG in line for line in lines), lines
