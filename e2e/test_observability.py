"""What an operator sees of a sleep and a wake: /metrics, zeropodctl and the journal agree.

Metrics are fetched inside the node with curl from the daemon's default address (this node
only) and parsed with prometheus_client's own parser. zeropodctl runs inside the node
(``python3 -m zeropod.cli.main``), as an operator would on the node.
"""

from __future__ import annotations

import concurrent.futures
import json
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from e2e import http
from e2e.cri import Cri, wait_for
from e2e.images import APP_PORT
from e2e.node import Node
from e2e.scaling import (
    Daemon,
    client_get,
    counter_pod,
    journal,
)
from zeropod.contract.protocol import DaemonUnavailable

METRICS_URL = "http://127.0.0.1:9925/metrics"
CLI = ["python3", "-m", "zeropod.cli.main"]

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(node: Node) -> Samples:
    text = node.run(["curl", "-sf", "--max-time", "5", METRICS_URL], check=True).stdout
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def metric(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def ctl(node: Node, *args: str, check: bool = True) -> Any:
    return node.run([*CLI, *args], check=check)


def test_metrics_after_a_sleep_a_probe_and_a_wake(node: Node, cri: Cri, daemon: Daemon) -> None:
    with counter_pod(cri, node, daemon, "metrics") as (running, cid, url):
        labels = {"container": "app", "pod": running.pod.name, "namespace": "default"}
        before = scrape(node)
        assert metric(before, "zeropod_running", **labels) == 1.0
        assert metric(before, "zeropod_checkpoint_duration_seconds_count", **labels) is None

        daemon.sleep(running.pod.name)
        # A kubelet-like probe from the node is answered while the pod sleeps.
        probe = http.get(node, url, headers=["User-Agent: kube-probe/1.31"], timeout=10)
        assert [r.status for r in probe.results] == [200], probe.describe()
        asleep = scrape(node)
        assert metric(asleep, "zeropod_running", **labels) == 0.0
        assert (metric(asleep, "zeropod_sleeping_containers") or 0) >= 1
        assert metric(asleep, "zeropod_probes_answered_total", **labels) == 1.0
        assert metric(asleep, "zeropod_checkpoint_duration_seconds_count", **labels) == 1.0
        image = metric(asleep, "zeropod_checkpoint_image_bytes", **labels)
        rss = metric(asleep, "zeropod_memory_rss_bytes", **labels)
        pss = metric(asleep, "zeropod_memory_pss_bytes", **labels)
        assert image and image > 100_000, image
        assert rss and pss and 0 < pss <= rss, (rss, pss)

        # A real client wakes it: the wake latency is what that client waited.
        assert client_get(node, url, timeout=10).bodies() == ["count=1\n"]
        daemon.wait_state(cid, "RUNNING")
        awake = wait_for(
            lambda: (
                (s := scrape(node))
                and metric(s, "zeropod_wake_latency_seconds_count", **labels)
                and s
            ),
            10,
            what="the wake in the metrics",
        )
        described = daemon.container(cid)
        assert metric(awake, "zeropod_running", **labels) == 1.0
        assert metric(awake, "zeropod_restore_duration_seconds_count", **labels) == 1.0
        assert metric(awake, "zeropod_wake_latency_seconds_count", **labels) == 1.0
        restore_s = metric(awake, "zeropod_restore_duration_seconds_sum", **labels)
        latency_s = metric(awake, "zeropod_wake_latency_seconds_sum", **labels)
        assert restore_s == pytest.approx(described["last_restore_ms"] / 1000)
        assert latency_s is not None and restore_s < latency_s < 10, (restore_s, latency_s)
        checkpoint_s = metric(awake, "zeropod_checkpoint_duration_seconds_sum", **labels)
        assert checkpoint_s == pytest.approx(described["last_checkpoint_ms"] / 1000)
        checkpointed = metric(awake, "zeropod_last_checkpoint_time", **labels)
        restored = metric(awake, "zeropod_last_restore_time", **labels)
        assert checkpointed and restored and checkpointed < restored
        assert metric(awake, "zeropod_checkpoint_errors_total", **labels) == 0.0
        assert metric(awake, "zeropod_restore_errors_total", **labels) == 0.0
        assert described["image_bytes"] == image and described["pss_bytes"] == pss

        # The journal (and so `systemctl status` of the pod's unit) tells the same numbers.
        slept = [
            e
            for e in journal(node, f"POD={running.pod.name}", "STATE=SCALED_DOWN")
            if "IMAGE_BYTES" in e
        ]
        assert slept, "no scaled-down journal entry with the image size"
        assert int(slept[-1]["IMAGE_BYTES"]) == image
        assert float(slept[-1]["CHECKPOINT_MS"]) == described["last_checkpoint_ms"]
        unit = described["unit"]
        status = node.run(["systemctl", "status", "--no-pager", "-n", "50", unit]).stdout
        assert f"image {image / 2**20:.1f} MiB" in status, status
    # Deleted: its series are gone.
    gone = wait_for(
        lambda: (s := scrape(node)) and not any(dict(k[1]).get("pod") == labels["pod"] for k in s),
        15,
        what="no series of the deleted pod",
    )
    assert gone


def test_zeropodctl_status_sleep_wake_and_events(node: Node, cri: Cri, daemon: Daemon) -> None:
    with (
        counter_pod(cri, node, daemon, "ctl-a") as (sleeper, sleeper_cid, _),
        counter_pod(cri, node, daemon, "ctl-b") as (runner, _, _),
    ):
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            follow = pool.submit(
                node.run, ["timeout", "-s", "INT", "20", *CLI, "events"], timeout=40
            )
            # The follower subscribes after it starts; sleep once it is listening.
            wait_for(
                lambda: "zeropod.cli.main events" in node.run(["ps", "-eo", "args"]).stdout,
                10,
                what="zeropodctl events running",
            )
            # A container the daemon does not scale: one line, nothing changes.
            refused = ctl(node, "sleep", runner.pod.name, "sidecar", check=False)
            assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused
            assert "'sidecar' is not a scaled container" in refused.stderr, refused.stderr
            out = ctl(node, "sleep", sleeper.pod.name).stdout
            assert f"default/{sleeper.pod.name} SCALED_DOWN" in out, out

            table = ctl(node, "status").stdout.splitlines()
            header = table[0].split()
            assert header == [
                *("NAMESPACE", "POD", "CONTAINER", "STATE", "SINCE"),
                *("CHECKPOINT", "RESTORE", "IMAGE", "PORTS"),
            ]
            rows = {line.split()[1]: line.split() for line in table[1:]}
            asleep, awake = rows[sleeper.pod.name], rows[runner.pod.name]
            assert asleep[:4] == ["default", sleeper.pod.name, "app", "SCALED_DOWN"]
            assert asleep[5].endswith("ms") and asleep[6] == "-" and asleep[7][-1] in "KMG"
            assert asleep[8] == str(APP_PORT)
            assert awake[:4] == ["default", runner.pod.name, "app", "RUNNING"]
            assert awake[5:8] == ["-", "-", "-"]

            entries = {e["pod"]: e for e in json.loads(ctl(node, "status", "-o", "json").stdout)}
            assert entries[sleeper.pod.name]["state"] == "SCALED_DOWN"
            assert entries[sleeper.pod.name]["image_bytes"] > 100_000
            assert entries[runner.pod.name]["state"] == "RUNNING"

            out = ctl(node, "wake", sleeper.pod.name).stdout
            assert f"default/{sleeper.pod.name} RUNNING" in out, out
            daemon.wait_state(sleeper_cid, "RUNNING", timeout=1)
            events = follow.result(40).stdout
        mine = [line for line in events.splitlines() if f"/{sleeper.pod.name}/app" in line]
        assert any("RUNNING -> CHECKPOINTING" in line for line in mine), events
        assert any("CHECKPOINTING -> SCALED_DOWN" in line for line in mine), events
        assert any("SCALED_DOWN -> RESTORING" in line for line in mine), events
        assert any("RESTORING -> RUNNING" in line for line in mine), events


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["sleep", "no-such-pod"], 1, "no scaled containers"),
        (["wake", "no-such-pod", "-n", "nowhere"], 1, "no scaled containers"),
        (["status", "-o", "yaml"], 2, "invalid choice"),
        (["frobnicate"], 2, "invalid choice"),
        (["--socket", "/run/zeropod/none.sock", "status"], 1, "daemon not reachable"),
    ],
)
def test_zeropodctl_errors_are_one_line(
    node: Node, daemon: Daemon, args: list[str], code: int, says: str
) -> None:
    result = ctl(node, *args, check=False)
    assert result.returncode == code, (result.stdout, result.stderr)
    assert result.stderr.startswith("zeropodctl: ") and result.stderr.count("\n") == 1
    assert says in result.stderr, result.stderr
    assert not result.stdout


def test_zeropodctl_with_the_daemon_stopped(node: Node, daemon: Daemon) -> None:
    node.run(["systemctl", "stop", "zeropod.service"], check=True)
    try:
        result = ctl(node, "--timeout", "2", "status", check=False)
        assert result.returncode == 1, (result.stdout, result.stderr)
        assert result.stderr.count("\n") == 1 and "daemon not reachable" in result.stderr
    finally:
        node.run(["systemctl", "start", "zeropod.service"], check=True)

        def back() -> bool:
            try:
                return daemon.client.status() is not None
            except DaemonUnavailable:
                return False

        wait_for(back, 30, what="the daemon back")
