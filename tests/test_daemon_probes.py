"""Probe detection while a pod sleeps: which queued connections wake it, what a probe is."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from zeropod.activity.sockdiag import Connection, TcpState
from zeropod.activity.sources import LOOPBACK
from zeropod.daemon.lifecycle.probes import OK_RESPONSE, Kind, Verdict, answer, classify, decide

NODE = (*LOOPBACK, ipaddress.ip_network("10.88.0.1/32"))
POD = ipaddress.ip_address("10.88.0.7")


def conn(remote: str, state: TcpState = TcpState.ESTABLISHED, port: int = 8080, **kw) -> Connection:
    return Connection(state, POD, port, ipaddress.ip_address(remote), 40000, cookie=1, **kw)


@pytest.mark.parametrize(
    ("connections", "verdict"),
    [
        ([], Verdict.EMPTY),
        ([conn("10.88.0.1")], Verdict.PROBES),
        ([conn("127.0.0.1"), conn("10.88.0.1", TcpState.CLOSE_WAIT)], Verdict.PROBES),
        ([conn("10.88.0.1"), conn("10.88.255.254")], Verdict.WAKE),
        ([conn("10.88.255.254", TcpState.CLOSE_WAIT)], Verdict.WAKE),
        # Not queued: other ports, TIME_WAIT leftovers, our own closed probes.
        ([conn("10.88.255.254", port=9999)], Verdict.EMPTY),
        ([conn("10.88.255.254", TcpState.TIME_WAIT, timewait=True)], Verdict.EMPTY),
        ([conn("10.88.255.254", TcpState.FIN_WAIT2)], Verdict.EMPTY),
    ],
)
def test_decide(connections: list[Connection], verdict: Verdict) -> None:
    assert decide(connections, [8080], NODE).verdict is verdict


@pytest.mark.parametrize(
    ("data", "eof", "kind"),
    [
        (b"", True, Kind.TCP_PROBE),
        (b"", False, Kind.INCOMPLETE),
        (b"GE", False, Kind.INCOMPLETE),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n", False, Kind.INCOMPLETE),
        (
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nUser-Agent: kube-probe/1.30\r\n\r\n",
            False,
            Kind.HTTP_PROBE,
        ),
        (b"GET / HTTP/1.1\r\nuser-agent:kube-probe/1.28+\r\n\r\n", False, Kind.HTTP_PROBE),
        (b"GET / HTTP/1.1\r\nUser-Agent: curl/7.88\r\n\r\n", False, Kind.OTHER),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", False, Kind.OTHER),
        (b"GET / HTTP/1.1\r\nHost: x\r\n", True, Kind.OTHER),
        (b"\x16\x03\x01\x02\x00", False, Kind.OTHER),  # TLS hello
        (b"PING\r\n", False, Kind.OTHER),
    ],
)
def test_classify(data: bytes, eof: bool, kind: Kind) -> None:
    assert classify(data, eof) is kind


async def test_answer_http_probe_gets_200_and_is_closed() -> None:
    ours, theirs = socket.socketpair()
    theirs.sendall(b"GET /ready HTTP/1.1\r\nUser-Agent: kube-probe/1.30\r\n\r\n")
    kind, _ = await answer(ours)
    assert kind is Kind.HTTP_PROBE
    assert theirs.recv(4096) == OK_RESPONSE
    assert theirs.recv(10) == b""  # closed
    theirs.close()


async def test_answer_tcp_probe_and_silent_client() -> None:
    ours, theirs = socket.socketpair()
    theirs.close()
    assert (await answer(ours))[0] is Kind.TCP_PROBE

    ours, theirs = socket.socketpair()
    kind, data = await answer(ours, timeout=0.05)
    assert kind is Kind.OTHER and data == b""
    assert ours.fileno() != -1  # left open for the relay
    ours.close()
    theirs.close()


async def test_answer_other_request_is_kept_with_its_bytes() -> None:
    ours, theirs = socket.socketpair()
    request = b"GET / HTTP/1.1\r\nUser-Agent: curl/8\r\n\r\n"
    theirs.sendall(request)
    kind, data = await answer(ours)
    assert kind is Kind.OTHER and data == request
    ours.close()
    theirs.close()


async def test_a_probe_longer_than_the_buffer_is_not_a_probe() -> None:
    request = b"GET /healthz HTTP/1.1\r\nX-Pad: " + b"x" * 200 + b"\r\n"
    request += b"User-Agent: kube-probe/1.30\r\n\r\n"
    for limit, kind in ((1024, Kind.HTTP_PROBE), (64, Kind.OTHER)):
        ours, theirs = socket.socketpair()
        theirs.sendall(request)
        got, data = await answer(ours, limit=limit)
        assert got is kind
        assert len(data) <= max(limit, len(request))
        ours.close()
        theirs.close()


async def test_probe_detection_off_wakes_on_a_node_connection() -> None:
    from daemon_fakes import World

    from zeropod.daemon.lifecycle.watch import probe_settings

    world = World()
    on = world.register(container="web", pod="p1")
    off = world.register(
        container="web",
        pod="p2",
        annotations={
            "zeropod.ctrox.dev/disable-probe-detection": "true",
            "zeropod.ctrox.dev/probe-buffer-size": "2048",
        },
    )
    assert probe_settings([on]) == (True, 1024)
    assert probe_settings([off]) == (False, 2048)
    assert probe_settings([on, off]) == (False, 2048)
