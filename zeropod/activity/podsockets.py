"""``PodSockets``: sock_diag sockets opened inside a pod's network namespace, and reading them.

Opening enters the netns once in a short-lived thread (``setns`` only changes the calling
thread); the sockets stay bound to that netns for their life. See :mod:`.sockdiag` for
what the records mean.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import threading
import time
from collections.abc import Callable, Collection
from typing import Any, TypeVar

from zeropod.activity.sockdiag import (
    CLONE_NEWNET,
    EXT_INFO,
    NETLINK_SOCK_DIAG,
    RECV_SIZE,
    SKNLGRP_INET6_TCP_DESTROY,
    SKNLGRP_INET_TCP_DESTROY,
    SS_ALL,
    STATES_AFTER_FIRST,
    Connection,
    ListeningSocket,
    Snapshot,
    TcpState,
    listen_request,
    listen_sockets,
    parse_message,
    split,
)

T = TypeVar("T")
HANDSHAKE = frozenset({TcpState.SYN_RECV, TcpState.NEW_SYN_RECV})
"""States sock_diag lists request sockets in: they go without a destroy event."""
BOTH_FAMILIES = (socket.AF_INET, socket.AF_INET6)
RAW_TIMEOUT = 1.0
"""Seconds a raw LISTEN-only dump may wait for the kernel's answer (it takes ~0.05 ms)."""


