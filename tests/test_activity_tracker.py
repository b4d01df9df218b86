"""ActivityTracker: which snapshots count as activity, and how idle time follows (no root)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import pytest

from zeropod.activity.sockdiag import Connection, Snapshot, TcpState
from zeropod.activity.sources import LOOPBACK, ExcludedSources
from zeropod.activity.tracker import ActivityTracker

POD = "10.88.0.31"
NODE = ipaddress.ip_network("10.88.0.1/32")
CLIENT = "10.88.0.32"
EXCLUDED = (*LOOPBACK, NODE)


def conn(
    remote: str = CLIENT,
    state: TcpState = TcpState.ESTABLISHED,
    local: str = POD,
    timewait: bool = False,
    expires_ms: int = 0,
    cookie: int = 1,
) -> Connection:
    return Connection(
        state=state,
        local_addr=ipaddress.ip_address(local),
        local_port=8080,
        remote_addr=ipaddress.ip_address(remote),
        remote_port=40000 + cookie,
        cookie=cookie,
        timewait=timewait,
        expires_ms=expires_ms,
    )


def snap(
    *connections: Connection, closed: tuple[Connection, ...] = (), lost: bool = False
) -> Snapshot:
    return Snapshot(0.0, (), tuple(connections), closed, lost)


@dataclass
class Case:
    """Snapshots fed at times `steps`, then idle_for(`at`) and last_activity are checked."""

    name: str
    steps: list[tuple[float, Snapshot]]
    at: float
    idle_for: float
    last_activity: float
    open_clients: int = 0
    reason: str = field(default="")


CASES = [
    Case("nothing happens", [(1, snap()), (2, snap())], 5, 5, 0, reason="tracking started"),
    Case("open client connection", [(3, snap(conn()))], 3, 0, 3, 1, "open 10.88.0.32"),
    Case("open connection keeps it awake", [(3, snap(conn())), (9, snap(conn()))], 9, 0, 9, 1),
    Case(
        "idle counts from the last poll that saw it open",
        [(3, snap(conn())), (4, snap())],
        10,
        7,
        3,
    ),
    Case(
        "idle counts from the poll that saw it freed",
        [(3, snap(conn())), (4, snap(closed=(conn(state=TcpState.CLOSE),)))],
        10,
        6,
        4,
    ),
    Case("loopback does not count", [(3, snap(conn("127.0.0.1", local="127.0.0.1")))], 5, 5, 0),
    Case("IPv6 loopback does not count", [(3, snap(conn("::1", local="::1")))], 5, 5, 0),
    Case("the node (kubelet) does not count", [(3, snap(conn("10.88.0.1")))], 5, 5, 0),
    Case("the pod to itself does not count", [(3, snap(conn(POD)))], 5, 5, 0),
    Case("IPv6 client counts", [(3, snap(conn("fd00::2", local="fd00::1")))], 3, 0, 3, 1),
    Case(
        "half-closed (CLOSE_WAIT) is open", [(3, snap(conn(state=TcpState.CLOSE_WAIT)))], 3, 0, 3, 1
    ),
    Case("handshake (SYN_RECV) is open", [(3, snap(conn(state=TcpState.SYN_RECV)))], 3, 0, 3, 1),
    Case(
        "short connection seen only freed",
        [(3, snap(closed=(conn(state=TcpState.CLOSE),)))],
        7,
        4,
        3,
        reason="closed 10.88.0.32",
    ),
    Case("freed connection from the node", [(3, snap(closed=(conn("10.88.0.1"),)))], 7, 7, 0),
    Case(
        "TIME_WAIT dates the close",
        [(100, snap(conn(state=TcpState.TIME_WAIT, timewait=True, expires_ms=55_000)))],
        100,
        5,
        95,
    ),
    Case(
        "TIME_WAIT seen again moves nothing",
        [
            (100, snap(conn(state=TcpState.TIME_WAIT, timewait=True, expires_ms=55_000))),
            (110, snap(conn(state=TcpState.TIME_WAIT, timewait=True, expires_ms=45_000))),
        ],
        110,
        15,
        95,
    ),
    Case(
        "FIN_WAIT2 mini-socket is closed, not open",
        [(100, snap(conn(state=TcpState.FIN_WAIT2, timewait=True, expires_ms=58_000)))],
        100,
        2,
        98,
    ),
    Case(
        "TIME_WAIT older than what was seen changes nothing",
        [
            (50, snap(conn())),
            (100, snap(conn(state=TcpState.TIME_WAIT, timewait=True, expires_ms=1_000))),
        ],
        100,
        50,
        50,
    ),
    Case("lost destroy events count", [(3, snap(lost=True))], 4, 1, 3, reason="dropped"),
    Case(
        "excluded and counting together",
        [(3, snap(conn("10.88.0.1", cookie=1), conn(CLIENT, cookie=2)))],
        3,
        0,
        3,
        1,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_tracker(case: Case) -> None:
    tracker = ActivityTracker(0.0, EXCLUDED)
    for now, snapshot in case.steps:
        tracker.observe(snapshot, now)
    assert tracker.idle_for(case.at) == pytest.approx(case.idle_for)
    assert tracker.last_activity == pytest.approx(case.last_activity)
    assert len(tracker.open_clients) == case.open_clients
    assert case.reason in tracker.last.reason


def test_observe_returns_only_newer_activity() -> None:
    tracker = ActivityTracker(0.0, EXCLUDED)
    assert tracker.observe(snap(conn("10.88.0.1")), 1) is None
    first = tracker.observe(snap(conn()), 2)
    assert first is not None and first.at == 2
    tw = conn(state=TcpState.TIME_WAIT, timewait=True, expires_ms=1_000)
    assert tracker.observe(snap(tw), 3) is None  # closed 59 s before: older than 2


def test_default_excludes_only_loopback() -> None:
    tracker = ActivityTracker(0.0)
    tracker.observe(snap(conn("10.88.0.1")), 3)
    assert tracker.idle_for(3) == 0
    tracker.observe(snap(conn("127.0.0.1", local="127.0.0.1")), 4)
    assert tracker.idle_for(10) == 7


def test_node_address_that_appears_later_does_not_count() -> None:
    node = [ipaddress.ip_network("192.168.1.5/32")]
    now = [0.0]
    exc = ExcludedSources(LOOPBACK, lambda: tuple(node), 1.0, lambda: now[0])
    tracker = ActivityTracker(0.0, exc)
    node.append(NODE)  # the CNI bridge comes up with the first pod
    now[0] = 3.0
    tracker.observe(snap(conn("10.88.0.1")), 3.0)
    assert tracker.idle_for(3.0) == 3.0
