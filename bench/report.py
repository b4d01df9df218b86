"""The benchmark's numbers: summaries, measures, the JSON document, the Markdown table, the chart.

Pure functions over plain data (no node, no root), so tests/test_bench_report.py covers them.
A measure compares zeropod with a baseline (raw CRIU through runc, a cold start, the plain runc
handler); each side is summarised as {min, median, max, n}, and ratio_median is zeropod's
median over the baseline's.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

# name -> the targets it is judged by, all of them: (field, comparison, limit); a field with
# a dot reads a side's summary ("zeropod.max"), one without reads the measure ("ratio_p99").
TARGETS: dict[str, tuple[tuple[str, str, float], ...]] = {
    "wake_latency": (("ratio_median", "<=", 1.10),),
    "wake_latency_lazy": (("ratio_median", "<=", 0.5),),
    "checkpoint_time": (("ratio_median", "<=", 1.10),),
    "resets_sleeping": (("zeropod.max", "<=", 0),),
    "resets_during_dump": (("zeropod.max", "<=", 0),),
    "throughput": (("ratio_median", ">=", 0.98), ("pair_spread_pct", "<", 3.0)),
    "footprint": (("zeropod.median", "<=", 15),),
    "soak_resets": (("zeropod.max", "<=", 0),),
    "soak_errors": (("zeropod.max", "<=", 0),),
    "soak_state_lost": (("zeropod.max", "<=", 0),),
    "soak_daemon_fds": (("ratio_median", "<=", 1.10),),
    "soak_daemon_rss": (("ratio_median", "<=", 1.10),),
    "storm_wake_latency": (("p99_vs_single", "<=", 3.0),),
    "density_wake_latency": (("ratio_p99", "<=", 1.2),),
    "density_footprint": (("zeropod.median", "<=", 10),),
    "density_daemon_cpu": (("zeropod.max", "<", 0.2),),
}


def summary(values: Iterable[float], digits: int = 1) -> dict[str, float | int] | None:
    """{min, median, p99, max, n} of VALUES, rounded to DIGITS places; None when there are
    none. p99 is the nearest-rank percentile (the max below 100 values)."""
    data = [float(v) for v in values]
    if not data:
        return None
    return {
        "min": round(min(data), digits),
        "median": round(statistics.median(data), digits),
        "p99": round(_nearest_rank(data, 0.99), digits),
        "max": round(max(data), digits),
        "n": len(data),
    }


def _nearest_rank(data: Sequence[float], fraction: float) -> float:
    ordered = sorted(data)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def p99(values: Iterable[float]) -> float | None:
    """The nearest-rank 99th percentile of VALUES, to 0.1; None when there are none."""
    data = [float(v) for v in values]
    return round(_nearest_rank(data, 0.99), 1) if data else None


def spread_pct(values: Sequence[float]) -> float | None:
    """Half the min-max range of VALUES in percent of their median (the "±" of a row)."""
    if not values or not statistics.median(values):
        return None
    return round(100 * (max(values) - min(values)) / 2 / statistics.median(values), 1)


def ratio_p99(zeropod: Iterable[float], baseline: Iterable[float]) -> float | None:
    """zeropod's p99 over the baseline's, to 3 places; None if either is missing or 0."""
    z, b = p99(zeropod), p99(baseline)
    return round(z / b, 3) if z is not None and b else None


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
    digits: int = 1,
    **extra: Any,
) -> dict[str, Any]:
    """One measure as latest.json holds it (EXTRA: e.g. the baseline's description)."""
    z, b = summary(zeropod, digits), summary(baseline, digits)
    out: dict[str, Any] = {"name": name}
    if size_mb is not None:
        out["size_mb"] = size_mb
    out.update(unit=unit, zeropod=z, baseline=b, ratio_median=ratio(z, b))
    out.update(extra)
    return out


NAMES = {
    "ratio_median": "ratio",
    "ratio_p99": "p99 ratio",
    "p99_vs_single": "p99 / one wake",
    "pair_spread_pct": "pairs ± %",
}


def target_met(m: Mapping[str, Any]) -> bool | None:
    """Whether measure M meets its targets; None when it has none or a number is missing."""
    met = [_met(m, *target) for target in TARGETS.get(m["name"], ())]
    if False in met:
        return False
    if not met or None in met:
        return None
    return True


def _met(m: Mapping[str, Any], field: str, op: str, limit: float) -> bool | None:
    if "." in field:
        side, key = field.split(".")
        value = (m.get(side) or {}).get(key)
    else:
        value = m.get(field)
    if value is None:
        return None
    return {"<=": value <= limit, "<": value < limit, ">=": value >= limit}[op]


def target_text(name: str) -> str:
    return " and ".join(
        f"{NAMES.get(field) or field.split('.')[-1]} {op} {limit:g}"
        for field, op, limit in TARGETS.get(name, ())
    )


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
        ratio_text = _ratio_text(m)
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


def _ratio_text(m: Mapping[str, Any]) -> str:
    """The median ratio, and what else a row is judged by: its p99 ratio, its p99 over one
    wake, or the spread of its paired ratios (throughput)."""
    parts = [] if m.get("ratio_median") is None else [f"{m['ratio_median']:g}"]
    if m.get("ratio_p99") is not None:
        parts.append(f"p99 {m['ratio_p99']:g}")
    if m.get("p99_vs_single") is not None:
        parts.append(f"p99 / one wake {m['p99_vs_single']:g}")
    if m.get("pair_spread_pct") is not None:
        parts.append(f"pairs ±{m['pair_spread_pct']:g} %")
    return "; ".join(parts) or "-"


def compare(before: Mapping[str, Any], after: Mapping[str, Any]) -> str:
    """Before/after of two bench documents, measure by measure (name and size): each side's
    zeropod median (min-max), the change of the median, and each side's ratio."""

    def key(m: Mapping[str, Any]) -> tuple[str, Any]:
        return m["name"], m.get("size_mb")

    old = {key(m): m for m in before["measures"]}
    rows = [
        f"Before: {before.get('machine', {}).get('date', '?')}; "
        f"after: {after.get('machine', {}).get('date', '?')}",
        "",
        "| measure | size MB | unit | before | after | change | ratio before | ratio after |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in after["measures"]:
        b = old.pop(key(m), None)
        was, now = (b or {}).get("zeropod"), m.get("zeropod")
        change = "-"
        if was and now and was["median"]:
            change = f"{100 * (now['median'] - was['median']) / was['median']:+.1f} %"
        rows.append(
            f"| {m['name']} | {m.get('size_mb', '')} | {m['unit']} | {_cell(was)} | "
            f"{_cell(now)} | {change} | {_ratio_text(b) if b else '-'} | {_ratio_text(m)} |"
        )
    for b in old.values():  # measured before only
        rows.append(
            f"| {b['name']} | {b.get('size_mb', '')} | {b['unit']} | {_cell(b.get('zeropod'))} "
            f"| - | - | {_ratio_text(b)} | - |"
        )
    return "\n".join(rows) + "\n"


def wake_steps(doc: Mapping[str, Any]) -> str:
    """Where a wake's time goes (bench.wakesteps), per size: median (min-max) ms per step."""
    kinds = {"wake_latency": "", "wake_latency_lazy": " lazy"}
    wakes = [m for m in doc["measures"] if m["name"] in kinds and m.get("wake_steps")]
    if not wakes:
        return ""
    wakes.sort(key=lambda m: (m["name"] != "wake_latency", m.get("size_mb", 0)))
    columns = [f"{m.get('size_mb', '')} MB{kinds[m['name']]}" for m in wakes]
    rows = [
        "Where a wake goes (ms, from the node's journal; `outside_journal`: the client's "
        "latency minus `total`, i.e. the SYN reaching the daemon's copy of the held socket, "
        "the probe check, and the app's answer after the release)",
        "",
        "| step | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(columns),
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
