"""Pods and their runtime under faults: a pod deleted while asleep and while waking, its
interposer killed, containerd restarted while pods sleep and while one wakes."""

from __future__ import annotations

import time
from typing import Any

from e2e.cri import Cri, CriError, wait_for
from e2e.faults.conftest import Fault
from e2e.faults.inject import criu_steps
from e2e.node import Node
from e2e.scaling import Daemon, client_get, client_start, counter_pod
from zeropod._gen.cri.runtime.v1 import api_pb2 as api
from zeropod.daemon.adapters.images import IMAGE_ROOT


def leftovers(node: Node, daemon: Daemon, cid: str, pod_id: str, unit: str) -> dict[str, Any]:
    """What is left of a deleted pod: its container in the daemon, units, image, processes,
    cgroups ({} when nothing)."""
    found: dict[str, Any] = {}
    if daemon.container(cid):
        found["daemon"] = daemon.container(cid)
    units = node.run(
        ["systemctl", "list-units", "--all", "--no-legend", unit.replace(".service", ".*")]
    )
    if units.stdout.strip():
        found["units"] = units.stdout
    if node.run(["test", "-e", f"{IMAGE_ROOT}/{cid}"]).returncode == 0:
        found["image"] = f"{IMAGE_ROOT}/{cid}"
    procs = [p for p in node.run(["ps", "-eo", "pid,args"]).stdout.splitlines() if pod_id in p]
    if procs:
        found["processes"] = procs
    cgroups = node.run(["find", "/sys/fs/cgroup", "-name", f"*{cid}*"]).stdout.split()
    if cgroups:
        found["cgroups"] = cgroups
    return found


def test_pod_deleted_while_asleep(node: Node, cri: Cri, daemon: Daemon, fault: Fault) -> None:
    row = fault(
        "pod deleted asleep",
        "StopContainer + RemovePodSandbox of a sleeping pod",
        "the task ends without a restore; nothing left: image, units, processes, cgroups",
    )
    with counter_pod(cri, node, daemon, "delete") as (running, cid, url):
        row.clients(client_get(node, url))
        daemon.sleep(running.pod.name)
        unit = daemon.container(cid)["unit"]
        pod_id = running.pod.id
        started = time.monotonic()
    # cri.pod stopped and removed the sleeping container and its pod.
    wait_for(lambda: not leftovers(node, daemon, cid, pod_id, unit), 15, what="nothing left")
    row.seen = f"nothing left {time.monotonic() - started:.1f} s after the delete"
    row.not_applicable("the pod is deleted")


def test_pod_deleted_while_waking(node: Node, cri: Cri, daemon: Daemon, fault: Fault) -> None:
    row = fault(
        "pod deleted waking",
        "the pod deleted while CRIU restores it (held at pre-resume), a client waiting",
        "the delete waits for the wake, then ends it; nothing left",
    )
    with criu_steps(node) as criu:
        with counter_pod(cri, node, daemon, "delwake") as (running, cid, url):
            row.clients(client_get(node, url))
            daemon.sleep(running.pod.name)
            unit = daemon.container(cid)["unit"]
            pod_id = running.pod.id
            criu.plan("pre-resume", "pause", 2)
            waiting = client_start(node, url, timeout=30)
            criu.wait_holding()
            started = time.monotonic()
        # cri.pod stopped and removed it, the restore still running.
        deleted = time.monotonic() - started
        waiting.result(60)  # its pod is gone: whatever it got, it was not left hanging
        wait_for(lambda: not leftovers(node, daemon, cid, pod_id, unit), 30, what="nothing left")
    row.seen = f"deleted in {deleted:.1f} s; nothing left"
    row.not_applicable("the pod is deleted")


def interposer_pid(node: Node, pod_id: str) -> int:
    lines = node.run(["ps", "-eo", "pid,args", "--no-headers"], check=True).stdout.splitlines()
    (pid,) = [
        int(line.split()[0])
        for line in lines
        if "zeropod" in line and pod_id in line and "containerd-shim-runc" not in line
    ]
    return pid


