"""A lazy restore's page server dies while the app's memory still streams in.

A 1 GB memhog pod is woken with lazy restores on; as soon as the shim holds its copies of
the page server's userfaultfds (the restore is done, pages still stream), ``criu
lazy-pages`` is SIGKILLed. The app must never run on a page it did not get: the shim kills
it and starts it cold, the daemon counts a page-fetch failure (and a failed restore and a
cold start) and says so in the journal, containerd still sees the same running task, and
the pod answers again and sleeps and wakes as before.
"""

from __future__ import annotations

import concurrent.futures
import uuid

from e2e import http
from e2e.cri import ContainerSpec, Cri, wait_for
from e2e.faults.conftest import Fault
from e2e.images import APP_PORT
from e2e.node import Node
from e2e.scaling import NEVER_ON_ITS_OWN, Daemon, client_get, ensure_client_netns, journal

MEM_MB = 1024
KILLER = r"""
import os, signal, sys, time
cid = sys.argv[1].encode()
deadline = time.monotonic() + float(sys.argv[2])

def argv(pid):
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().split(b"\0")

def holds_uffd(pid):
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:[userfaultfd]":
                return True
        except OSError:
            pass
    return False

while time.monotonic() < deadline:
    server = shim = None
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            args = argv(pid)
            if b"lazy-pages" in args and any(cid in a for a in args):
                server = int(pid)
            elif any(b"zeropod.shim.interposer" in a for a in args) and holds_uffd(pid):
                shim = int(pid)
        except OSError:
            continue
    if server and shim:
        os.kill(server, signal.SIGKILL)
        print(server)
        sys.exit(0)
    time.sleep(0.001)
sys.exit(1)
"""


def test_a_page_server_killed_mid_stream_kills_and_cold_starts_the_app(
    node: Node, cri: Cri, daemon: Daemon, fault: Fault
) -> None:
    row = fault(
        "page server killed",
        f"`criu lazy-pages` SIGKILLed while a {MEM_MB} MB app's pages stream in",
        "the app is killed before it reads a missing page and started cold; counted and "
        "logged; containerd sees the same running task; the pod answers and sleeps again",
    )
    name = f"lazyfail-{uuid.uuid4().hex[:6]}"
    spec = ContainerSpec("app", "memhog", env={"MEM_MB": str(MEM_MB)})
    with cri.pod(name, [spec], annotations=NEVER_ON_ITS_OWN) as running:
        ensure_client_netns(node)
        cid = running.containers["app"]
        daemon.wait_state(cid, "RUNNING", timeout=60)
        url = http.url(cri.pod_ip(running.pod), APP_PORT)
        wait_for(lambda: client_get(node, url, timeout=60).ok, 90, what=f"{name} answering")
        before = client_get(node, url, timeout=60).bodies()
        patient = Daemon(node, timeout=120)  # a 1 GB dump
        patient.sleep(name)
        old_pid = daemon.container(cid)["pid"]

        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            killer = pool.submit(node.run, ["python3", "-c", KILLER, cid, "60"], timeout=90)
            first = client_get(node, url + "ping", timeout=60)
            killed = killer.result()
        assert killed.returncode == 0, f"no page server caught streaming: {killed.stderr}"

        def counted() -> bool:
            return daemon.container(cid)["page_fetch_failures"] == 1

        wait_for(counted, 60, what="the page-fetch failure counted")
        described = daemon.wait_state(cid, "RUNNING")
        assert described["restore_errors"] == 1 and described["cold_starts"] == 1, described
        assert described["pid"] != old_pid
        # The cold app answers once it listens again (until then the port is free: a
        # client is refused, as when any container restarts). memhog fills its memory the
        # same way, so its checksum is the same too.
        wait_for(lambda: client_get(node, url, timeout=60).ok, 60, what="the cold app answering")
        after = client_get(node, url, timeout=60)
        assert after.bodies() == before, after.describe()
        row.clients(first)
        row.seen = (
            f"page server {killed.stdout.strip()} killed; app pid {old_pid} -> "
            f"{described['pid']} (cold), page_fetch_failures=1; the waking client: "
            f"{'answered' if first.ok else first.errors()[0].error}"
        )
        row.kept(False, "cold start: the memory could not all be served")
        assert cri.container_state(cid) == "CONTAINER_RUNNING"
        messages = [str(e.get("MESSAGE", "")) for e in journal(node, f"POD={name}")]
        assert any("restored memory lost after the wake" in m for m in messages), messages
        shim = [str(e.get("MESSAGE", "")) for e in journal(node, f"CONTAINER_ID={cid}")]
        assert any("page server failed" in m for m in shim), shim

        # Asleep and awake again: the next checkpoint and lazy restore work as usual.
        patient.sleep(name)
        assert client_get(node, url + "ping", timeout=60).ok
        daemon.wait_state(cid, "RUNNING")
        assert client_get(node, url, timeout=60).bodies() == before
