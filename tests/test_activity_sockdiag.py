"""sock_diag message parsing, port filtering and netns entry errors; client networks (no root)."""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import Any

import pytest

from zeropod.activity import podsockets, sockdiag, sources
from zeropod.activity.sockdiag import Connection, ListeningSocket, TcpState


class FakeMsg(dict):
    """What pyroute2's inet_diag_msg offers the parser: fields by key and get_attr."""

    def __init__(self, info: dict[str, int] | None = None, **fields: Any) -> None:
        base = {
            "idiag_family": socket.AF_INET6,
            "idiag_state": 1,
            "idiag_timer": 0,
            "idiag_src": "::ffff:10.88.0.31",
            "idiag_sport": 8080,
            "idiag_dst": "::ffff:10.88.0.32",
            "idiag_dport": 40000,
            "idiag_cookie": 7,
            "idiag_expires": 0,
            "idiag_rqueue": 0,
            "idiag_wqueue": 0,
            "idiag_inode": 0,
        }
        super().__init__(base | fields)
        self.info = info

    def get_attr(self, name: str) -> dict[str, int] | None:
        assert name == "INET_DIAG_INFO"
        return self.info


INFO = {"tcpi_bytes_received": 78, "tcpi_segs_in": 4, "tcpi_last_data_recv": 12}


def test_established_connection_with_tcp_info() -> None:
    item = sockdiag.parse_message(FakeMsg(INFO))
    assert item == Connection(
        state=TcpState.ESTABLISHED,
        local_addr=ipaddress.ip_address("10.88.0.31"),
        local_port=8080,
        remote_addr=ipaddress.ip_address("10.88.0.32"),
        remote_port=40000,
        cookie=7,
        bytes_received=78,
        segs_in=4,
        last_data_recv_ms=12,
    )


def test_listener_reports_accept_queue_and_backlog() -> None:
    msg = FakeMsg(idiag_state=10, idiag_src="::", idiag_rqueue=3, idiag_wqueue=4096, idiag_inode=9)
    assert sockdiag.parse_message(msg) == ListeningSocket(
        socket.AF_INET6, ipaddress.ip_address("::"), 8080, 3, 4096, 9
    )


@pytest.mark.parametrize(
    ("state", "timer", "timewait"),
    [(6, 3, True), (5, 3, True), (5, 0, False), (8, 1, False)],
    ids=["TIME_WAIT", "FIN_WAIT2 mini-socket", "FIN_WAIT2 full socket", "CLOSE_WAIT"],
)
def test_timewait_mini_sockets_are_marked(state: int, timer: int, timewait: bool) -> None:
    item = sockdiag.parse_message(FakeMsg(idiag_state=state, idiag_timer=timer, idiag_expires=5))
    assert isinstance(item, Connection)
    assert (item.state, item.timewait, item.expires_ms, item.bytes_received) == (
        TcpState(state),
        timewait,
        5,
        None,
    )


def test_unknown_state_is_skipped() -> None:
    assert sockdiag.parse_message(FakeMsg(idiag_state=99)) is None


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("::ffff:10.0.0.1", "10.0.0.1"),
        ("10.0.0.1", "10.0.0.1"),
        ("fd00::1", "fd00::1"),
        ("::1", "::1"),
    ],
)
def test_normalise(raw: str, want: str) -> None:
    assert sockdiag.normalise(raw) == ipaddress.ip_address(want)


def test_split_keeps_watched_ports() -> None:
    watched = sockdiag.parse_message(FakeMsg())
    other = sockdiag.parse_message(FakeMsg(idiag_sport=9090))
    listener = sockdiag.parse_message(FakeMsg(idiag_state=10))
    assert sockdiag.split([watched, other, listener, None], {8080}) == ((listener,), (watched,))


def test_missing_netns_raises_oserror_naming_it() -> None:
    with pytest.raises(OSError, match="/nonexistent/ns"):
        podsockets.PodSockets("/nonexistent/ns")


def test_run_in_netns_propagates_errors() -> None:
    with pytest.raises(FileNotFoundError):
        podsockets.run_in_netns("/nonexistent/ns", lambda: None)


@pytest.mark.parametrize(
    ("value", "want"),
    [
        ("", ()),
        ("10.0.0.0/8", ("10.0.0.0/8",)),
        (" 10.1.2.3 , fd00::/8,", ("10.1.2.3/32", "fd00::/8")),
        ("10.1.2.3/8", ("10.0.0.0/8",)),
    ],
)
def test_parse_networks(value: str, want: tuple[str, ...]) -> None:
    assert sources.parse_networks("exclude", value) == tuple(ipaddress.ip_network(w) for w in want)


