"""Which client addresses do not count as activity: loopback and the node's own addresses.

kubelet reaches a pod from the node's own network namespace, so its probes arrive from one of
the node's addresses (on the test node: 10.88.0.1, the CNI bridge). Traffic inside the pod
arrives from loopback. Neither should keep a container awake. :func:`node_networks` lists the
addresses of the namespace it is called in (the daemon runs in the node's), and
:func:`parse_networks` reads an operator's extra list.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

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


def excluded(addr: IPAddress, networks: Iterable[Network]) -> bool:
    """True when ADDR (an IPv4-mapped IPv6 address as its IPv4 one) lies in one of NETWORKS."""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr.version == net.version and addr in net for net in networks)
