"""Holding a sleeping pod's ports, and releasing them: the one place that does either.

While a pod sleeps, systemd's transient socket unit listens on exactly the app's addresses,
and the daemon holds its own copies of those sockets (:mod:`..adapters.heldcopies`), which
it watches for the first client. :class:`PortHold` owns both and is the only code that starts
the unit, takes the copies and releases the ports.

Release (measured, see the daemon's README): ``shutdown()`` on the held sockets first, which
stops them listening for systemd's fd too and, with ``tcp_migrate_req=1``, moves their accept
queue to the app's listener in the same reuseport group; then stop the unit. (Closing fds
instead depends on the order: the queue moves only when the last fd closes, and when systemd
found the socket readable with its stop job pending it flushed it, resetting every client.)
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

from zeropod.daemon.adapters.heldcopies import accept_nowait
from zeropod.daemon.lifecycle.interfaces import HeldCopies, Network, SocketUnits
from zeropod.daemon.model.pod import HeldPort, PodKey
from zeropod.daemon.model.registry import Container
from zeropod.steptimer import StepTimer


class PortHold:
    """A pod's held ports and the daemon's copies of them.

    ``ports`` and ``copies`` are written only by :meth:`hold`, :meth:`restore_held` and
    :meth:`release`, which run under the pod's lock (inside a sleep, a wake, a forget, or the
    daemon's start); the held-port watch only reads ``copies``.
    """

    def __init__(self, key: PodKey, units: SocketUnits, network: Network) -> None:
        self.key = key
        self._units = units
        self._network = network
        self.ports: tuple[HeldPort, ...] = ()
        """What the socket unit listens on; empty when the pod's ports are its app's."""
        self.copies: HeldCopies | None = None
        """The daemon's copies of the unit's sockets, while it holds them."""

    @property
    def held(self) -> bool:
        """True while the socket unit holds the pod's ports."""
        return bool(self.ports)

    async def hold(self, containers: Sequence[Container], timer: StepTimer) -> None:
        """Sleep steps 1-3: migrate on, SO_REUSEPORT on the app's listeners, start the unit
        listening on exactly those addresses, take the daemon's copies. Raises on failure
        (the caller releases)."""
        netns = containers[0].identity.netns
        with timer.step("migrate"):
            await self._network.enable_migrate(netns)
        with timer.step("reuseport"):
            held: list[HeldPort] = []
            for container in containers:
                mapped = (
                    container.config.ports_for(container.identity.container)
                    if container.config
                    else ()
                )
                ports = await self._network.share_listeners(container.pid, mapped)
                container.listen_ports = tuple(sorted({p.port for p in ports}))
                held.extend(p for p in ports if p not in held)
        self.ports = tuple(held)
        if held:
            with timer.step("socket_unit"):
                await self._units.start(self.key, held, netns)
                await self.take_copies(netns)

    def restore_held(self, ports: Sequence[HeldPort]) -> None:
        """After a daemon restart: the unit of a sleeping pod still holds ``ports``."""
        self.ports = tuple(ports)

    async def take_copies(self, netns: str) -> None:
        """Take the daemon's copies of the unit's sockets (again, after a restart: the old
        ones went with the old daemon). Raises OSError when they cannot be taken; the ports
        stay recorded as held, so a wake still releases them."""
        if self.copies is not None:
            self.copies.close()
            self.copies = None
        self.copies = await self._network.take_copies(netns, self.ports)

    def _accept_waiting(self) -> list[socket.socket]:
        """Accept the clients waiting in the held sockets now (never blocks)."""
        copies = self.copies
        if copies is None or copies.closed:
            return []
        accepted: list[socket.socket] = []
        for sock in copies.sockets:
            while (taken := accept_nowait(sock)) is not None:
                accepted.append(taken[0])
        return accepted

    async def release_taking_queue(self) -> tuple[list[str], list[socket.socket]]:
        """The cold path's release: accept the waiting clients, stop the unit, accept those
        that came meanwhile (the daemon's copies still listen), then close the copies.
        Returns (what failed, the clients accepted: the caller relays them)."""
        accepted = self._accept_waiting()
        errors = await self._stop_unit()
        accepted += self._accept_waiting()
        if self.copies is not None:
            self.copies.close()
            self.copies = None
        return errors, accepted

    async def release(self) -> list[str]:
        """Hand the queue to the app at once (:meth:`HeldSockets.hand_over`), then stop the
        unit (and its service); the ports are the app's again. Returns what failed (logged
        by the caller). The waiting clients are served while systemd stops the unit over
        D-Bus (~3 ms), not after it."""
        if self.copies is not None:
            self.copies.hand_over()
            self.copies = None
        return await self._stop_unit()

    async def _stop_unit(self) -> list[str]:
        """Stop the unit (and its service); then the ports are no longer held. What failed."""
        errors: list[str] = []
        try:
            await self._units.stop(self.key)
        except Exception as err:  # the unit may keep the ports: a client may wait, say so
            errors.append(f"stopping {self.key.socket} failed: {err}")
        self.ports = ()
        return errors
