"""Answer kubelet's probes to a sleeping pod without waking it; tell real clients apart.

While a pod sleeps, the daemon holds the listening sockets the activated service handed over.
When one of them is readable:

- :func:`recent_client` is the fast way: the kernel recorded each SYN the held sockets got
  (:mod:`zeropod.sockets.synlog`); one from outside the node in the last seconds is a
  client waiting, and the pod wakes without any walk. Anything else goes to :func:`decide`.
- :func:`decide` looks at the *sources* of the connections waiting in the accept queues
  without accepting them: the pod netns is read with sock_diag (``zeropod.activity``), and
  every connection on a held port that is ESTABLISHED or CLOSE_WAIT is one still queued (the
  app is gone and the daemon closes each probe it accepted before looking again; a probe
  that already hung up sits in the queue as CLOSE_WAIT). When every source is the node's own
  address or loopback, the queue holds only probes: accept and answer. Any other source
  wakes the pod without accepting anything, so the real client is served by the app itself.
- :func:`answer` reads what an accepted node connection sends: an HTTP request with
  ``User-Agent: kube-probe/...`` gets ``200`` and is closed; a connect that sends nothing
  and hangs up (a TCP probe) is closed. Anything else is not a probe: the caller wakes the
  pod and proxies that connection to the app.

Measured (kernel 6.18, sock_diag): a connection still in a listener's accept queue is
ESTABLISHED with ``idiag_inode`` 0, an accepted one has the inode of its file. The state
test above is enough because the daemon handles one probe at a time and closes it before
looking again; the inode would tell the two apart if that ever changes.

Why sock_diag and not the accepted socket's peer name: accepting takes the queue's head,
whoever it is, and an accepted real client could only be proxied (losing its address for
the app). Reading the queue first keeps real clients un-accepted; they migrate to the
restored app with ``tcp_migrate_req``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from zeropod.activity.sockdiag import Connection, IPAddress, TcpState
from zeropod.activity.sources import Network, excluded
from zeropod.sockets.synlog import Syn

PROBE_READ_TIMEOUT = 2.0
"""Seconds an accepted node connection may take to send its request or hang up."""
MAX_REQUEST = 16384
OK_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n"
    b"Connection: close\r\n\r\nok"
)
KUBE_PROBE = "kube-probe/"
QUEUED_STATES = frozenset({TcpState.ESTABLISHED, TcpState.CLOSE_WAIT})
"""The states of a connection waiting in an accept queue (an un-accepted child: measured)."""
RECENT_SYN_NS = 5_000_000_000
"""How old a recorded SYN may be to prove a client waits: a handshake completes within a
second or two of its SYN (a lost SYN-ACK is sent again after 1 s); an older one may be a
port scan's, which never queued anything."""
_METHODS = (b"GET ", b"HEAD ", b"POST ", b"PUT ", b"OPTIONS ", b"DELETE ", b"PATCH ")


class Verdict(enum.Enum):
    """What the queue of a held socket holds."""

    EMPTY = "empty"
    PROBES = "probes"
    """Only connections from the node or loopback: accept and answer them."""
    WAKE = "wake"
    """A connection from anywhere else: wake without accepting."""


@dataclass(frozen=True)
class Decision:
    """The verdict and the connection that decided it (for the journal)."""

    verdict: Verdict
    reason: str
    source: IPAddress | None = None
    """The address of the connection that decided a WAKE."""


def queued(connections: Iterable[Connection], ports: Iterable[int]) -> list[Connection]:
    """The connections waiting in the accept queues of the held ``ports``."""
    watched = set(ports)
    return [
        c
        for c in connections
        if c.local_port in watched and not c.timewait and c.state in QUEUED_STATES
    ]


def is_client(source: IPAddress, destination: IPAddress, networks: tuple[Network, ...]) -> bool:
    """Whether a connection from ``source`` to the pod's ``destination`` is a client's: not
    from the node's ``networks`` (nor loopback), nor the pod calling its own address."""
    return not excluded(source, networks) and source != destination


def decide(
    connections: Iterable[Connection], ports: Iterable[int], node: Iterable[Network]
) -> Decision:
    """Whether the held ``ports`` hold probes only, a real client, or nothing."""
    waiting = queued(connections, ports)
    networks = tuple(node)
    for conn in waiting:
        if is_client(conn.remote_addr, conn.local_addr, networks):
            return Decision(Verdict.WAKE, f"connection {conn.describe()}", conn.remote_addr)
    if waiting:
        return Decision(Verdict.PROBES, f"{len(waiting)} connection(s) from the node")
    return Decision(Verdict.EMPTY, "nothing queued")


def recent_client(
    syns: Iterable[Syn], node: Iterable[Network], now_ns: int, window_ns: int = RECENT_SYN_NS
) -> Decision | None:
    """WAKE for the newest SYN of the last ``window_ns`` from outside ``node`` (as
    :func:`decide` judges a source); None when there is none: then :func:`decide` looks."""
    networks = tuple(node)
    for syn in sorted(syns, key=lambda s: s.at_ns, reverse=True):
        if now_ns - syn.at_ns > window_ns:
            break
        if is_client(syn.source, syn.destination, networks):
            return Decision(Verdict.WAKE, syn.describe(), syn.source)
    return None


class Kind(enum.Enum):
    """What an accepted node connection turned out to be."""

    HTTP_PROBE = "http probe"
    TCP_PROBE = "tcp probe"
    OTHER = "not a probe"
    INCOMPLETE = "incomplete"


def classify(data: bytes, eof: bool, limit: int = MAX_REQUEST) -> Kind:
    """Classify the bytes an accepted connection sent so far (``eof``: it hung up); a
    request whose headers do not end within ``limit`` bytes is not a probe."""
    if not data:
        return Kind.TCP_PROBE if eof else Kind.INCOMPLETE
    if not any(data.startswith(m) or m.startswith(data) for m in _METHODS):
        return Kind.OTHER
    head, sep, _ = data.partition(b"\r\n\r\n")
    if not sep:
        if eof or len(data) >= limit:
            return Kind.OTHER
        return Kind.INCOMPLETE
    for line in head.split(b"\r\n")[1:]:
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() == b"user-agent":
            agent = value.strip().decode("latin-1")
            return Kind.HTTP_PROBE if agent.startswith(KUBE_PROBE) else Kind.OTHER
    return Kind.OTHER


async def answer(
    conn: socket.socket, timeout: float = PROBE_READ_TIMEOUT, limit: int = MAX_REQUEST
) -> tuple[Kind, bytes]:
    """Read from an accepted node connection until it is classified; answer a probe.

    Returns the kind and the bytes read. A probe is answered (HTTP) and closed; for any
    other kind the connection is left open for the caller (to proxy after the wake).
    """
    loop = asyncio.get_running_loop()
    conn.setblocking(False)
    data = b""
    kind = Kind.INCOMPLETE
    try:
        async with asyncio.timeout(timeout):
            while kind is Kind.INCOMPLETE:
                chunk = await loop.sock_recv(conn, max(1, min(4096, limit - len(data))))
                data += chunk
                kind = classify(data, eof=not chunk, limit=limit)
    except TimeoutError:
        kind = Kind.OTHER  # silent for too long: a client waiting for the server to speak
    except OSError:
        kind = Kind.TCP_PROBE if not data else Kind.OTHER  # reset by the peer
    if kind is Kind.HTTP_PROBE:
        with contextlib.suppress(OSError):  # the prober went away: nothing to answer
            await loop.sock_sendall(conn, OK_RESPONSE)
    if kind in (Kind.HTTP_PROBE, Kind.TCP_PROBE):
        conn.close()
    return kind, data