def test_parse_networks_names_key_and_entry() -> None:
    with pytest.raises(ValueError, match=r"exclude: 'nope' is not an address"):
        sources.parse_networks("exclude", "10.0.0.0/8,nope")


@pytest.mark.parametrize(
    ("addr", "want"),
    [("127.0.0.5", True), ("::1", True), ("10.0.0.1", False), ("::ffff:127.0.0.1", True)],
)
def test_loopback_exclusion(addr: str, want: bool) -> None:
    assert sources.excluded(ipaddress.ip_address(addr), sources.LOOPBACK) is want


class FakeDump:
    """The dump socket: answers get_sock_stats with MSGS and records the states asked for."""

    def __init__(self, msgs: list[FakeMsg]) -> None:
        self.msgs = msgs
        self.states: list[int] = []
        self.asked: list[tuple[int, int]] = []  # (family, extensions) per request

    def get_sock_stats(self, family: int, states: int, extensions: int) -> list[FakeMsg]:
        self.states.append(states)
        self.asked.append((family, extensions))
        return [m for m in self.msgs if m["idiag_family"] == family]

    def close(self) -> None:
        pass


class FakeEvents:
    """The destroy-event socket: hands out queued datagrams, or errors, then would block."""

    def __init__(self, queue: list[list[FakeMsg] | OSError]) -> None:
        self.queue = queue
        self.marshal = self

    def recv(self, size: int) -> list[FakeMsg]:
        if not self.queue:
            raise BlockingIOError
        item = self.queue.pop(0)
        if isinstance(item, OSError):
            raise item
        return item

    def parse(self, data: list[FakeMsg]) -> list[FakeMsg]:
        return data

    def close(self) -> None:
        pass


def fake_pod_sockets(
    dump: FakeDump, events: FakeEvents, opens: list[int | None] | None = None
) -> podsockets.PodSockets:
    """A PodSockets on fakes; OPENS are the PassiveOpens readings, one per snapshot."""
    pod = object.__new__(podsockets.PodSockets)
    pod.netns_path = "/fake"
    pod._states = sockdiag.SS_ALL
    pod._dump_again, pod._dumped_ports, pod._dumped_opens = True, frozenset(), None
    pod._listeners, pod._open, pod.dumps, pod._snmp = (), (), 0, -1
    pod._dump, pod._events = dump, events  # type: ignore[assignment]
    readings = list(opens or [])
    pod.passive_opens = lambda: readings.pop(0) if readings else None  # type: ignore[method-assign]
    return pod


def test_snapshot_filters_ports_and_drains_destroy_events() -> None:
    dump = FakeDump([FakeMsg(INFO), FakeMsg(INFO, idiag_sport=9090), FakeMsg(idiag_state=10)])
    closed = [FakeMsg(idiag_state=7, idiag_dport=41000), FakeMsg(idiag_state=7, idiag_sport=22)]
    pod = fake_pod_sockets(dump, FakeEvents([closed]))
    snap = pod.snapshot({8080}, clock=lambda: 12.5)
    assert snap.taken_at == 12.5
    assert [c.remote_port for c in snap.connections] == [40000]
    assert [li.local_port for li in snap.listeners] == [8080]
    assert [c.remote_port for c in snap.closed] == [41000]
    assert snap.events_lost is False
    # TIME_WAIT entries only in the first snapshot; later closes come as destroy events.
    pod.snapshot({8080})
    tw = 1 << TcpState.TIME_WAIT
    assert [bool(s & tw) for s in dump.states] == [True, True, False, False]


def test_overflowed_destroy_events_are_reported_lost() -> None:
    events = FakeEvents([OSError(105, "No buffer space available"), [FakeMsg(idiag_state=7)]])
    snap = fake_pod_sockets(FakeDump([]), events).snapshot({8080})
    assert snap.events_lost is True
    assert len(snap.closed) == 1


def test_other_event_socket_errors_propagate() -> None:
    events = FakeEvents([OSError(9, "Bad file descriptor")])
    with pytest.raises(OSError, match="Bad file"):
        fake_pod_sockets(FakeDump([]), events).snapshot({8080})


def test_node_networks_lists_own_loopback() -> None:
    pytest.importorskip("pyroute2")
    assert ipaddress.ip_network("127.0.0.1/32") in sources.node_networks()


SNMP = """Ip: Forwarding DefaultTTL InReceives
Ip: 1 64 42
Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails
Tcp: 1 200 120000 -1 3 17 0
Udp: InDatagrams NoPorts
Udp: 0 0
"""


def test_passive_opens_parses_proc_net_snmp() -> None:
    assert podsockets.passive_opens(SNMP) == 17


