"""Watch a pod's ports live: one JSON line per poll with the tracker's view (a debugging aid).

    python3 -m zeropod.activity /proc/PID/ns/net --ports 8080 [--interval 1] [--no-node]

Each line: ``{"seq", "t", "idle_for", "last_activity", "reason", "open", "closed",
"ignored", "listeners"}`` with times in seconds of CLOCK_MONOTONIC (the same clock in every
container of a machine). ``open`` and ``closed`` list the counting clients this poll saw,
``ignored`` the connections from excluded sources (node, loopback). It stops at
end of input (so a caller ends it by closing its stdin), after ``--max-seconds``, or on
SIGINT/SIGTERM. The end-to-end tests drive idle tracking on the node through it.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from typing import Any

from zeropod.activity.podsockets import PodSockets
from zeropod.activity.sockdiag import Snapshot
from zeropod.activity.sources import LOOPBACK, ExcludedSources, Network, parse_networks
from zeropod.activity.tracker import ActivityTracker


def _ports(value: str) -> frozenset[int]:
    try:
        ports = frozenset(int(p) for p in value.split(",") if p.strip())
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--ports {value!r}: expected e.g. 80,8080") from err
    if not ports or not all(0 < p < 65536 for p in ports):
        raise argparse.ArgumentTypeError(f"--ports {value!r}: ports must be 1-65535")
    return ports


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python3 -m zeropod.activity",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("netns", help="the pod's network namespace, e.g. /proc/PID/ns/net")
    p.add_argument("--ports", type=_ports, required=True, help="watched ports, e.g. 80,8080")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between polls")
    p.add_argument("--no-node", action="store_true", help="count the node's own addresses")
    p.add_argument("--exclude", default="", help="more networks that do not count, a,b,...")
    p.add_argument("--max-seconds", type=float, default=600.0, help="stop after this long")
    return p


def line(seq: int, tracker: ActivityTracker, snap: Snapshot, now: float) -> dict[str, Any]:
    """The JSON document printed for one poll."""
    last = tracker.last
    return {
        "seq": seq,
        "t": round(now, 3),
        "idle_for": round(tracker.idle_for(now), 3),
        "last_activity": round(last.at, 3),
        "reason": last.reason,
        "open": [c.describe() for c in tracker.open_clients],
        "closed": [c.describe() for c in snap.closed if tracker.counts(c)],
        "ignored": [
            c.describe() for c in (*snap.connections, *snap.closed) if not tracker.counts(c)
        ],
        "listeners": [
            {"addr": str(li.local_addr), "port": li.local_port, "accept_queue": li.accept_queue}
            for li in snap.listeners
        ],
    }


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    networks: tuple[Network, ...] | ExcludedSources = LOOPBACK + parse_networks(
        "--exclude", args.exclude
    )
    if not args.no_node:
        networks = ExcludedSources(networks)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())

    def watch_stdin() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    started = time.monotonic()
    tracker = ActivityTracker(started, networks)
    try:
        sockets = PodSockets(args.netns)
    except OSError as err:
        print(f"zeropod.activity: {err}", file=sys.stderr)
        return 1
    with sockets:
        seq = 0
        while not stop.is_set() and time.monotonic() - started < args.max_seconds:
            snap = sockets.snapshot(args.ports)
            tracker.observe(snap, snap.taken_at)
            print(json.dumps(line(seq, tracker, snap, snap.taken_at)), flush=True)
            seq += 1
            stop.wait(args.interval)
    return 0
