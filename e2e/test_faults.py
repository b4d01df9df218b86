"""Faults injected on the real node, and what a user must see after each.

- The interposer of a sleeping pod SIGKILLed: containerd drops the task and tells nobody;
  the daemon notices nothing listens on the shim's socket and forgets the container: no
  image, no socket unit, no held port is left.

A CRIU stuck mid-dump is ended by the shim at its bound (``tests/test_shim_scaling.py``); it
is not injected here yet: SIGSTOP at a random point of a dump is not deterministic (measured:
stopped while CRIU's parasite ran in the app, the app did not answer after the kill in 1 of
2 runs); a CRIU action script that hangs before the freeze would be.
"""

from __future__ import annotations

import uuid

import pytest

from e2e.cri import ContainerSpec, Cri, wait_for
from e2e.node import Node
from e2e.scaling import Daemon, annotations
from zeropod.daemon.adapters.images import IMAGE_ROOT


def interposer_pid(node: Node, pod_id: str) -> int:
    lines = node.run(["ps", "-eo", "pid,args", "--no-headers"], check=True).stdout.splitlines()
    (pid,) = [
        int(line.split()[0])
        for line in lines
        if "zeropod" in line and pod_id in line and "containerd-shim-runc" not in line
    ]
    return pid


def test_a_killed_interposer_leaves_no_image_unit_or_port(
    node: Node, cri: Cri, daemon: Daemon
) -> None:
    name = f"deadshim-{uuid.uuid4().hex[:6]}"
    pod_annotations = annotations(scaledown_duration="10m")
    with cri.pod(name, [ContainerSpec("app", "counter")], annotations=pod_annotations) as running:
        cid = running.containers["app"]
        daemon.wait_state(cid, "RUNNING")
        daemon.sleep(name)
        assert node.run(["test", "-d", f"{IMAGE_ROOT}/{cid}"]).returncode == 0
        # The app's memory on disk is root's alone: 0700 directory, 0600 files.
        modes = node.run(
            ["find", f"{IMAGE_ROOT}/{cid}", "-maxdepth", "1", "-printf", "%m %y %f\\n"],
            check=True,
        ).stdout.split("\n")
        loose = [m for m in modes if m and not m.startswith(("700 d", "600 f"))]
        assert not loose, loose
        node.run(["kill", "-KILL", str(interposer_pid(node, running.pod.id))], check=True)

        def forgotten() -> bool:
            return all(c["id"] != cid for c in daemon.client.status())

        wait_for(forgotten, 30, interval=0.2, what="the daemon to forget the container")
        assert node.run(["test", "-e", f"{IMAGE_ROOT}/{cid}"]).returncode == 1
        units = node.run(["systemctl", "list-units", "--all", "--no-legend", "zeropod@*"])
        assert name not in units.stdout.replace("\\x2d", "-"), units.stdout


@pytest.fixture(autouse=True)
def _no_stopped_criu(node: Node):  # type: ignore[no-untyped-def]
    """A failed test must not leave a stopped CRIU (and a frozen app) for the next one."""
    yield
    node.run(["sh", "-c", "pkill -KILL -x criu || true"])
