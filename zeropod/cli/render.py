"""Turn the daemon's status entries and events into text for humans."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

COLUMNS = (
    "NAMESPACE",
    "POD",
    "CONTAINER",
    "STATE",
    "SINCE",
    "CHECKPOINT",
    "RESTORE",
    "IMAGE",
    "PORTS",
)


def status_table(containers: Sequence[dict[str, Any]], now: datetime) -> str:
    """A fixed-width table with one row per container (no trailing newline)."""
    rows = [COLUMNS]
    for entry in containers:
        state = str(entry.get("state", "?"))
        if not entry.get("managed", False):
            state += " (unmanaged)"
        elif isinstance(entry.get("sleep_backoff"), dict):
            state += " (sleep failing)"
        ports = ",".join(str(p) for p in entry.get("ports") or ()) or "-"
        rows.append(
            (
                str(entry.get("namespace", "?")),
                str(entry.get("pod", "?")),
                str(entry.get("container", "?")),
                state,
                age(entry.get("since"), now),
                millis(entry.get("last_checkpoint_ms")),
                millis(entry.get("last_restore_ms")),
                size(entry.get("image_bytes")),
                ports,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join([line.rstrip() for line in lines] + backoff_lines(containers, now))


def backoff_lines(containers: Sequence[dict[str, Any]], now: datetime) -> list[str]:
    """One line per pod whose sleeps fail: how often, why, and when it tries next."""
    lines: list[str] = []
    seen: set[tuple[str, str]] = set()
    for entry in containers:
        backoff = entry.get("sleep_backoff")
        pod = (str(entry.get("namespace", "?")), str(entry.get("pod", "?")))
        if not isinstance(backoff, dict) or pod in seen:
            continue
        seen.add(pod)
        failures = backoff.get("failures")
        when = until(backoff.get("next_try"), now)
        lines.append(
            f"{pod[0]}/{pod[1]}: sleep failed {failures}x in a row, next try {when}: "
            f"{backoff.get('reason')}"
        )
    return ["", *lines] if lines else []


def until(moment: object, now: datetime) -> str:
    """How far ahead the ISO timestamp ``moment`` is (``in 4m10s``), or ``now`` when past."""
    if not isinstance(moment, str):
        return "?"
    try:
        then = datetime.fromisoformat(moment)
    except ValueError:
        return "?"
    if then <= now:
        return "now"
    return "in " + age(now.isoformat(), then)


def millis(value: object) -> str:
    """A duration in milliseconds as ``180ms``, or ``-`` when there is none yet."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-"
    return f"{value:.0f}ms"


def size(value: object) -> str:
    """A byte count as ``812K``, ``14.2M``, ``1.3G``, or ``-`` when there is none."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return "-"
    if value < 1024:
        return f"{value:.0f}B"
    for unit in ("K", "M", "G"):
        value /= 1024
        if value < 1024 or unit == "G":
            return f"{value:.0f}{unit}" if value >= 100 else f"{value:.1f}{unit}"
    return "-"


def age(since: object, now: datetime) -> str:
    """How long ago the ISO timestamp ``since`` was, e.g. ``42s``, ``5m3s``, ``2h7m``, ``3d4h``."""
    if not isinstance(since, str):
        return "?"
    try:
        then = datetime.fromisoformat(since)
    except ValueError:
        return "?"
    seconds = max(0, int((now - then).total_seconds()))
    minutes, secs = divmod(seconds, 60)
    hours, mins = divmod(minutes, 60)
    days, hrs = divmod(hours, 24)
    if days:
        return f"{days}d{hrs}h"
    if hours:
        return f"{hours}h{mins}m"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def event_line(event: dict[str, Any]) -> str:
    """One event as a line: time, namespace/pod/container, what happened, why."""
    who = f"{event.get('namespace')}/{event.get('pod')}/{event.get('container')}"
    kind = event.get("type")
    state = event.get("state")
    if kind == "transition":
        what = f"{event.get('previous')} -> {state}"
    elif kind == "registered":
        what = f"registered {state}" + ("" if event.get("managed") else " (unmanaged)")
    else:
        what = f"{kind} {state}"
    reason = event.get("reason")
    return f"{event.get('time')}  {who}  {what}" + (f"  ({reason})" if reason else "")


def pod_summary(pod: dict[str, Any]) -> str:
    """One line about a pod after sleep or wake: state, unit and the last timings."""
    parts = [f"{pod.get('namespace')}/{pod.get('name')} {pod.get('state')} ({pod.get('unit')})"]
    for container in pod.get("containers") or ():
        timings = [
            f"{label} {container[key]:g} ms"
            for key, label in (("last_checkpoint_ms", "checkpoint"), ("last_restore_ms", "restore"))
            if isinstance(container.get(key), int | float)
        ]
        parts.append(f"{container.get('container')}: " + (", ".join(timings) or "no timings"))
    return "; ".join(parts)
