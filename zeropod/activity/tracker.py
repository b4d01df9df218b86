"""Decide how long a container has been idle, from successive sock_diag snapshots.

:class:`ActivityTracker` is pure: it is fed :class:`~zeropod.activity.sockdiag.Snapshot`\\ s
and the time they were taken, and answers ``last_activity`` and ``idle_for(now)``. The
contract: a container is idle when no TCP connection from a counting client reached its
ports for the scale-down duration *and* no such connection is open (an open WebSocket or
stream is never cut by a sleep). Clients in the excluded networks never count: by default
loopback; the daemon adds the node's own addresses (kubelet's probes come from there). A
connection from the pod's own address to itself is local traffic too.

What counts, per snapshot taken at ``now``:

- every open connection from a counting client (any full socket not yet closed: also one
  still in the accept queue or handshake, a half-closed one waiting for its answer, or a
  quiet idle WebSocket): activity at ``now``; while one is open ``idle_for`` is 0;
- every connection freed since the last snapshot (the kernel's TCP destroy events): activity
  at ``now``;
- a TIME_WAIT mini-socket (the app closed the connection; TIME_WAIT, or FIN_WAIT2 while the
  client has not closed its side): activity when it closed (or the client's FIN came),
  estimated as ``now - (60 s - time left)`` (60 s: TCP_TIMEWAIT_LEN and the default
  ``tcp_fin_timeout``);
- destroy events lost by the kernel (receive buffer overflow): activity at ``now``, since
  the clients are unknown.

Short connections between two polls (a ``curl`` every 5 s, polled every second): the
destroy events are what makes them impossible to miss. The kernel announces every full TCP
socket of the netns when it is freed, with its addresses, whichever side closed first and
however short it lived; the poll only drains them. The alternatives were weaker: a TIME_WAIT
entry exists only when the server closed first (a client that closes first leaves nothing
behind a moment later); the netns-wide ``Tcp: PassiveOpens`` counter sees every accepted
connection but not where it came from, so kubelet's TCP and HTTP probes would keep every pod
awake (sockdiag uses it only to skip dumps that cannot show anything new); a listener's
tcp_info has its queue length but no count of accepted connections.
TIME_WAIT entries serve one case: the first snapshot of a netns lists them (later ones do
not, see sockdiag), so after a daemon restart they date the server-closed connections of the
last minute, which no destroy event will report any more.

Limits:

- Traffic that reaches the pod with the node's address as source counts as kubelet's: a
  Service or NodePort path that masquerades (SNAT) client traffic to the node address is not
  seen as activity. Exclude fewer addresses where that matters.
- A dead client that never sent FIN or RST leaves an ESTABLISHED socket until TCP keepalive
  or the app times it out; an app that never closes its CLOSE_WAIT sockets does the same.
  Both keep the container awake (the safe side of the contract).
- A freed connection is dated by the poll that drains its event: at most one poll interval
  late. The kernel drops a destroy event only when it cannot allocate it (GFP_ATOMIC under
  memory pressure); such a connection goes unseen.
- Only connections to the watched ports count: the app's own outgoing connections and other
  containers' ports in the same pod do not.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from zeropod.activity.sockdiag import Connection, Snapshot, TcpState
from zeropod.activity.sources import LOOPBACK, ExcludedSources, Network, excluded

# Linux's TCP_TIMEWAIT_LEN: how long a TIME_WAIT entry lives.
TIME_WAIT_SECONDS = 60.0
_NOT_OPEN = frozenset({TcpState.TIME_WAIT, TcpState.CLOSE, TcpState.LISTEN})


@dataclass(frozen=True)
class Activity:
    """When activity was seen (on the tracker's clock) and what it was, for the journal."""

    at: float
    reason: str


class ActivityTracker:
    """Idle tracking for one container's ports; times are seconds on one monotonic clock.

    STARTED_AT is when tracking began (the container counts as active then).
    EXCLUDED_NETWORKS are the clients that never count (default: loopback); pass an
    :class:`~zeropod.activity.sources.ExcludedSources` to follow the node's addresses.
    """

    def __init__(
        self,
        started_at: float,
        excluded_networks: Iterable[Network] | ExcludedSources = LOOPBACK,
    ) -> None:
        self.excluded_networks: tuple[Network, ...] | ExcludedSources = (
            excluded_networks
            if isinstance(excluded_networks, ExcludedSources)
            else tuple(excluded_networks)
        )
        self._last = Activity(started_at, "tracking started")
        self._open: tuple[Connection, ...] = ()

    @property
    def last(self) -> Activity:
        """The newest activity seen so far."""
        return self._last

    @property
    def last_activity(self) -> float:
        return self._last.at

    @property
    def open_clients(self) -> tuple[Connection, ...]:
        """Open connections from counting clients in the latest snapshot."""
        return self._open

    def counts(self, conn: Connection) -> bool:
        """True when CONN's client is not excluded (not loopback, node or the pod itself)."""
        if conn.remote_addr == conn.local_addr:
            return False
        return not excluded(conn.remote_addr, self.excluded_networks)

    def observe(self, snapshot: Snapshot, now: float) -> Activity | None:
        """Take in SNAPSHOT, taken at NOW; return the activity it adds (None if none newer)."""
        seen: list[Activity] = []
        open_clients: list[Connection] = []
        for conn in snapshot.connections:
            if not self.counts(conn):
                continue
            if conn.timewait:
                age = max(0.0, TIME_WAIT_SECONDS - conn.expires_ms / 1000)
                seen.append(Activity(now - age, f"closed {conn.describe()}"))
            elif conn.state not in _NOT_OPEN:
                open_clients.append(conn)
                seen.append(Activity(now, f"open {conn.describe()}"))
        for conn in snapshot.closed:
            if self.counts(conn):
                seen.append(Activity(now, f"closed {conn.describe()}"))
        if snapshot.events_lost:
            seen.append(Activity(now, "the kernel dropped TCP destroy events: clients unknown"))
        self._open = tuple(open_clients)
        newest = max(seen, key=lambda a: a.at, default=None)
        if newest is None or newest.at <= self._last.at:
            return None
        self._last = Activity(min(newest.at, now), newest.reason)
        return self._last

    def idle_for(self, now: float) -> float:
        """Seconds without activity at NOW: 0 while a counting client connection is open."""
        if self._open:
            return 0.0
        return max(0.0, now - self._last.at)
