"""The daemon stopped for five minutes while clients keep arriving at a sleeping pod.

systemd's socket unit keeps holding the pod's port: clients connect and wait in its queue (its
oneshot service, triggered by the first, keeps systemd from re-triggering), and once the daemon
is back it takes its copies of the held socket again, finds them readable and wakes the pod:
every waiting client is answered by the woken app, its state kept.
``ZEROPOD_FAULTS_DAEMON_DOWN`` sets the outage in seconds (default 300, as an operator's
maintenance might last).
"""

from __future__ import annotations

import os
import time

import pytest

from e2e.cri import Cri
from e2e.faults.conftest import Fault
from e2e.node import Node
from e2e.scaling import Daemon, client_get, client_start, counter_pod

OUTAGE = float(os.environ.get("ZEROPOD_FAULTS_DAEMON_DOWN", "300"))
WAVES = 3


def test_daemon_stopped_for_five_minutes(
    node: Node, cri: Cri, daemon: Daemon, fault: Fault, containerd_version: str
) -> None:
    if containerd_version != "2.1":
        pytest.skip("the daemon's outage does not involve containerd: run once, on 2.1")
    row = fault(
        f"daemon down {OUTAGE / 60:g} min",
        f"systemctl stop zeropod for {OUTAGE:g} s while {WAVES} waves of clients arrive",
        "the socket unit holds the port; every client waits and is answered once the daemon "
        "is back, the state kept",
    )
    with counter_pod(cri, node, daemon, "outage") as (running, cid, url):
        first = client_get(node, url)
        daemon.sleep(running.pod.name)
        node.run(["systemctl", "stop", "zeropod.service"], check=True)
        stopped = time.monotonic()
        waiting = []
        try:
            for wave in range(WAVES):
                waiting.append(client_start(node, url, concurrency=3, timeout=OUTAGE + 120))
                pause_until = stopped + (wave + 1) * OUTAGE / WAVES
                while time.monotonic() < pause_until:  # the outage itself, not a sync point
                    time.sleep(min(5.0, max(0.0, pause_until - time.monotonic())))
        finally:
            node.run(["systemctl", "start", "zeropod.service"], check=True)
        down = time.monotonic() - stopped
        results = [w.result(OUTAGE + 300) for w in waiting]
        row.clients(first, *results)
        bodies = sorted(int(b.strip().removeprefix("count=")) for r in results for b in r.bodies())
        for r in results:
            assert not r.errors(), r.describe()
        assert bodies == list(range(2, 2 + 3 * WAVES)), bodies  # the woken app, count kept
        daemon.wait_state(cid, "RUNNING")
    row.seen = (
        f"down {down:.0f} s; all {3 * WAVES} clients answered after, counts 2..{1 + 3 * WAVES}"
    )
    row.kept(True)
