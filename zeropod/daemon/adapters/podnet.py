"""One long-lived sock_diag view of a pod's network namespace (``PodSockets``).

The idle loop polls it every second while the pod runs (and lists its listeners, to know
when to detect its ports again), the held-port watch reads who is queued, the wake waits for
the app's listeners: all through the one view a pod's life owns, made on first use and kept
until the pod is forgotten. sock_diag calls block, so each runs in a worker thread of the
loop's default pool, one at a time (``PodSockets`` is not thread-safe), except the probe
check's dump and the listener lists, which run on the loop; after an error the view is
re-made at the next call (the netns may have been re-created).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Sequence
from typing import Any, TypeVar

from zeropod.activity.podsockets import BOTH_FAMILIES, PodSockets
from zeropod.activity.sockdiag import Connection, Snapshot, TcpState, split

T = TypeVar("T")
POLL = 0.005
"""Seconds between two looks for the woken app's listeners."""


class PodNetView:
    """sock_diag in the netns at ``netns`` (e.g. /proc/PID/ns/net), opened lazily."""

    def __init__(self, netns: str, open_sockets: Callable[[str], Any] = PodSockets) -> None:
        self.netns = netns
        self._open = open_sockets
        self._sockets: Any = None
        """The PodSockets; used by one worker thread at a time (``_lock``)."""
        self._lock = asyncio.Lock()

    async def _call(self, use: Callable[[Any], T], inline: bool = False) -> T:
        """USE(the PodSockets) in a worker thread, or INLINE on the loop: a wake's probe
        check, where one dump (~1 ms, in the kernel) costs less than handing it to a
        thread and back on a busy 2-core node."""
        async with self._lock:
            if self._sockets is None:
                self._sockets = await asyncio.to_thread(self._open, self.netns)
            try:
                if inline:
                    return use(self._sockets)
                return await asyncio.to_thread(use, self._sockets)
            except OSError:
                self.close()
                raise

    async def snapshot(self, ports: Sequence[int]) -> Snapshot:
        return await self._call(lambda s: s.snapshot(ports))

    async def connections(
        self,
        ports: Sequence[int],
        states: Collection[TcpState],
        families: Collection[int] = BOTH_FAMILIES,
    ) -> list[Connection]:
        """The connections on ``ports`` in ``states`` (addresses only, no ``tcp_info``)."""
        mask = sum(1 << state.value for state in set(states))
        return await self._call(
            lambda s: list(split(s.dump(mask, families, info=False), ports)[1]), inline=True
        )

    async def listening(self) -> frozenset[int]:
        """The inodes of every listening TCP socket in the netns, any port: a LISTEN-only dump
        walks the kernel's listening hash alone (0.05 ms), so it runs on the loop."""
        return frozenset(await self._call(lambda s: s.listeners(), inline=True))

    async def listeners_per_port(self, ports: Sequence[int]) -> list[int]:
        """How many sockets listen on each of ``ports`` (the same LISTEN-only dump, on the
        loop: a thread hop would cost more than the dump)."""
        listening = list((await self._call(lambda s: s.listeners(), inline=True)).values())
        return [listening.count(p) for p in ports]

    async def wait_listening(self, ports: Sequence[int], count: int, timeout: float) -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        polls = 0
        while True:
            per_port = await self.listeners_per_port(ports)
            if all(n >= count for n in per_port):
                return polls
            if loop.time() >= deadline:
                raise TimeoutError(f"ports {list(ports)}: listeners per port {per_port}")
            polls += 1
            await asyncio.sleep(POLL)

    def close(self) -> None:
        """Release the sockets (the next call opens them again)."""
        sockets, self._sockets = self._sockets, None
        if sockets is not None:
            sockets.close()
