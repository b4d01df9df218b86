"""The live monitor's argument parsing and JSON lines (no root, no netns)."""

from __future__ import annotations

import argparse
import ipaddress

import pytest

from zeropod.activity import monitor
from zeropod.activity.sockdiag import Connection, ListeningSocket, Snapshot, TcpState
from zeropod.activity.tracker import ActivityTracker


@pytest.mark.parametrize(("value", "want"), [("8080", {8080}), ("80, 8080,", {80, 8080})])
def test_ports(value: str, want: set[int]) -> None:
    assert monitor._ports(value) == want


@pytest.mark.parametrize("value", ["", "http", "0", "70000"])
def test_bad_ports(value: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="--ports"):
        monitor._ports(value)


def _conn(remote: str) -> Connection:
    return Connection(
        TcpState.ESTABLISHED,
        ipaddress.ip_address("10.88.0.31"),
        8080,
        ipaddress.ip_address(remote),
        40000,
        cookie=1,
    )


def test_line_lists_open_and_ignored_clients() -> None:
    tracker = ActivityTracker(0.0)
    listener = ListeningSocket(10, ipaddress.ip_address("::"), 8080, 2, 4096, 5)
    snap = Snapshot(3.0, (listener,), (_conn("10.88.0.32"), _conn("127.0.0.1")))
    tracker.observe(snap, 3.0)
    doc = monitor.line(7, tracker, snap, 3.0)
    assert doc == {
        "seq": 7,
        "t": 3.0,
        "idle_for": 0.0,
        "last_activity": 3.0,
        "reason": "open 10.88.0.32:40000 -> port 8080 (ESTABLISHED)",
        "open": ["10.88.0.32:40000 -> port 8080 (ESTABLISHED)"],
        "closed": [],
        "ignored": ["127.0.0.1:40000 -> port 8080 (ESTABLISHED)"],
        "listeners": [{"addr": "::", "port": 8080, "accept_queue": 2}],
    }
