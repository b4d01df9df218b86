"""The soak run: pods slept and woken over and over with clients, state checked every cycle.

``make bench``: 5 counter pods, 200 cycles; ``make bench-quick`` (CI): 2 pods, 10 cycles.
Each cycle sleeps every pod (``zeropodctl sleep``), then wakes each with 5 concurrent
clients, whose answers must continue the pod's count exactly (its memory kept) with no
client reset or refused. The daemon's open fds and RSS are read after the first cycle (which
opens what a pod keeps for its life: its netns view, the D-Bus connection) and after the
last: a leak per cycle shows as growth (target: within 10 %).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from e2e.scaling import client_get

if TYPE_CHECKING:
    from bench.run import Bench

CLIENTS = 5


def daemon_usage(bench: Bench) -> tuple[int, float]:
    """(open fds, RSS in MB) of the node's zeropod daemon."""
    from bench import probes

    pid = probes.daemon_pid(bench.node)
    fds = len(list(bench.node.host_path(f"/proc/{pid}/fd").iterdir()))
    status = bench.node.host_path(f"/proc/{pid}/status").read_text()
    kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return fds, kib / 1024


def soak(bench: Bench, pods: int, cycles: int) -> None:
    """Run the soak and add its measures to BENCH."""
    counts = [0] * pods
    lost = resets = 0
    errors: list[str] = []
    wake_ms: list[float] = []
    with contextlib.ExitStack() as stack:
        running = [stack.enter_context(bench.pod("counter")) for _ in range(pods)]
        for i, (_, _, url) in enumerate(running):  # the pod answered once while starting
            counts[i] = _count_now(bench, url)
        fds_before, rss_before = 0, 0.0
        for cycle in range(1, cycles + 1):
            try:
                for pod, cid, _ in running:
                    bench.sleep(pod, cid)
                for i, (_, cid, url) in enumerate(running):
                    res = client_get(bench.node, url, concurrency=CLIENTS, timeout=30)
                    resets += len(res.errors())
                    got = sorted(_count(body) for body in res.bodies())
                    expected = list(range(counts[i] + 1, counts[i] + 1 + len(got)))
                    if got != expected:
                        lost += 1
                    counts[i] += len(got)
                    wake_ms.append(min(r.latency_ms for r in res.results))
                    bench.daemon.wait_state(cid, "RUNNING", timeout=120)
            except Exception as err:  # counted and reported: the soak goes on
                errors.append(f"cycle {cycle}: {err!r}"[:300])
                bench.step(f"soak cycle {cycle}: {errors[-1]}")
                for i, (_, cid, url) in enumerate(running):  # where each pod stands now
                    with contextlib.suppress(Exception):
                        bench.daemon.wait_state(cid, "RUNNING", timeout=180)
                        counts[i] = _count_now(bench, url)
            if cycle == 1:
                fds_before, rss_before = daemon_usage(bench)
            if cycle % 10 == 0 or cycle == cycles:
                bench.step(
                    f"soak cycle {cycle}/{cycles}: {resets} failed, {lost} state lost, "
                    f"{len(errors)} cycles broken"
                )
        fds_after, rss_after = daemon_usage(bench)
    extra: dict[str, Any] = {"pods": pods, "cycles": cycles, "clients_per_wake": CLIENTS}
    bench.add("soak_errors", "cycles", [len(errors)], (), None, errors=errors, **extra)
    bench.add("soak_resets", "failed requests", [resets], (), None, **extra)
    bench.add("soak_state_lost", "cycles", [lost], (), None, **extra)
    bench.add("soak_wake", "ms", wake_ms, (), None, **extra)
    bench.add(
        "soak_daemon_fds",
        "fds",
        [fds_after],
        [fds_before],
        None,
        baseline_is="after cycle 1",
        **extra,
    )
    bench.add(
        "soak_daemon_rss",
        "MB",
        [rss_after],
        [rss_before],
        None,
        baseline_is="after cycle 1",
        **extra,
    )


def _count(body: str) -> int:
    return int(body.strip().removeprefix("count="))


def _count_now(bench: Bench, url: str) -> int:
    res = client_get(bench.node, url, timeout=30)
    (body,) = res.bodies()
    return _count(body)
