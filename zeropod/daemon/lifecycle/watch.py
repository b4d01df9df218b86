"""Watching a sleeping pod's held sockets: answer probes without waking, wake for a client.

The activated service hands the held sockets over (:mod:`zeropod.daemon.adapters.handoff`);
the pod's state decides whether the hand-off is kept (:meth:`PodLife.hand_over`). While it
is, :class:`HandoffWatch` waits for a held socket to turn readable, reads who is queued
through the pod's one netns view, and lets :mod:`.probes` decide: probes from the node are
accepted and answered, anything else wakes the pod. The probe check is the wake's first
timed step (``probe_check``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable, Sequence

from zeropod.activity.sockdiag import normalise
from zeropod.activity.sources import Network, excluded
from zeropod.contract.protocol import ControlError
from zeropod.daemon.adapters import proctime, relay
from zeropod.daemon.adapters.handoff import HeldSockets
from zeropod.daemon.lifecycle import probes
from zeropod.daemon.lifecycle.podlife import PodLife
from zeropod.daemon.lifecycle.pods import Pods
from zeropod.daemon.lifecycle.timing import StepTimer
from zeropod.daemon.model.registry import Container
from zeropod.journal import Journal

HANDOFF_IDLE = 5.0
"""Seconds without a connection after which a probe-only hand-off ends."""


def probe_settings(containers: Sequence[Container]) -> tuple[bool, int]:
    """(probe detection on, probe buffer size) for a pod: detection is off when any scaled
    container's config turns it off; the buffer is the largest asked for."""
    configs = [c.config for c in containers if c.config is not None]
    if not configs:
        return True, probes.MAX_REQUEST
    detection = not any(c.disable_probe_detection for c in configs)
    return detection, max(c.probe_buffer_size for c in configs)


class HandoffWatch:
    """Takes hand-offs (the activation server's callback) and watches the kept ones."""

    def __init__(
        self, pods: Pods, journal: Journal, node_networks: Callable[[], Sequence[Network]]
    ) -> None:
        self.pods = pods
        self.journal = journal
        self.node_networks = node_networks
        """Loopback and the node's addresses now (an ExcludedSources, or a fake)."""
        self._tasks: set[asyncio.Task[None]] = set()

    async def on_activation(self, held: HeldSockets) -> None:
        """The activated service of ``held.unit`` handed its sockets over."""
        life = self.pods.by_unit(held.unit)
        if life is None:
            self.journal.warning(
                f"{held.unit} handed over sockets of no registered pod; closing them",
                unit=held.unit,
            )
            held.close()
            return
        if not life.hand_over(held):
            return
        self.journal.info(
            f"{life.key.label}: {held.unit} handed over {len(held.sockets)} socket(s)",
            unit=life.key.service,
            pod=life.key.pod,
            namespace=life.key.namespace,
        )
        # The connection that made systemd start the activated service waits since its start.
        started = proctime.connection_peer_started(held.connection)
        task = asyncio.create_task(self._watch(life, held, started or time.time()))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch(self, life: PodLife, held: HeldSockets, handed_over: float) -> None:
        """Answer probes on the held sockets until a client wakes the pod.

        A client's wait counts from ``handed_over`` (when the activated service started, see
        :mod:`zeropod.daemon.adapters.proctime`) for the connection that made systemd start
        it, from the moment a held socket turned readable for later ones.
        """
        gone = asyncio.ensure_future(held.activator_gone())
        first_seen: float | None = handed_over
        try:
            while not held.closed:
                ready = asyncio.ensure_future(held.readable())
                await asyncio.wait(
                    {ready, gone}, timeout=HANDOFF_IDLE, return_when=asyncio.FIRST_COMPLETED
                )
                if not ready.done():
                    # The activated service died, or nothing came for a while: end the
                    # hand-off so no process stays up per sleeping pod; systemd starts the
                    # service again for the next connection.
                    ready.cancel()
                    life.ports.drop(held)
                    return
                listener = ready.result()
                if held.closed or listener is None:
                    return
                seen = first_seen if first_seen is not None else time.time()
                first_seen = None
                if not await self._serve_probes(life, listener, seen):
                    return
        except Exception as err:  # a broken watch must not leave the pod asleep forever
            self.journal.error(f"{life.key.label}: watching held sockets failed: {err!r}")
            await self._wake(life, f"hand-off watch failed: {err}", None, StepTimer())
        finally:
            gone.cancel()
            if life.ports.handoff is not held:
                held.close()  # released or replaced meanwhile: never keep a stale copy

    async def _serve_probes(self, life: PodLife, listener: socket.socket, seen: float) -> bool:
        """One round: True to keep watching, False once a wake has been asked for."""
        containers = life.containers()
        if not containers:
            return False
        timer = StepTimer()
        detection, buffer_size = probe_settings(containers)
        if not detection:  # every connection is a client: wake without accepting
            await self._wake(life, "a connection (probe detection disabled)", seen, timer)
            return False
        ports = [p.port for p in life.ports.ports] or [listener.getsockname()[1]]
        with timer.step("probe_check"):
            connections = await life.net.connections(ports, probes.QUEUED_STATES)
            node = self.node_networks()
            decision = probes.decide(connections, ports, node)
            refresh = getattr(self.node_networks, "refresh", None)
            if decision.verdict is probes.Verdict.WAKE and refresh is not None:
                node = await asyncio.to_thread(refresh)  # a node address newer than the cache
                decision = probes.decide(connections, ports, node)
        if decision.verdict is probes.Verdict.WAKE:
            await self._wake(life, decision.reason, seen, timer)
            return False
        try:
            conn, peer = listener.accept()
        except BlockingIOError:
            await asyncio.sleep(0.01)  # another round took it; look again
            return True
        if not excluded(normalise(peer[0]), node):
            await self._wake_and_relay(life, conn, b"", f"connection from {peer[0]}", seen)
            return False
        kind, data = await probes.answer(conn, limit=buffer_size)
        if kind is probes.Kind.OTHER:
            await self._wake_and_relay(life, conn, data, f"request from the node {peer[0]}", seen)
            return False
        for container in containers:
            container.measured.probes_answered += 1
        self.journal.info(
            f"{life.key.label}: answered a {kind.value} from {peer[0]} without waking",
            unit=life.key.service,
            pod=life.key.pod,
            namespace=life.key.namespace,
            probe=kind.name,
        )
        return True

    async def _wake_and_relay(
        self, life: PodLife, conn: socket.socket, data: bytes, why: str, seen: float
    ) -> None:
        containers = life.containers()
        if containers and await self._wake(life, why, seen, StepTimer()):
            try:
                await relay.relay(conn, data, containers[0].identity.netns)
            except (OSError, TimeoutError) as err:
                self.journal.warning(f"{life.key.label}: relaying a node connection failed: {err}")
        conn.close()

    async def _wake(self, life: PodLife, reason: str, seen: float | None, timer: StepTimer) -> bool:
        try:
            await life.wake(reason, seen, timer)
        except ControlError as err:
            self.journal.error(f"{life.key.label}: wake failed: {err.message}")
            return False
        return True

    async def close(self) -> None:
        """Stop watching (the sockets stay with systemd; the pods stay asleep)."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
