"""CRIU killed or hung in the middle of a dump and of a restore.

Held at ``post-dump`` the app is frozen and its image written; at ``pre-resume`` the
restored tree exists but does not run yet. Whatever CRIU does there, the app must come out
running and answering, never frozen, and the image must go once nothing can use it.
"""

from __future__ import annotations

import threading
import time

import pytest

from e2e.cri import Cri
from e2e.faults.conftest import Fault
from e2e.faults.inject import CriuSteps, criu_steps
from e2e.node import Node
from e2e.scaling import Daemon, client_get, counter_pod
from zeropod.contract.protocol import ControlError
from zeropod.daemon.adapters.images import IMAGE_ROOT


def image_exists(node: Node, cid: str) -> bool:
    return node.run(["test", "-e", f"{IMAGE_ROOT}/{cid}"]).returncode == 0


def kill_held_criu(node: Node, criu: CriuSteps) -> None:
    """SIGKILL CRIU once it is held at the planned step."""
    node.run(["kill", "-KILL", str(criu.wait_holding())], check=True)


@pytest.mark.parametrize("how", ["hung", "killed"])
def test_criu_hung_or_killed_mid_dump(
    node: Node, cri: Cri, daemon: Daemon, fault: Fault, how: str
) -> None:
    row = fault(
        f"CRIU {how} mid-dump",
        "CRIU held at post-dump (app frozen, image written)"
        + (", then SIGKILLed" if how == "killed" else ""),
        "sleep fails"
        + (" at the dump's bound" if how == "hung" else "")
        + "; app thawed, RUNNING, serves with its state; no image",
    )
    with criu_steps(node) as criu, counter_pod(cri, node, daemon, "dump") as (running, cid, url):
        first = client_get(node, url)
        assert first.bodies() == ["count=1\n"], first.describe()
        criu.plan("post-dump", "hang")
        started = time.monotonic()
        if how == "killed":
            threading.Thread(target=kill_held_criu, args=(node, criu), daemon=True).start()
        with pytest.raises(ControlError) as failed:
            daemon.sleep(running.pod.name)
        took = time.monotonic() - started
        after = client_get(node, url, timeout=5)
        row.clients(first, after)
        assert after.bodies() == ["count=2\n"], after.describe()
        assert daemon.state(cid) == "RUNNING"
        assert not image_exists(node, cid)
        row.seen = (
            f"sleep failed in {took:.1f} s ({failed.value.code}); RUNNING, next "
            f"{after.bodies()[0].strip()}"
        )
        row.kept(True)


@pytest.mark.parametrize("how", ["hung", "killed"])
def test_criu_hung_or_killed_mid_restore(
    node: Node, cri: Cri, daemon: Daemon, fault: Fault, how: str
) -> None:
    row = fault(
        f"CRIU {how} mid-restore",
        "CRIU held at pre-resume (restored tree not running)"
        + (", then SIGKILLed" if how == "killed" else ""),
        "the restore tried once more from the intact image: the waiting client answered "
        "with the state kept; no image",
    )
    with criu_steps(node) as criu, counter_pod(cri, node, daemon, "restore") as (running, cid, url):
        first = client_get(node, url)
        assert first.bodies() == ["count=1\n"], first.describe()
        daemon.sleep(running.pod.name)
        criu.plan("pre-resume", "hang")
        if how == "killed":
            threading.Thread(target=kill_held_criu, args=(node, criu), daemon=True).start()
        started = time.monotonic()
        woken = client_get(node, url, timeout=60)
        took = time.monotonic() - started
        row.clients(first, woken)
        assert woken.ok, woken.describe()
        daemon.wait_state(cid, "RUNNING")
        assert not image_exists(node, cid)
        body = woken.bodies()[0].strip()
        row.seen = f"answered in {took:.1f} s: {body}"
        row.kept(body == "count=2", "cold start")
        assert body == "count=2"