def run_in_netns(netns_path: str, fn: Callable[[], T]) -> T:
    """Call FN in a short-lived thread that has entered the network namespace NETNS_PATH.

    Sockets FN creates stay in that netns. Raises OSError when the netns cannot be entered.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as err:
            box["error"] = err
            return
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.setns(fd, CLONE_NEWNET) != 0:
                code = ctypes.get_errno()
                box["error"] = OSError(code, f"setns({netns_path}): {os.strerror(code)}")
                return
        finally:
            os.close(fd)
        try:
            box["value"] = fn()
        except Exception as err:  # handed to the caller's thread below
            box["error"] = err

    thread = threading.Thread(target=target, name=f"netns {netns_path}")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def passive_opens(snmp: str) -> int:
    """The ``Tcp: PassiveOpens`` counter from the text of /proc/net/snmp (ValueError if absent)."""
    rows = [line.split() for line in snmp.splitlines() if line.startswith("Tcp:")]
    try:
        return int(rows[1][rows[0].index("PassiveOpens")])
    except (IndexError, ValueError) as err:
        raise ValueError(f"no Tcp: PassiveOpens counter in {snmp[:80]!r}...") from err


def _open_sockets() -> tuple[Any, Any, socket.socket, int]:
    # Imported here so that the tracker and these data classes load without pyroute2.
    from pyroute2.netlink.diag import DiagSocket

    dump = DiagSocket()
    events = DiagSocket()
    raw = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG)
    try:
        dump.bind()
        events.bind()
        events.add_membership(SKNLGRP_INET_TCP_DESTROY)
        events.add_membership(SKNLGRP_INET6_TCP_DESTROY)
        events.setblocking(False)
        raw.bind((0, 0))
        # Its dumps run on the daemon's event loop: an answer that never came would stall
        # every pod, so a wait longer than this raises (TimeoutError, an OSError).
        raw.settimeout(RAW_TIMEOUT)
    except Exception:
        dump.close()
        events.close()
        raw.close()
        raise
    try:
        # The file stays bound to the netns it was opened in, like the sockets.
        snmp = os.open("/proc/thread-self/net/snmp", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        snmp = -1  # no counter: every snapshot dumps
    return dump, events, raw, snmp


class PodSockets:
    """sock_diag views of the pod network namespace at NETNS_PATH (e.g. /proc/PID/ns/net).

    Opening enters the netns once (see the module docstring); raises OSError when the netns
    cannot be entered or the sockets cannot be made. Not thread-safe: one poller per pod.
    """

    def __init__(self, netns_path: str) -> None:
        self.netns_path = netns_path
        self._states = SS_ALL
        # What the last dump left: whether it must be repeated, for which ports, at which
        # PassiveOpens count, the listeners it saw and the connections it found open, less
        # those freed since (reused by snapshots without a dump).
        self._dump_again = True
        self._dumped_ports: frozenset[int] = frozenset()
        self._dumped_opens: int | None = None
        self._listeners: tuple[ListeningSocket, ...] = ()
        self._open: tuple[Connection, ...] = ()
        self.dumps = 0
        try:
            opened = run_in_netns(netns_path, _open_sockets)
            self._dump, self._events, self._raw, self._snmp = opened
            self._seq = 0
        except OSError as err:
            reason = err.strerror or str(err)
            raise OSError(err.errno, f"sock_diag in netns {netns_path}: {reason}") from err

    def close(self) -> None:
        self._dump.close()
        self._events.close()
        self._raw.close()
        if self._snmp >= 0:
            os.close(self._snmp)
            self._snmp = -1

    def passive_opens(self) -> int | None:
        """The netns's count of accepted TCP connections so far; None if unreadable."""
        if self._snmp < 0:
            return None
        try:
            return passive_opens(os.pread(self._snmp, 65536, 0).decode())
        except (OSError, ValueError):
            return None

    def __enter__(self) -> PodSockets:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fileno(self) -> int:
        """The destroy-event socket's fd: readable when connections were freed."""
        return self._events.fileno()

    def dump(
        self,
        states: int = SS_ALL,
        families: Collection[int] = BOTH_FAMILIES,
        info: bool = True,
    ) -> list[Connection | ListeningSocket]:
        """Every TCP listener and connection of FAMILIES in the netns in STATES (a mask);
        with INFO, connections carry their ``tcp_info`` counters.

        Each family is one walk of the kernel's TCP hash (~0.9 ms): a caller that knows
        which families it looks for (the held listeners') saves the other."""
        items: list[Connection | ListeningSocket] = []
        extensions = EXT_INFO if info else 0
        for family in (f for f in BOTH_FAMILIES if f in families):
            for msg in self._dump.get_sock_stats(
                family=family, states=states, extensions=extensions
            ):
                item = parse_message(msg)
                if item is not None:
                    items.append(item)
        return items

    def listeners(self) -> dict[int, int]:
        """Every TCP listener in the netns, IPv4 and IPv6, any port, as inode -> local port:
        two LISTEN-only dumps, which walk the kernel's listening hash alone (raw netlink)."""
        found: dict[int, int] = {}
        for family in BOTH_FAMILIES:
            self._seq += 1
            self._raw.send(listen_request(family, self._seq))
            while not listen_sockets(self._raw.recv(RECV_SIZE), found):
                pass
        return found

    def drain_closed(self) -> tuple[list[Connection], bool]:
        """Destroy events received since the last call, and whether any were lost."""
        closed: list[Connection] = []
        lost = False
        while True:
            try:
                data = self._events.recv(RECV_SIZE)
            except BlockingIOError:
                break
            except OSError as err:
                if err.errno == errno.ENOBUFS:
                    lost = True
                    continue
                raise
            for msg in self._events.marshal.parse(data):
                item = parse_message(msg)
                if isinstance(item, Connection):
                    closed.append(item)
        return closed, lost

    def snapshot(
        self, ports: Collection[int], clock: Callable[[], float] = time.monotonic
    ) -> Snapshot:
        """Listeners and connections on PORTS now, plus those freed since the last snapshot.

        Events are drained before the dump: a connection freed in between is reported by the
        next snapshot, never lost. A connection may be reported twice (freed, and as a
        TIME_WAIT entry), which callers must tolerate. Only the first snapshot lists TIME_WAIT
        entries: later closes all come as destroy events, and a busy pod's thousands of
        TIME_WAIT entries cost pyroute2 about 30 us each to parse (measured).

        The dump is skipped when it cannot show anything new: the netns's ``Tcp:
        PassiveOpens`` counter has not moved since the last one (every accepted connection
        raises it when its handshake completes) and no destroy event was lost. The
        connections open then are those the last dump found open, less those freed since
        (destroy events, by cookie): a full socket leaves the table only through one. Such
        a snapshot has the listeners of the last dump and those connections as it saw them
        (their ``tcp_info`` and the accept queues are not read again). A connection still in
        its handshake (SYN_RECV) is a request socket, which leaves without an event, so
        while one is listed every snapshot dumps. A dump walks the kernel's whole TCP hash
        (~3 ms a family on a 24 GiB node): a pod under keep-alive load paid it every second.
        """
        closed, lost = self.drain_closed()
        _, closed_watched = split(closed, ports)
        watched = frozenset(ports)
        opens = self.passive_opens()  # read before the dump: a later accept changes it
        if (
            not self._dump_again
            and not lost
            and watched == self._dumped_ports
            and opens is not None
            and opens == self._dumped_opens
        ):
            freed = {c.cookie for c in closed}
            self._open = tuple(c for c in self._open if c.cookie not in freed)
            return Snapshot(clock(), self._listeners, self._open, closed_watched, lost)
        listeners, connections = split(self.dump(self._states), ports)
        self.dumps += 1
        self._states = STATES_AFTER_FIRST
        self._open = tuple(c for c in connections if not c.timewait)
        self._dump_again = any(c.state in HANDSHAKE for c in self._open)
        self._dumped_ports, self._dumped_opens, self._listeners = watched, opens, listeners
        return Snapshot(clock(), listeners, connections, closed_watched, lost)
