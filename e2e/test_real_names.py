"""Realistic names: a container named like most real ones (`web-1`) sleeps and wakes ten
times, its first client served every time, from another pod and from the node.

A hyphen in a container name once became part of a journal field name, which journald
refuses: the wake's watcher died, a relayed client was reset and the pod never slept again.
"""

from __future__ import annotations

import uuid

from e2e import http
from e2e.cri import ContainerSpec, Cri
from e2e.images import APP_PORT
from e2e.node import Node
from e2e.scaling import Daemon, annotations, client_get, ensure_client_netns, journal


def test_hyphenated_container_sleeps_and_wakes_ten_times(
    node: Node, cri: Cri, daemon: Daemon
) -> None:
    name = f"checkout-api-7d9f8b6c5-{uuid.uuid4().hex[:5]}"
    spec = ContainerSpec("web-1", "counter")
    quick = annotations(scaledown_duration="1s")
    with cri.pod(name, [spec], namespace="shop-eu-1", annotations=quick) as running:
        ensure_client_netns(node)
        cid = running.containers["web-1"]
        daemon.wait_state(cid, "RUNNING")
        url = http.url(cri.pod_ip(running.pod), APP_PORT)
        reasons = []
        for cycle in range(10):
            daemon.wait_state(cid, "SCALED_DOWN", timeout=20)
            # Even cycles: a client in another pod's place; odd: the node itself (relayed).
            if cycle % 2 == 0:
                res = client_get(node, url, timeout=10)
            else:
                res = http.get(node, url, timeout=10)
            assert res.bodies() == [f"count={cycle + 1}\n"], (cycle, res.describe())
            woken = daemon.wait_state(cid, "RUNNING", timeout=20)
            reasons.append(woken["history"][-1]["reason"])
        # The kernel's SYN record proved each client from another pod (no walk of the TCP
        # hash); the node's own requests were accepted as possible probes first.
        assert all("a SYN from 10." in r for r in reasons[0::2]), reasons
        assert all("request from the node" in r for r in reasons[1::2]), reasons
        woke = [
            e
            for e in journal(node, f"POD={name}", "CONTAINER=web-1")
            if "woke in" in e.get("MESSAGE", "")
        ]
        assert len(woke) == 10 and all("STEP_RESTORE_MS" in e for e in woke)
        assert not [e for e in journal(node, f"POD={name}") if "INVALID_FIELDS" in e]
        info = daemon.container(cid)
        assert info["cold_starts"] == 0 and info["restore_errors"] == 0