def test_interposer_killed_while_asleep(node: Node, cri: Cri, daemon: Daemon, fault: Fault) -> None:
    row = fault(
        "interposer killed",
        "SIGKILL of a sleeping pod's interposer (containerd drops the task)",
        "the daemon sees its shim gone and forgets the container: no image, unit or port left",
    )
    with counter_pod(cri, node, daemon, "deadshim") as (running, cid, url):
        row.clients(client_get(node, url))
        daemon.sleep(running.pod.name)
        unit = daemon.container(cid)["unit"]
        # The app's memory on disk is root's alone: 0700 directory, 0600 files.
        modes = node.run(
            ["find", f"{IMAGE_ROOT}/{cid}", "-maxdepth", "1", "-printf", "%m %y %f\\n"],
            check=True,
        ).stdout.split("\n")
        loose = [m for m in modes if m and not m.startswith(("700 d", "600 f"))]
        assert not loose, loose
        node.run(["kill", "-KILL", str(interposer_pid(node, running.pod.id))], check=True)
        started = time.monotonic()
        wait_for(lambda: daemon.container(cid) is None, 30, interval=0.2, what="forgotten")
        forgotten = time.monotonic() - started
        # containerd drops the tasks (the app's and the sandbox's: one interposer served
        # both) once it sees their shim gone; the pod's clean-up needs that first.
        wait_for(
            lambda: (
                cri.container_state(cid) != "CONTAINER_RUNNING"
                and cri.pod_status(running.pod).state == api.PodSandboxState.SANDBOX_NOTREADY
            ),
            60,
            interval=0.2,
            what="containerd dropping the tasks",
        )
        assert node.run(["test", "-e", f"{IMAGE_ROOT}/{cid}"]).returncode == 1
        units = node.run(["systemctl", "list-units", "--all", "--no-legend", unit[:-8] + ".*"])
        assert not units.stdout.strip(), units.stdout
        # containerd cleans up after a dead shim in its own time (the sandbox's task too):
        # until then removing the pod fails, and kubelet retries; so does this test.
        wait_for(lambda: not cri.cleanup(running.pod, [cid]), 60, interval=0.5, what="pod removed")
    row.seen = f"forgotten {forgotten:.1f} s after the kill; image and unit gone"
    row.not_applicable("the container died with its shim")


def running_in_cri(cri: Cri, cid: str) -> bool:
    try:
        return cri.container_state(cid) == "CONTAINER_RUNNING"
    except CriError:  # containerd still restarting
        return False


def test_containerd_restarted_while_asleep(
    node: Node, cri: Cri, daemon: Daemon, fault: Fault
) -> None:
    row = fault(
        "containerd restarted, asleep",
        "systemctl restart containerd while the pod sleeps",
        "CRI still says running; the next client wakes it with its state",
    )
    with counter_pod(cri, node, daemon, "ctrd") as (running, cid, url):
        first = client_get(node, url)
        daemon.sleep(running.pod.name)
        node.run(["systemctl", "restart", "containerd"], check=True)
        wait_for(lambda: running_in_cri(cri, cid), 30, what="CRI answers, the container running")
        woken = client_get(node, url, timeout=15)
        row.clients(first, woken)
        assert woken.bodies() == ["count=2\n"], woken.describe()
        assert cri.container_state(cid) == "CONTAINER_RUNNING"
    row.seen = "CONTAINER_RUNNING throughout; woke with count=2"
    row.kept(True)


def test_containerd_restarted_while_waking(
    node: Node, cri: Cri, daemon: Daemon, fault: Fault
) -> None:
    row = fault(
        "containerd restarted, waking",
        "systemctl restart containerd while CRIU restores (held at pre-resume), a client waiting",
        "the restore completes; the client answered with the state kept; CRI says running",
    )
    with criu_steps(node) as criu, counter_pod(cri, node, daemon, "ctrdw") as (running, cid, url):
        first = client_get(node, url)
        daemon.sleep(running.pod.name)
        criu.plan("pre-resume", "pause", 2)
        waiting = client_start(node, url, timeout=30)
        criu.wait_holding()
        node.run(["systemctl", "restart", "containerd"], check=True)
        woken = waiting.result(60)
        row.clients(first, woken)
        assert woken.bodies() == ["count=2\n"], woken.describe()
        wait_for(lambda: running_in_cri(cri, cid), 30, what="CRI answers, the container running")
        daemon.wait_state(cid, "RUNNING")
        again = client_get(node, url)
        row.clients(again)
        assert again.bodies() == ["count=3\n"], again.describe()
    row.seen = "the client answered count=2; CONTAINER_RUNNING after the restart"
    row.kept(True)
