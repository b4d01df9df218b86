"""The memhog wake rows: wake and checkpoint against raw CRIU at one size, lazy and not.

``wake_and_checkpoint`` (lazy restores off: the pod has ``disable-lazy-restore``): per
repetition the pod is slept and woken by ``GET /`` (memhog reads its whole buffer), then raw
``runc`` checkpoints and restores the same image outside containerd. ``lazy_wake`` (lazy
restores on, the default): a second pod woken by ``GET /ping`` (reads none of the buffer),
against raw restore answering the same ``/ping``; after each wake ``GET /`` must return the
checksum from before the sleep.
"""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING

from bench import probes, report, wakesteps
from e2e.scaling import annotations, client_get

if TYPE_CHECKING:
    from bench.run import Bench

EAGER = annotations(scaledown_duration="10m", disable_lazy_restore="true")
PING = b"GET /ping HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
"""memhog's request that reads none of its memory: a small working set (lazy rows)."""
STATS_MS = {"dump": ("freezing_time", "frozen_time", "memdump_time", "memwrite_time")}
STATS_MS["restore"] = ("forking_time", "restore_time")


def wake_and_checkpoint(bench: Bench, size: int) -> None:
    """Lazy restores off: wake (GET /, all memory read), checkpoint, memory freed; then
    the lazy rows (:func:`lazy_wake`) on a second pod."""
    env = {"MEM_MB": str(size)}
    z_wake, z_dump, z_freed, raw_wake, raw_dump, z_restore = [], [], [], [], [], []
    z_stats: list[dict] = []
    raw_stats: list[dict] = []
    z_steps: list[dict[str, float]] = []
    with bench.pod("memhog", env, pod_ann=EAGER) as (running, cid, url):
        for rep in range(1, bench.reps + 1):
            app_pid = bench.daemon.container(cid)["pid"]
            before = probes.pss_mb(bench.node, app_pid) + sum(
                probes.zeropod_pss(bench.node, running.pod.id).values()
            )
            info = bench.sleep(running, cid)
            z_dump.append(info["last_checkpoint_ms"])
            z_stats.append(probes.criu_stats(bench.node, cid))
            after = sum(probes.zeropod_pss(bench.node, running.pod.id).values())
            z_freed.append(before - after)
            z_wake.append(bench.wake(cid, url, z_steps))
            z_restore.append(bench.daemon.container(cid)["last_restore_ms"])
            raw = probes.rawcr(bench.node, "cycle", "--image", "memhog", f"--env=MEM_MB={size}")
            raw_wake.append(raw["restore_answer_ms"])
            raw_dump.append(raw["checkpoint_ms"])
            raw_stats.append(raw["criu"])
            bench.step(
                f"{size} MB rep {rep}/{bench.reps}: wake {z_wake[-1]:.0f} ms vs runc restore "
                f"{raw_wake[-1]:.0f} ms; checkpoint {z_dump[-1]:.0f} ms vs runc checkpoint "
                f"{raw_dump[-1]:.0f} ms; freed {z_freed[-1]:.1f} MB"
            )
    baseline = "runc restore (raw CRIU), until the same request is answered"
    z_crit, raw_crit = criu_medians(z_stats), criu_medians(raw_stats)
    bench.add(
        "wake_latency",
        "ms",
        z_wake,
        raw_wake,
        size,
        baseline_is=baseline,
        zeropod_restore_ms=report.summary(z_restore),
        wake_steps=wakesteps.summaries(z_steps),
        criu_zeropod=z_crit,
        criu_baseline=raw_crit,
    )
    bench.add(
        "checkpoint_time",
        "ms",
        z_dump,
        raw_dump,
        size,
        baseline_is="runc checkpoint",
        criu_zeropod=z_crit,
        criu_baseline=raw_crit,
    )
    bench.add(
        "memory_freed",
        "MB",
        z_freed,
        (),
        size,
        baseline_is="none: app + shims PSS, running minus sleeping",
    )
    lazy_wake(bench, size)


def lazy_wake(bench: Bench, size: int) -> None:
    """Lazy restores on (the default): the first request reads little of the app's
    memory (GET /ping), against raw runc restore answering the same request. After
    each wake GET / must give the checksum from before the sleep: every page came back."""
    env = {"MEM_MB": str(size)}
    z_wake, raw_wake, z_restore = [], [], []
    z_steps: list[dict[str, float]] = []
    with bench.pod("memhog", env) as (running, cid, url):
        before = client_get(bench.node, url, timeout=60).bodies()
        for rep in range(1, bench.reps + 1):
            bench.sleep(running, cid)
            z_wake.append(bench.wake(cid, url.rstrip("/") + "/ping", z_steps))
            z_restore.append(bench.daemon.container(cid)["last_restore_ms"])
            after = client_get(bench.node, url, timeout=60).bodies()
            if after != before:
                raise RuntimeError(f"lazy wake lost memory: {before} before, {after} after")
            raw = probes.rawcr(
                bench.node,
                "cycle",
                "--image",
                "memhog",
                f"--env=MEM_MB={size}",
                f"--send={PING.hex()}",
                f"--expect={b'HTTP/1.1 200'.hex()}",
            )
            raw_wake.append(raw["restore_answer_ms"])
            bench.step(
                f"{size} MB rep {rep}/{bench.reps}: lazy wake (GET /ping) {z_wake[-1]:.0f} ms "
                f"vs runc restore {raw_wake[-1]:.0f} ms; memory intact"
            )
    bench.add(
        "wake_latency_lazy",
        "ms",
        z_wake,
        raw_wake,
        size,
        baseline_is="runc restore (raw CRIU, all memory first), until GET /ping is answered",
        zeropod_restore_ms=report.summary(z_restore),
        wake_steps=wakesteps.summaries(z_steps),
    )


def criu_medians(stats: list[dict]) -> dict[str, float]:
    """Median of each CRIU timing over the runs, in ms (CRIU writes microseconds)."""
    out = {}
    for kind, keys in STATS_MS.items():
        for key in keys:
            values = [s[kind][key] for s in stats if key in s.get(kind, {})]
            if values:
                out[f"{kind}.{key}_ms"] = round(statistics.median(values) / 1000, 1)
    return out
