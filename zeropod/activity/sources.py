"""Which client addresses do not count as activity: loopback and the node's own addresses.

kubelet reaches a pod from the node's own network namespace, so its probes arrive from one of
the node's addresses (on the test node: 10.88.0.1, the CNI bridge). Traffic inside the pod
arrives from loopback. Neither should keep a container awake. :func:`node_networks` lists the
addresses of the namespace it is called in (the daemon runs in the node's);
:class:`ExcludedSources` keeps that list current, since the CNI bridge only appears with the
first pod, after the daemon started (the one refresher of the node's addresses: the daemon's
idle loops, probe answers and wakes use it as well as ``zeropod.activity``);
:func:`parse_networks` reads an operator's extra list.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import time
from collections.abc import Callable, Iterable, Iterator

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

LOOPBACK: tuple[Network, ...] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)


def parse_networks(key: str, value: str) -> tuple[Network, ...]:
    """Comma-separated addresses or CIDR networks (e.g. "10.0.0.0/8, fd00::1").

    Raises ValueError naming KEY, the bad entry and what is allowed.
    """
    networks: list[Network] = []
    for entry in value.split(","):
        entry = entry.strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError as err:
            raise ValueError(
                f"{key}: {entry!r} is not an address or network; "
                "allowed: comma-separated IPv4/IPv6 addresses or CIDR networks"
            ) from err
    return tuple(networks)


def node_networks() -> tuple[Network, ...]:
    """Every address of every interface in the caller's network namespace, as a host network.

    Reads the addresses over rtnetlink (pyroute2); raises OSError if netlink fails.
    """
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        addrs = [msg.get_attr("IFA_ADDRESS") for msg in ipr.get_addr()]
    return tuple(ipaddress.ip_network(a) for a in addrs if a)


def may_be_local(addr: IPAddress) -> bool:
    """Whether ADDR may be one of the caller's netns's own addresses: a socket can bind it
    (a few microseconds, no netlink). False only when the kernel says it is not local
    (EADDRNOTAVAIL); any other answer (a link-local address without its scope, a nonlocal
    bind allowed by sysctl) says True, so that the caller reads the addresses instead."""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    family = socket.AF_INET if addr.version == 4 else socket.AF_INET6
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((str(addr), 0))
    except OSError as err:
        return err.errno != errno.EADDRNOTAVAIL
    return True


def _in(addr: IPAddress, networks: Iterable[Network]) -> bool:
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr.version == net.version and addr in net for net in networks)


class ExcludedSources:
    """Fixed NETWORKS plus the node's own addresses, kept current.

    The node's addresses change after the daemon starts: the CNI bridge (kubelet's source
    towards bridged pods) appears with the first pod. They are read (READ, default
    :func:`node_networks`) at construction, again when the list is older than
    REFRESH_SECONDS on CLOCK and it is asked for (calling the object), and when an address not
    among them is tested (``addr in sources``, at most once per REFRESH_SECONDS). A failed
    read keeps the last list; ``error`` says why. Iterating yields the networks as last read.
    """

    def __init__(
        self,
        networks: Iterable[Network] = LOOPBACK,
        read: Callable[[], Iterable[Network]] = node_networks,
        refresh_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fixed = tuple(networks)
        self._read = read
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self._node: tuple[Network, ...] = ()
        self._read_at: float | None = None
        self.error: OSError | None = None
        self.refresh()

    def refresh(self) -> tuple[Network, ...]:
        """Read the node's addresses now, whatever the list's age; the networks after it."""
        self._read_at = self._clock()
        try:
            found = tuple(self._read())
        except OSError as err:
            self.error = err
        else:
            self.error = None
            self._node = tuple(n for n in found if n not in self.fixed)
        return self.fixed + self._node

    def cached(self) -> tuple[Network, ...]:
        """The networks as last read, never reading (the wake path: see ``may_be_local``)."""
        return self.fixed + self._node

    def _stale(self) -> bool:
        return self._read_at is None or self._clock() - self._read_at >= self._refresh_seconds

    def __call__(self) -> tuple[Network, ...]:
        """The networks whose clients do not count, re-read first if the list is stale."""
        if self._stale():
            return self.refresh()
        return self.fixed + self._node

    def __iter__(self) -> Iterator[Network]:
        return iter(self.fixed + self._node)

    def __contains__(self, addr: IPAddress) -> bool:
        if _in(addr, self.fixed) or _in(addr, self._node):
            return True
        if not self._stale():
            return False
        self.refresh()
        return _in(addr, self._node)


def excluded(addr: IPAddress, networks: Iterable[Network] | ExcludedSources) -> bool:
    """True when ADDR (an IPv4-mapped IPv6 address as its IPv4 one) lies in one of NETWORKS.

    With an :class:`ExcludedSources`, an address not yet known may re-read the node's.
    """
    if isinstance(networks, ExcludedSources):
        return addr in networks
    return _in(addr, networks)
