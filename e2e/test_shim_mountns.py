"""A zeropod pod's runc shim has a mount namespace of its own (zeropod.shim.mountns).

What an operator would check: a sleep and a wake mount nothing that the node's systemd
sees (it re-reads its whole mount table at every mount event), the container's rootfs is
mounted in the runc shim's namespace instead, a mount made on the node under a
``HostToContainer`` volume still reaches the container, and a ``Bidirectional`` volume,
which could not reach the node from there, is refused with the reason.
"""

from __future__ import annotations

import concurrent.futures
import json
import uuid

from e2e.cri import ContainerSpec, Cri, CriError, wait_for
from e2e.node import Node, runc_shim_pid
from e2e.scaling import NEVER_ON_ITS_OWN, Daemon, client_get, counter_pod

WATCH = """
import json, os, select, sys
ready, stop = sys.argv[1], sys.argv[2]
table = open("/proc/1/mountinfo")
seen = set(table.read().splitlines())
poll = select.poll()
poll.register(table, select.POLLPRI | select.POLLERR)
open(ready, "w").close()
changed = []
while not os.path.exists(stop):
    if poll.poll(50):
        table.seek(0)
        now = set(table.read().splitlines())
        changed += ["+ " + m.split()[4] for m in now - seen]
        changed += ["- " + m.split()[4] for m in seen - now]
        seen = now
print(json.dumps(changed))
"""


def mount_points(node: Node, pid: int | str) -> list[str]:
    table = node.run(["cat", f"/proc/{pid}/mountinfo"], check=True).stdout
    return [line.split()[4] for line in table.splitlines()]


def test_sleep_and_wake_mount_nothing_the_nodes_systemd_sees(
    node: Node, cri: Cri, daemon: Daemon
) -> None:
    with counter_pod(cri, node, daemon, "mountns", NEVER_ON_ITS_OWN) as (running, cid, url):
        shim = runc_shim_pid(node, running.pod.id)
        ns = node.run(["readlink", f"/proc/{shim}/ns/mnt", "/proc/1/ns/mnt"], check=True)
        ours, nodes = ns.stdout.split()
        assert ours != nodes
        own = node.run(["cat", f"/proc/{shim}/mountinfo"], check=True).stdout.splitlines()
        root = next(line for line in own if line.split()[4] == "/")
        assert " master:" in root, root  # a slave of the node's table: receives, sends nothing
        assert any(cid in m and m.endswith("/rootfs") for m in mount_points(node, shim))
        assert not any(cid in m for m in mount_points(node, 1))

        tag = uuid.uuid4().hex[:8]
        ready, stop, probe = f"/run/e2e-watch-{tag}", f"/run/e2e-stop-{tag}", f"/run/e2e-{tag}"
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            watch = pool.submit(node.run, ["python3", "-c", WATCH, ready, stop], timeout=300)
            wait_for(lambda: node.host_path(ready).exists(), 60, what="the watch ready")
            # The watch sees a mount in the node's table (else its silence would prove nothing).
            node.run(["mkdir", "-p", probe], check=True)
            node.run(["mount", "-t", "tmpfs", "e2e", probe], check=True)
            node.run(["umount", probe], check=True)
            daemon.sleep(running.pod.name)
            assert client_get(node, url, timeout=10).bodies() == ["count=1\n"]
            daemon.wait_state(cid, "RUNNING")
            node.run(["touch", stop], check=True)
            result = watch.result(60)
        node.run(["rm", "-rf", ready, stop, probe])
        changed = json.loads(result.stdout)
        assert f"+ {probe}" in changed and f"- {probe}" in changed, changed
        assert [c for c in changed if probe not in c] == []
        assert runc_shim_pid(node, running.pod.id) == shim


def test_a_node_mount_reaches_a_host_to_container_volume(node: Node, cri: Cri) -> None:
    volume = f"/run/e2e-volume-{uuid.uuid4().hex[:8]}"
    node.run(["mkdir", "-p", volume], check=True)
    spec = ContainerSpec("app", "counter", mounts=[(volume, "/volume", "HostToContainer")])
    try:
        with cri.pod(f"volume-{uuid.uuid4().hex[:6]}", [spec]) as running:
            cid = running.containers["app"]
            node.run(["mkdir", "-p", f"{volume}/late"], check=True)
            node.run(["mount", "-t", "tmpfs", "late", f"{volume}/late"], check=True)
            node.run(["sh", "-c", f"echo from-the-node > {volume}/late/file"], check=True)
            code, out, err = cri.exec_sync(cid, ["cat", "/volume/late/file"])
            assert (code, out) == (0, b"from-the-node\n"), err
    finally:
        node.run(["umount", f"{volume}/late"])
        node.run(["rm", "-rf", volume])


def test_a_bidirectional_volume_is_refused_with_why(node: Node, cri: Cri) -> None:
    volume = f"/run/e2e-shared-{uuid.uuid4().hex[:8]}"
    node.run(["mkdir", "-p", volume], check=True)
    spec = ContainerSpec(
        "app", "counter", privileged=True, mounts=[(volume, "/volume", "Bidirectional")]
    )
    try:
        try:
            with cri.pod(f"bidir-{uuid.uuid4().hex[:6]}", [spec]):
                raise AssertionError("a Bidirectional volume started in a zeropod pod")
        except CriError as err:
            assert "mount /volume (rshared): Bidirectional mount propagation" in str(err), err
            assert "ZEROPOD_SHIM_MOUNT_NS=node" in str(err)
    finally:
        node.run(["rm", "-rf", volume])
