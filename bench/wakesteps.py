"""Where a wake's time goes, from the journal of the node: each step's milliseconds.

Every process on the wake path logs to the node's journal, and entries carry the kernel's
monotonic clock (``__MONOTONIC_TIMESTAMP``, one clock for the whole machine), so one wake's
entries line up. The marks, in order:

1. ``restoring``: the daemon saw its copy of the held socket readable, checked who is
   queued (not a probe), and asks the shim;
2. ``shim_restoring``: the shim took the restore op;
3. ``shim_restored``: runc create + start, CRIU's restore included, returned;
4. ``running``: the daemon saw the app listening again and released the held ports (the
   queue migrated to the app);
5. ``woke``: the daemon's "woke in" line, right after.

The daemon's own timings from its "woke in" entry are given in parentheses: the probe check
before ``restoring`` (``STEP_PROBE_CHECK_MS``), and the two steps inside
``shim_restored``→``running`` (``STEP_LISTENING_MS``, ``STEP_RELEASE_MS``); so are the
shim's from its "restored in" entry, inside ``shim_restoring``→``shim_restored``
(:data:`SHIM_STEPS`). The client's
own latency (connect to first byte) minus ``restoring``→``woke`` is what lies outside the
journal: the SYN queued and the daemon's epoll waking, the probe check, and the app answering
after the release.
"""

from __future__ import annotations

import itertools
import re
import statistics
from collections.abc import Iterable
from typing import Any

RESTORED = re.compile(r" restored( lazily| cold)? in ")
"""The shim's "restored in" entry, whichever way it restored."""
MARKS = (
    "restoring",
    "shim_restoring",
    "shim_restored",
    "running",
    "woke",
)


def _mark(entry: dict[str, Any], pod: str, container_id: str) -> str | None:
    message = str(entry.get("MESSAGE", ""))
    if f"/{pod}/" in message and "SCALED_DOWN -> RESTORING" in message:
        return "restoring"
    if container_id in message and "scaled_down -> restoring" in message:
        return "shim_restoring"
    if container_id in message and RESTORED.search(message):
        return "shim_restored"
    if f"/{pod}/" in message and "RESTORING -> RUNNING" in message:
        return "running"
    if f"/{pod}/" in message and "woke in" in message:
        return "woke"
    return None


def marks(entries: Iterable[dict[str, Any]], pod: str, container_id: str) -> dict[str, float]:
    """The monotonic time (ms) of each mark of one wake: the first entry of each kind."""
    found: dict[str, float] = {}
    for entry in entries:
        kind = _mark(entry, pod, container_id)
        if kind is not None and kind not in found:
            found[kind] = int(entry["__MONOTONIC_TIMESTAMP"]) / 1000
    return found


DAEMON_STEPS = ("probe_check", "listening", "release")
"""The daemon's own steps, from its "woke in" entry."""
SHIM_STEPS = ("page_server", "create", "start", "hold")
"""The shim's, inside shim_restoring->shim_restored, from its "restored in" entry: a lazy
restore's page server start (alongside create), the runc shim's Create and Start (runc
restore, CRIU's included), and the wait until the page server serves the image."""


def daemon_steps(
    entries: Iterable[dict[str, Any]], pod: str, container_id: str
) -> dict[str, float]:
    """The daemon's and the shim's own timings, named in parentheses: ``(probe_check)``
    before ``restoring``, ``(listening)`` and ``(release)`` inside shim_restored->running,
    ``(create)``, ``(start)`` … inside shim_restoring->shim_restored."""
    wanted = {"woke": DAEMON_STEPS, "shim_restored": SHIM_STEPS}
    found: dict[str, float] = {}
    for entry in entries:
        names = wanted.pop(_mark(entry, pod, container_id) or "", ())
        for name in names:
            if f"STEP_{name.upper()}_MS" in entry:
                found[f"({name})"] = float(entry[f"STEP_{name.upper()}_MS"])
    return found


def steps(found: dict[str, float]) -> dict[str, float]:
    """Milliseconds between consecutive marks present, named ``<from>-><to>``, and ``total``
    (``restoring`` to ``woke``) when both ends are there."""
    present = [m for m in MARKS if m in found]
    out = {f"{a}->{b}": round(found[b] - found[a], 1) for a, b in itertools.pairwise(present)}
    if "restoring" in found and "woke" in found:
        out["total"] = round(found["woke"] - found["restoring"], 1)
    return out


def summaries(runs: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per step over several wakes: median, min, max, n (steps missing in a run skipped)."""
    names = [*(f"{a}->{b}" for a, b in itertools.pairwise(MARKS)), "total"]
    names += sorted({k for r in runs for k in r} - set(names))
    out: dict[str, dict[str, float]] = {}
    for name in names:
        values = [r[name] for r in runs if name in r]
        if values:
            out[name] = {
                "median": round(statistics.median(values), 1),
                "min": min(values),
                "max": max(values),
                "n": len(values),
            }
    return out
