"""The density run: N pods asleep on one node, what they cost, and N wakes at once.

``make bench``: N = 40; ``make bench-quick``: N = 3. Every pod is a 5 MB memhog slept with
``zeropodctl sleep``. Then, with all of them asleep:

- the PSS of each pod's zeropod processes (interposer + runc shim), and of the daemon;
- the daemon's CPU while nothing happens, in windows of ``WINDOW`` seconds (percent of one
  core, from the nanoseconds each of its threads ran, /proc/PID/task/*/schedstat: utime
  and stime count 10 ms ticks, one tick per 5 s window being 0.2 % already); also, as
  ``awake_pct``, in two windows while the N pods run idle before their sleep (each is
  polled every second then);
- every pod woken at the same moment by one client each (`Bench.wake_all`: one process in
  the client netns, its threads past one barrier), against
  N raw ``runc restore``s of N checkpointed containers started at once (rawcr ``storm``).
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING

from bench import probes, report

if TYPE_CHECKING:
    from bench.run import Bench

WINDOW = 5.0
"""Seconds of one CPU sample of the idle daemon."""


def idle_cpu_percent(bench: Bench, windows: int) -> list[float]:
    """The daemon's CPU in each of WINDOWS windows of WINDOW s, in percent of one core."""
    pid = probes.daemon_pid(bench.node)
    samples = []
    for _ in range(windows):
        used, began = probes.cpu_seconds(bench.node, pid), time.monotonic()
        time.sleep(WINDOW)  # the measurement window itself, not a synchronisation
        used = probes.cpu_seconds(bench.node, pid) - used
        samples.append(100 * used / (time.monotonic() - began))
    return samples


def density(bench: Bench, pods: int, windows: int) -> None:
    with contextlib.ExitStack() as stack:
        running = [stack.enter_context(bench.pod("memhog", {"MEM_MB": "5"})) for _ in range(pods)]
        awake_cpu = idle_cpu_percent(bench, 2)
        bench.step(
            f"density: {pods} pods running, no client: daemon {max(awake_cpu):.2f} % of a "
            "core at most (its idle loops poll each pod every second)"
        )
        for r, cid, _ in running:
            bench.sleep(r, cid)
        per_pod = [sum(probes.zeropod_pss(bench.node, r.pod.id).values()) for r, _, _ in running]
        daemon_mb = probes.daemon_pss(bench.node)
        template_mb = probes.template_pss(bench.node)
        cpu = idle_cpu_percent(bench, windows)
        bench.step(
            f"density: {pods} asleep, {report.summary(per_pod)} MB per pod, daemon "
            f"{daemon_mb:.1f} MB and {max(cpu):.3f} % of a core at most, interposer "
            f"template {template_mb:.1f} MB"
        )
        lat = bench.wake_all([url for _, _, url in running])
        for _, cid, _ in running:
            bench.daemon.wait_state(cid, "RUNNING", timeout=300)
    raw = probes.rawcr(
        bench.node,
        "storm",
        "--image",
        "memhog",
        "--env=MEM_MB=5",
        "--slots",
        str(pods),
        timeout=1200,
    )["latency_ms"]
    raw_ok = [x for x in raw if x is not None]
    bench.step(
        f"density: {len(lat)}/{pods} woken at once, p99 {report.p99(lat)} ms; raw "
        f"{len(raw_ok)}/{pods}, p99 {report.p99(raw_ok)} ms"
    )
    bench.add(
        "density_wake_latency",
        "ms",
        lat,
        raw_ok,
        5,
        pods=pods,
        answered=len(lat),
        answered_baseline=len(raw_ok),
        ratio_p99=report.ratio_p99(lat, raw_ok),
        baseline_is=f"{pods} runc restores at once",
    )
    bench.add(
        "density_footprint",
        "MB",
        per_pod,
        (),
        None,
        pods=pods,
        daemon_mb=round(daemon_mb, 1),
        template_mb=round(template_mb, 1),
        baseline_is="none: PSS of each sleeping pod's interposer + runc shim",
    )
    bench.add(
        "density_daemon_cpu",
        "% of a core",
        cpu,
        (),
        None,
        digits=3,
        pods=pods,
        baseline_is=f"none: the daemon while {pods} pods sleep, {WINDOW:g} s windows",
        awake_pct=report.summary(awake_cpu, 3),
        awake_is=f"the daemon while the {pods} pods ran idle, before their sleep",
    )
