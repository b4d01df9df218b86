"""The node's own addresses, refreshed as interfaces come and go.

kubelet's probes come from the node's address on the pod network (the CNI bridge), which
exists only once the first pod has started, often after the daemon: a list read once at
start would miss it and count every probe as a client. :class:`NodeAddresses` re-reads the
addresses (``zeropod.activity.sources.node_networks``) at most every ``ttl`` seconds and
always includes loopback; a failed read keeps the last good list.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from zeropod.activity.sources import LOOPBACK, Network, node_networks

TTL = 5.0


class NodeAddresses:
    """Loopback plus the node's addresses, cached for ``ttl`` seconds."""

    def __init__(
        self,
        read: Callable[[], Sequence[Network]] = node_networks,
        ttl: float = TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._ttl = ttl
        self._clock = clock
        self._networks: tuple[Network, ...] = LOOPBACK
        self._read_at: float | None = None
        self.last_error: OSError | None = None

    def refresh(self) -> tuple[Network, ...]:
        """Read the addresses now (e.g. before waking a pod for a client from an address not
        in the cached list: the bridge may be newer than the cache)."""
        self._read_at = None
        return self()

    def __call__(self) -> tuple[Network, ...]:
        """The networks whose clients do not count (probes, the pod itself)."""
        now = self._clock()
        if self._read_at is None or now - self._read_at >= self._ttl:
            self._read_at = now
            try:
                found = tuple(self._read())
            except OSError as err:
                self.last_error = err
            else:
                self.last_error = None
                self._networks = (*LOOPBACK, *(n for n in found if n not in LOOPBACK))
        return self._networks