def test_passive_opens_missing_counter_raises() -> None:
    with pytest.raises(ValueError, match="PassiveOpens"):
        podsockets.passive_opens("Ip: Forwarding\nIp: 1\n")


LISTEN = FakeMsg(idiag_state=10)
OPEN = FakeMsg(INFO)
TIME_WAIT = FakeMsg(idiag_state=6, idiag_timer=3)
HANDSHAKE = FakeMsg(idiag_state=3, idiag_cookie=8)


@pytest.mark.parametrize(
    ("msgs", "opens", "ports", "dumps"),
    [
        ([LISTEN], [5, 5, 5], [{8080}] * 3, 1),  # idle: one dump, then the counter says no
        ([LISTEN], [5, 6, 6], [{8080}] * 3, 2),  # a connection was accepted in between
        ([LISTEN, TIME_WAIT], [5, 5], [{8080}] * 2, 1),  # closed ones need no second look
        ([LISTEN, OPEN], [5, 5, 5], [{8080}] * 3, 1),  # open: followed by its destroy event
        ([LISTEN, HANDSHAKE], [5, 5, 5], [{8080}] * 3, 3),  # a request socket has no event
        ([LISTEN], [5, 5], [{8080}, {8080, 9090}], 2),  # other ports asked for
        ([LISTEN], [None, None], [{8080}] * 2, 2),  # counter unreadable: always dump
    ],
    ids=["idle", "accepted", "time-wait", "open", "handshake", "ports-changed", "no-counter"],
)
def test_dump_only_when_something_can_be_new(
    msgs: list[FakeMsg], opens: list[int | None], ports: list[set[int]], dumps: int
) -> None:
    pod = fake_pod_sockets(FakeDump(msgs), FakeEvents([]), opens)
    snaps = [pod.snapshot(p) for p in ports]
    assert pod.dumps == dumps
    # A skipped dump still reports the listeners of the last one.
    assert all([li.local_port for li in s.listeners] == [8080] for s in snaps)


def test_skipped_dump_still_reports_freed_connections() -> None:
    events = FakeEvents([])
    pod = fake_pod_sockets(FakeDump([LISTEN]), events, [5, 5])
    pod.snapshot({8080})
    events.queue.append([FakeMsg(idiag_state=7, idiag_dport=41000)])
    snap = pod.snapshot({8080})
    assert pod.dumps == 1
    assert [c.remote_port for c in snap.closed] == [41000]


def test_open_connection_is_listed_until_its_destroy_event_without_a_dump() -> None:
    events = FakeEvents([])
    other = FakeMsg(INFO, idiag_dport=40001, idiag_cookie=9)
    pod = fake_pod_sockets(FakeDump([LISTEN, OPEN, other]), events, [5, 5, 5, 5])
    assert [c.remote_port for c in pod.snapshot({8080}).connections] == [40000, 40001]
    assert [c.remote_port for c in pod.snapshot({8080}).connections] == [40000, 40001]
    events.queue.append([FakeMsg(idiag_state=7, idiag_cookie=7)])  # 40000's socket freed
    snap = pod.snapshot({8080})
    assert [c.remote_port for c in snap.connections] == [40001]
    assert [c.cookie for c in snap.closed] == [7]
    assert pod.dumps == 1


def test_lost_destroy_events_make_the_next_snapshot_dump() -> None:
    events = FakeEvents([])
    pod = fake_pod_sockets(FakeDump([LISTEN, OPEN]), events, [5, 5, 5])
    pod.snapshot({8080})
    events.queue.append(OSError(105, "No buffer space available"))
    snap = pod.snapshot({8080})
    assert snap.events_lost is True
    assert pod.dumps == 2  # the open set may hold a freed connection: read it again
    assert len(pod.snapshot({8080}).connections) == 1 and pod.dumps == 2


class FakeNode:
    """The node's addresses as READ returns them, changed by the test; counts the reads."""

    def __init__(self, *networks: str) -> None:
        self.networks = [ipaddress.ip_network(n) for n in networks]
        self.reads = 0
        self.fail = False

    def read(self) -> tuple[sources.Network, ...]:
        self.reads += 1
        if self.fail:
            raise OSError(105, "No buffer space available")
        return tuple(self.networks)


