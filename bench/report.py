"""The benchmark's numbers: summaries, measures, the JSON document, the Markdown table, the chart.

Pure functions over plain data (no node, no root), so tests/test_bench_report.py covers them.
A measure compares zeropod with a baseline (raw CRIU through runc, a cold start, the plain runc
handler); each side is summarised as {min, median, max, n}, and ratio_median is zeropod's
median over the baseline's.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

# name -> (what it is, how it is read: "lower" is better, "higher" is better).
TARGETS = {
    "wake_latency": ("ratio_median", "<=", 1.10),
    "checkpoint_time": ("ratio_median", "<=", 1.10),
    "resets_sleeping": ("zeropod.max", "<=", 0),
    "resets_during_dump": ("zeropod.max", "<=", 0),
    "throughput": ("ratio_median", ">=", 0.98),
    "footprint": ("zeropod.median", "<=", 15),
    "soak_resets": ("zeropod.max", "<=", 0),
    "soak_errors": ("zeropod.max", "<=", 0),
    "soak_state_lost": ("zeropod.max", "<=", 0),
    "soak_daemon_fds": ("ratio_median", "<=", 1.10),
    "soak_daemon_rss": ("ratio_median", "<=", 1.10),
}


def summary(values: Iterable[float]) -> dict[str, float | int] | None:
    """{min, median, max, n} of VALUES, rounded to 0.1; None when there are none."""
    data = [float(v) for v in values]
    if not data:
        return None
    return {
        "min": round(min(data), 1),
        "median": round(statistics.median(data), 1),
        "max": round(max(data), 1),
        "n": len(data),
    }


def ratio(zeropod: Mapping[str, Any] | None, baseline: Mapping[str, Any] | None) -> float | None:
    """zeropod's median over the baseline's, to 3 places; None if either is missing or 0."""
    if not zeropod or not baseline or not baseline["median"]:
        return None
    return round(zeropod["median"] / baseline["median"], 3)


def measure(
    name: str,
    unit: str,
    zeropod: Sequence[float],
    baseline: Sequence[float] = (),
    size_mb: int | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One measure as latest.json holds it (EXTRA: e.g. the baseline's description)."""
    z, b = summary(zeropod), summary(baseline)
    out: dict[str, Any] = {"name": name}
    if size_mb is not None:
        out["size_mb"] = size_mb
    out.update(unit=unit, zeropod=z, baseline=b, ratio_median=ratio(z, b))
    out.update(extra)
    return out


def target_met(m: Mapping[str, Any]) -> bool | None:
    """Whether measure M meets its target; None when it has no target or no number."""
    if m["name"] not in TARGETS:
        return None
    field, op, limit = TARGETS[m["name"]]
    if field == "ratio_median":
        value = m.get("ratio_median")
    else:
        side, key = field.split(".")
        value = (m.get(side) or {}).get(key)
    if value is None:
        return None
    return value <= limit if op == "<=" else value >= limit


def target_text(name: str) -> str:
    if name not in TARGETS:
        return ""
    field, op, limit = TARGETS[name]
    what = "ratio" if field == "ratio_median" else field.split(".")[1]
    return f"{what} {op} {limit:g}"


def document(measures: list[dict[str, Any]], machine: Mapping[str, Any]) -> dict[str, Any]:
    """latest.json: the machine and versions, then the measures."""
    return {"machine": dict(machine), "measures": measures}


def write_json(path: Path, doc: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")


def _cell(side: Mapping[str, Any] | None) -> str:
    if not side:
        return "-"
    return f"{side['median']:g} ({side['min']:g}-{side['max']:g})"


def table(doc: Mapping[str, Any]) -> str:
    """The measures as a Markdown table: median (min-max) per side, ratio, target."""
    rows = [
        "| measure | size MB | unit | zeropod median (min-max) | baseline median (min-max)"
        " | ratio | n | target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in doc["measures"]:
        met = target_met(m)
        target = target_text(m["name"])
        if target:
            target += " " + {True: "✅", False: "❌", None: "?"}[met]
        n = (m["zeropod"] or m["baseline"] or {}).get("n", 0)
        ratio_text = "-" if m["ratio_median"] is None else f"{m['ratio_median']:g}"
        size = m.get("size_mb", "")
        rows.append(
            f"| {m['name']} | {size} | {m['unit']} | {_cell(m['zeropod'])} | "
            f"{_cell(m['baseline'])} | {ratio_text} | {n} | {target} |"
        )
    machine = doc.get("machine", {})
    head = [f"Benchmark of {machine.get('date', '?')}: {machine.get('description', '')}", ""]
    versions = ", ".join(f"{k} {v}" for k, v in machine.get("versions", {}).items())
    if versions:
        head += [versions, ""]
    return "\n".join(head + rows) + "\n"


def wake_steps(doc: Mapping[str, Any]) -> str:
    """Where a wake's time goes (bench.wakesteps), per size: median (min-max) ms per step."""
    wakes = [m for m in doc["measures"] if m["name"] == "wake_latency" and m.get("wake_steps")]
    if not wakes:
        return ""
    sizes = [m.get("size_mb", "") for m in wakes]
    rows = [
        "Where a wake goes (ms, from the node's journal; `outside_journal`: the client's "
        "latency minus `total`, i.e. the SYN reaching the daemon's copy of the held socket, "
        "the probe check, and the app's answer after the release)",
        "",
        "| step | " + " | ".join(f"{s} MB" for s in sizes) + " |",
        "|---|" + "---|" * len(sizes),
    ]
    names = list(dict.fromkeys(n for m in wakes for n in m["wake_steps"]))
    for name in names:
        cells = [_cell(m["wake_steps"].get(name)) for m in wakes]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def chart(doc: Mapping[str, Any], path: Path) -> None:
    """A PNG: zeropod against its baseline for every millisecond measure (median, min-max)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ms = [m for m in doc["measures"] if m["unit"] == "ms" and m["zeropod"]]
    labels = [m["name"] + (f"\n{m['size_mb']} MB" if "size_mb" in m else "") for m in ms]
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(ms)), 4.5))
    width = 0.4
    for offset, side, colour in ((-width / 2, "zeropod", "C0"), (width / 2, "baseline", "C1")):
        xs, med, lo, hi = [], [], [], []
        for i, m in enumerate(ms):
            s = m[side]
            if s:
                xs.append(i + offset)
                med.append(s["median"])
                lo.append(s["median"] - s["min"])
                hi.append(s["max"] - s["median"])
        ax.bar(xs, med, width, yerr=[lo, hi], capsize=3, color=colour, label=side)
    ax.set_xticks(range(len(ms)), labels, fontsize=7)
    ax.set_ylabel("ms (median, min-max)")
    ax.set_title(f"zeropod vs baseline, {doc.get('machine', {}).get('date', '')}")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
