"""Faults injected on the real node, and what a user must see after each.

- CRIU stuck mid-dump (SIGSTOPped while the app is frozen): past the dump's bound the shim
  kills that CRIU and thaws the app; the sleep fails, the app answers with its state kept,
  and nothing is left behind (no image, no socket unit holding its ports, no CRIU).
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from e2e import http
from e2e.cri import ContainerSpec, Cri
from e2e.images import APP_PORT
from e2e.node import Node
from e2e.scaling import Daemon, annotations, client_get, ensure_client_netns
from zeropod.contract import timeouts
from zeropod.contract.protocol import ControlError
from zeropod.daemon.adapters.images import IMAGE_ROOT

STOP_CRIU = (
    "for i in $(seq 400); do "
    "  for p in $(pgrep -x criu); do kill -STOP $p && echo $p; done | grep . && exit 0; "
    "  sleep 0.01; "
    "done; exit 1"
)


def test_a_dump_stuck_in_criu_thaws_the_app_and_leaves_nothing(
    node: Node, cri: Cri, daemon: Daemon
) -> None:
    name = f"stuckdump-{uuid.uuid4().hex[:6]}"
    pod_annotations = annotations(scaledown_duration="10m")  # sleeps only when forced
    with cri.pod(name, [ContainerSpec("app", "counter")], annotations=pod_annotations) as running:
        ensure_client_netns(node)
        cid = running.containers["app"]
        daemon.wait_state(cid, "RUNNING")
        url = http.url(cri.pod_ip(running.pod), APP_PORT)
        assert client_get(node, url).bodies() == ["count=1\n"]

        outcome: list[BaseException | dict] = []

        def sleep() -> None:
            try:
                outcome.append(Daemon(node, timeout=timeouts.daemon_wait(timeouts.MAX)).sleep(name))
            except BaseException as err:
                outcome.append(err)

        sleeper = threading.Thread(target=sleep)
        sleeper.start()
        stopped = node.run(["sh", "-c", STOP_CRIU], timeout=30)
        assert stopped.returncode == 0, "no CRIU process to stop during the dump"
        started = time.monotonic()
        sleeper.join(timeouts.daemon_wait(timeouts.MAX))
        took = time.monotonic() - started
        assert not sleeper.is_alive()
        (result,) = outcome
        assert isinstance(result, ControlError) and result.code == "sleep_failed", result
        assert took < timeouts.BASE + 15, f"the stuck dump ended after {took:.1f} s"

        # The app was frozen by CRIU; it runs again with its memory.
        assert client_get(node, url, timeout=10).bodies() == ["count=2\n"]
        described = daemon.wait_state(cid, "RUNNING")
        assert described["checkpoint_errors"] == 1, described
        # Nothing left: no CRIU, no image, no socket unit.
        assert node.run(["pgrep", "-x", "criu"]).returncode == 1
        assert node.run(["test", "-e", f"{IMAGE_ROOT}/{cid}"]).returncode == 1
        units = node.run(["systemctl", "list-units", "--all", "--no-legend", "zeropod@*"])
        assert name not in units.stdout.replace("\\x2d", "-"), units.stdout


@pytest.fixture(autouse=True)
def _no_stopped_criu(node: Node):  # type: ignore[no-untyped-def]
    """A failed test must not leave a stopped CRIU (and a frozen app) for the next one."""
    yield
    node.run(["sh", "-c", "pkill -KILL -x criu || true"])