def test_excluded_sources_follow_new_node_addresses() -> None:
    node, now = FakeNode("192.168.1.5/32"), [0.0]
    exc = sources.ExcludedSources(sources.LOOPBACK, node.read, 1.0, lambda: now[0])
    bridge = ipaddress.ip_address("10.88.0.1")
    assert ipaddress.ip_address("127.0.0.1") in exc and node.reads == 1
    assert bridge not in exc  # read less than a second ago: not again
    node.networks.append(ipaddress.ip_network("10.88.0.1/32"))  # the first pod's CNI bridge
    assert bridge not in exc and node.reads == 1
    now[0] = 1.5
    assert bridge in exc and node.reads == 2
    assert sources.excluded(ipaddress.ip_address("::ffff:10.88.0.1"), exc)
    assert ipaddress.ip_network("10.88.0.1/32") in list(exc)


def test_excluded_sources_keep_the_last_list_when_a_read_fails() -> None:
    node, now = FakeNode("10.88.0.1/32"), [0.0]
    exc = sources.ExcludedSources((), node.read, 1.0, lambda: now[0])
    node.fail, now[0] = True, 5.0
    assert ipaddress.ip_address("10.0.0.9") not in exc
    assert isinstance(exc.error, OSError)
    assert ipaddress.ip_address("10.88.0.1") in exc


def test_excluded_sources_called_rereads_a_stale_list() -> None:
    node, now = FakeNode(), [0.0]
    exc = sources.ExcludedSources(sources.LOOPBACK, node.read, 5.0, lambda: now[0])
    assert exc() == sources.LOOPBACK and node.reads == 1  # the bridge does not exist yet
    bridge = ipaddress.ip_network("10.88.0.1/32")
    node.networks.append(bridge)  # the first pod created it
    now[0] = 4.0
    assert exc() == sources.LOOPBACK and node.reads == 1  # cached
    now[0] = 5.0
    assert exc() == (*sources.LOOPBACK, bridge) and node.reads == 2
    node.fail, now[0] = True, 10.0
    assert exc() == (*sources.LOOPBACK, bridge) and exc.error is not None  # the last good one
    node.fail, node.networks = False, []
    assert exc.refresh() == sources.LOOPBACK and exc.error is None  # at once, whatever the age


def test_a_dump_walks_only_the_families_asked_for_and_skips_tcp_info() -> None:
    """The probe check knows its held listeners' family: one hash walk, no tcp_info."""
    dump = FakeDump([FakeMsg(INFO, idiag_family=socket.AF_INET), FakeMsg(INFO)])
    pod = fake_pod_sockets(dump, FakeEvents([]))
    assert len(pod.dump(sockdiag.SS_ALL, {socket.AF_INET6}, info=False)) == 1
    assert dump.asked == [(socket.AF_INET6, 0)]
    assert len(pod.dump()) == 2
    both = [(socket.AF_INET, sockdiag.EXT_INFO), (socket.AF_INET6, sockdiag.EXT_INFO)]
    assert dump.asked[1:] == both


def _diag_message(inode: int, port: int, kind: int = sockdiag.SOCK_DIAG_BY_FAMILY) -> bytes:
    """An inet_diag_msg as the kernel sends it: header, 4 bytes, the sockid (big-endian
    source port first, 48 bytes), 4 x u32, the inode, 4 more."""
    sockid = struct.pack("!H", port) + bytes(46)
    body = bytes([socket.AF_INET6, 10, 0, 0]) + sockid + bytes(16) + struct.pack("=I", inode)
    body += bytes(4)
    return struct.pack("=IHHII", 16 + len(body), kind, 2, 1, 0) + body


def test_listen_request_asks_for_listeners_only() -> None:
    req = sockdiag.listen_request(socket.AF_INET6, 42)
    length, kind, flags, seq, _ = struct.unpack_from("=IHHII", req)
    family, protocol, _ext, states = struct.unpack_from("=BBBxI", req, 16)
    assert (length, kind, flags, seq) == (len(req), 20, 0x301, 42)
    assert (family, protocol, states) == (socket.AF_INET6, socket.IPPROTO_TCP, 1 << 10)
    assert len(req) == 16 + 56  # inet_diag_req_v2


def test_listen_sockets_reads_every_message_until_done() -> None:
    found: dict[int, int] = {}
    pair = _diag_message(7, 8080) + _diag_message(9, 443)
    assert sockdiag.listen_sockets(pair, found) is False
    done = struct.pack("=IHHIIi", 20, sockdiag.NLMSG_DONE, 2, 1, 0, 0)
    assert sockdiag.listen_sockets(_diag_message(11, 8080) + done, found) is True
    assert found == {7: 8080, 9: 443, 11: 8080}


def test_listen_sockets_raises_the_kernels_error() -> None:
    error = struct.pack("=IHHIIi", 20, sockdiag.NLMSG_ERROR, 0, 1, 0, -13)
    with pytest.raises(OSError, match="listen dump") as caught:
        sockdiag.listen_sockets(error, {})
    assert caught.value.errno == 13
