"""A zeropod pod's processes live in the cgroups a runc pod's would, before and after a sleep.

kubelet names a pod's cgroup after its QoS class and uid: with the cgroupfs driver
``/kubepods/besteffort/pod<uid>``, with the systemd driver (kubeadm's default)
``kubepods-besteffort-pod<uid>.slice``, whose containers runc puts in
``cri-containerd-<id>.scope`` only when its options say SystemdCgroup. The zeropod handler
keeps runc's runtime type, so CRI gives it the node's runc options like any runc handler
(the node has a handler pair per driver: runc/zeropod and runc-systemd/zeropod-systemd).
"""

from __future__ import annotations

import uuid

import pytest

from e2e import http
from e2e.cri import ContainerSpec, Cri
from e2e.images import APP_PORT
from e2e.node import Node
from e2e.scaling import NEVER_ON_ITS_OWN, Daemon, client_get, ensure_client_netns

DRIVERS = {
    # driver: (runc handler, zeropod handler, kubelet's cgroup parent for pod uid U)
    "cgroupfs": ("runc", "zeropod", "/kubepods/besteffort/pod{uid}"),
    "systemd": ("runc-systemd", "zeropod-systemd", "kubepods-besteffort-pod{slice_uid}.slice"),
}


def cgroups(node: Node, pid: int, pod_uid: str, container_id: str) -> set[str]:
    """PID's cgroup lines with the pod's uid and the container's id made generic."""
    text = node.run(["cat", f"/proc/{pid}/cgroup"], check=True).stdout
    text = text.replace(pod_uid.replace("-", "_"), "<uid>").replace(pod_uid, "<uid>")
    return set(text.replace(container_id, "<id>").splitlines())


@pytest.mark.parametrize("driver", sorted(DRIVERS))
def test_zeropod_pod_is_in_its_pods_cgroup_like_a_runc_pod(
    node: Node, cri: Cri, daemon: Daemon, driver: str
) -> None:
    runc_handler, zeropod_handler, parent = DRIVERS[driver]
    seen = {}
    for handler in (runc_handler, zeropod_handler):
        pod_uid = str(uuid.uuid4())
        cgroup_parent = parent.format(uid=pod_uid, slice_uid=pod_uid.replace("-", "_"))
        with cri.pod(
            f"cart-{handler}-{pod_uid[:5]}",
            [ContainerSpec("web-1", "counter")],
            namespace="shop",
            runtime_handler=handler,
            annotations=NEVER_ON_ITS_OWN,
            uid=pod_uid,
            cgroup_parent=cgroup_parent,
        ) as running:
            cid = running.containers["web-1"]
            seen[handler] = cgroups(node, cri.task_pid(cid), pod_uid, cid)
            assert any("<uid>" in line and "<id>" in line for line in seen[handler]), seen
            if handler != zeropod_handler:
                continue
            assert seen[zeropod_handler] == seen[runc_handler]
            ensure_client_netns(node)
            url = http.url(cri.pod_ip(running.pod), APP_PORT)
            assert client_get(node, url).bodies() == ["count=1\n"]
            daemon.sleep(running.pod.name, "shop")
            assert client_get(node, url, timeout=10).bodies() == ["count=2\n"]
            info = daemon.wait_state(cid, "RUNNING")
            assert info["cold_starts"] == 0
            # CRI still reports the pid the task started with (containerd records it once); the
            # restored process has the same pid in its namespace but a new one on the node.
            after = cgroups(node, info["pid"], pod_uid, cid)
            assert after == seen[runc_handler], "the restored app left its pod's cgroup"
