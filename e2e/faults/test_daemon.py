"""The daemon SIGKILLed in the middle of a dump, of a restore, and while ten pods sleep.

systemd restarts it; it asks each shim what is true and systemd which ports it holds, and
acts from there. What a user sees: no client reset, every app's memory kept.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid

from e2e import http
from e2e.cri import ContainerSpec, Cri
from e2e.faults.conftest import Fault
from e2e.faults.inject import criu_steps, kill_daemon
from e2e.images import APP_PORT
from e2e.node import Node
from e2e.scaling import (
    NEVER_ON_ITS_OWN,
    Daemon,
    client_get,
    client_start,
    counter_pod,
    ensure_client_netns,
)
from zeropod.contract.protocol import ControlError, DaemonUnavailable


def sleep_in_background(daemon: Daemon, pod: str) -> threading.Thread:
    """Ask for the sleep without waiting for an answer the killed daemon will never give."""

    def ask() -> None:
        with contextlib.suppress(ControlError, DaemonUnavailable, OSError):
            daemon.sleep(pod)

    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    return thread


def test_daemon_killed_mid_dump(node: Node, cri: Cri, daemon: Daemon, fault: Fault) -> None:
    row = fault(
        "daemon killed mid-dump",
        "SIGKILL of the daemon while CRIU is inside the dump (post-dump)",
        "the shim ends the dump; the restarted daemon waits for it, finds the pod asleep, "
        "its ports held all along: a client arriving meanwhile wakes it with its state",
    )
    with criu_steps(node) as criu, counter_pod(cri, node, daemon, "dkdump") as (running, cid, url):
        first = client_get(node, url)
        criu.plan("post-dump", "pause", 2)
        sleep_in_background(daemon, running.pod.name)
        criu.wait_holding()
        kill_daemon(node)
        assert daemon.state_waiting(cid, 60) == "SCALED_DOWN"
        woken = client_get(node, url, timeout=30)
        row.clients(first, woken)
        assert woken.bodies() == ["count=2\n"], woken.describe()
        daemon.wait_state(cid, "RUNNING")
        row.seen = "restarted daemon: SCALED_DOWN; the next client answered count=2"
        row.kept(True)


def test_daemon_killed_mid_restore(node: Node, cri: Cri, daemon: Daemon, fault: Fault) -> None:
    row = fault(
        "daemon killed mid-restore",
        "SIGKILL of the daemon while CRIU restores (pre-resume), a client waiting",
        "the waiting client answered with the state kept; the pod RUNNING, its ports released",
    )
    with criu_steps(node) as criu, counter_pod(cri, node, daemon, "dkrest") as (running, cid, url):
        first = client_get(node, url)
        daemon.sleep(running.pod.name)
        criu.plan("pre-resume", "pause", 2)
        waiting = client_start(node, url, timeout=60)
        criu.wait_holding()
        kill_daemon(node)
        woken = waiting.result(90)
        row.clients(first, woken)
        assert woken.bodies() == ["count=2\n"], woken.describe()
        daemon.wait_state(cid, "RUNNING", timeout=60)
        after = client_get(node, url)
        row.clients(after)
        assert after.bodies() == ["count=3\n"], after.describe()
        row.seen = "the waiting client answered count=2; RUNNING after the restart"
        row.kept(True)


PODS = 10


def test_daemon_killed_while_ten_pods_sleep(
    node: Node, cri: Cri, daemon: Daemon, fault: Fault
) -> None:
    row = fault(
        f"daemon killed, {PODS} pods asleep",
        f"SIGKILL of the daemon while {PODS} pods sleep",
        "all still SCALED_DOWN after the restart; each wakes on its client with its state",
    )
    with contextlib.ExitStack() as stack:
        pods = []
        for i in range(PODS):
            name = f"web-{i}-{uuid.uuid4().hex[:4]}"
            spec = [ContainerSpec("app", "counter")]
            running = stack.enter_context(cri.pod(name, spec, annotations=NEVER_ON_ITS_OWN))
            pods.append((running, running.containers["app"]))
        ensure_client_netns(node)
        urls = {}
        for running, cid in pods:
            daemon.wait_state(cid, "RUNNING")
            urls[cid] = http.url(cri.pod_ip(running.pod), APP_PORT)
            row.clients(first := client_get(node, urls[cid]))
            assert first.bodies() == ["count=1\n"], first.describe()
            daemon.sleep(running.pod.name)
        kill_daemon(node)
        started = time.monotonic()
        for _, cid in pods:
            assert daemon.state_waiting(cid, 60) == "SCALED_DOWN"
        back = time.monotonic() - started
        answers = [client_start(node, urls[cid], timeout=30) for _, cid in pods]
        for answer in answers:
            woken = answer.result(90)
            row.clients(woken)
            assert woken.bodies() == ["count=2\n"], woken.describe()
        row.seen = f"all {PODS} SCALED_DOWN {back:.1f} s after the kill; all woke with count=2"
        row.kept(True)
