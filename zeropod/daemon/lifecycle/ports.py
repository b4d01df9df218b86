"""Holding a sleeping pod's ports, and releasing them: the one place that does either.

While a pod sleeps, systemd's transient socket unit listens on exactly the app's addresses,
and once a client came, the daemon holds copies of those sockets (the activated service's
hand-off). :class:`PortHold` owns both and is the only code that starts the unit, adopts or
drops a hand-off, and releases the ports.

Release order (measured, see the daemon's README): stop the socket unit and the activated
service first, then close the daemon's copies. When the activated service exited first,
systemd found the socket readable with its stop job pending and flushed it, resetting every
queued client; with the daemon's copy closed last, the queue migrates to the app.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

from zeropod.daemon.lifecycle.interfaces import Handoff, Network, SocketUnits
from zeropod.daemon.lifecycle.timing import StepTimer
from zeropod.daemon.model.pod import HeldPort, PodKey
from zeropod.daemon.model.registry import Container


class PortHold:
    """A pod's held ports and the daemon's copies of them.

    ``ports`` is written only by :meth:`hold` and :meth:`release`, which run under the pod's
    lock (inside a sleep, a wake or a forget). ``handoff`` is also written by :meth:`adopt`
    and :meth:`drop`, which run on the event loop outside the lock (the activation server
    and the hand-off watch): both are synchronous, so a sequence sees ``handoff`` change only
    across an ``await``, and the sequences read it only in :meth:`drain` and :meth:`release`.
    """

    def __init__(self, key: PodKey, units: SocketUnits, network: Network) -> None:
        self.key = key
        self._units = units
        self._network = network
        self.ports: tuple[HeldPort, ...] = ()
        """What the socket unit listens on; empty when the pod's ports are its app's."""
        self.handoff: Handoff | None = None
        """The activated service's sockets, while the daemon holds them."""

    @property
    def held(self) -> bool:
        """True while the socket unit holds the pod's ports."""
        return bool(self.ports)

    async def hold(self, containers: Sequence[Container], timer: StepTimer) -> None:
        """Sleep steps 1-3: migrate on, SO_REUSEPORT on the app's listeners, start the unit
        listening on exactly those addresses. Raises on failure (the caller releases)."""
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

    def restore_held(self, ports: Sequence[HeldPort]) -> None:
        """After a daemon restart: the unit of a sleeping pod still holds ``ports``."""
        self.ports = tuple(ports)

    def adopt(self, handoff: Handoff) -> bool:
        """The activated service handed its sockets over: keep them while the ports are held
        (replacing an older hand-off), else close them at once. True when kept."""
        if not self.held:
            handoff.close()  # the app listens again: our copies must go for its queue
            return False
        if self.handoff is not None and self.handoff is not handoff:
            self.handoff.close()
        self.handoff = handoff
        return True

    def drop(self, handoff: Handoff) -> None:
        """A hand-off ended (its service went, or it stayed quiet): close it, forget it."""
        handoff.close()
        if self.handoff is handoff:
            self.handoff = None

    def drain(self) -> list[socket.socket]:
        """Accept the clients waiting in the held sockets (the cold path relays them)."""
        return self.handoff.drain() if self.handoff is not None else []

    async def release(self) -> list[str]:
        """Stop the unit (and the activated service), then close the daemon's copies; the
        ports are the app's again. Returns what failed (logged by the caller)."""
        errors: list[str] = []
        try:
            await self._units.stop(self.key)
        except Exception as err:  # the unit may keep the ports: a client may wait, say so
            errors.append(f"stopping {self.key.socket} failed: {err}")
        if self.handoff is not None:
            self.handoff.close()
            self.handoff = None
        self.ports = ()
        return errors
