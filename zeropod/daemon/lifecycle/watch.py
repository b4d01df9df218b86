"""Watching a sleeping pod's held sockets: answer probes without waking, wake for a client.

Once a sleep holds the pod's ports (and after a daemon restart, for every pod still asleep),
:class:`HeldPortWatch` waits for one of the daemon's copies of the held sockets
(:mod:`zeropod.daemon.adapters.heldcopies`) to turn readable, and lets :mod:`.probes` decide:
probes from the node are accepted and answered, anything else wakes the pod. The probe check
is the wake's first timed step (``probe_check``): a recent SYN from outside the node in the
kernel's record of the held sockets wakes at once; otherwise it reads who is queued through
the pod's one netns view (sock_diag). Nothing runs while no client comes: the copies sit in
the event loop's epoll set.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable, Sequence

from zeropod.activity.sockdiag import IPAddress, normalise
from zeropod.activity.sources import Network, excluded, may_be_local
from zeropod.contract.protocol import ControlError
from zeropod.daemon.adapters import relay
from zeropod.daemon.adapters.heldcopies import accept_nowait
from zeropod.daemon.lifecycle import probes
from zeropod.daemon.lifecycle.podlife import PodLife
from zeropod.daemon.lifecycle.pods import Pods
from zeropod.daemon.model.pod import PodKey
from zeropod.daemon.model.registry import Container
from zeropod.journal import Journal
from zeropod.steptimer import StepTimer


def probe_settings(containers: Sequence[Container]) -> tuple[bool, int]:
    """(probe detection on, probe buffer size) for a pod: detection is off when any scaled
    container's config turns it off; the buffer is the largest asked for."""
    configs = [c.config for c in containers if c.config is not None]
    if not configs:
        return True, probes.MAX_REQUEST
    detection = not any(c.disable_probe_detection for c in configs)
    return detection, max(c.probe_buffer_size for c in configs)


class HeldPortWatch:
    """Watches the daemon's copies of each sleeping pod's held sockets, one task per pod."""

    def __init__(
        self, pods: Pods, journal: Journal, node_networks: Callable[[], Sequence[Network]]
    ) -> None:
        self.pods = pods
        self.journal = journal
        self.node_networks = node_networks
        """Loopback and the node's addresses now (an ExcludedSources, or a fake)."""
        self.may_be_local: Callable[[IPAddress], bool] = may_be_local
        """Whether an address may be the node's own (bind test; a fake in tests)."""
        self._tasks: dict[PodKey, asyncio.Task[None]] = {}

    def watch(self, life: PodLife) -> None:
        """Start watching the pod's copies of its held sockets (nothing to do when it has
        none, or when they are watched already)."""
        copies = life.ports.copies
        if copies is None or copies.closed:
            return
        running = self._tasks.get(life.key)
        if running is not None and not running.done():
            return  # the task follows life.ports.copies, whichever copies they are now
        task = asyncio.create_task(self._watch(life))
        self._tasks[life.key] = task
        task.add_done_callback(lambda done: self._forget(life.key, done))

    def _forget(self, key: PodKey, task: asyncio.Task[None]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]

    async def _watch(self, life: PodLife) -> None:
        """Answer probes on the held sockets until a client wakes the pod, or the copies are
        closed (the ports released). A client's wait counts from the moment a held socket
        turned readable."""
        try:
            while (copies := life.ports.copies) is not None:
                listener = await copies.readable()
                if listener is None:
                    if copies is life.ports.copies:
                        return  # closed and still the pod's: nothing left to watch
                    continue  # replaced meanwhile: watch the new copies
                if not await self._serve_probes(life, listener, time.time()):
                    return
        except Exception as err:  # a broken watch must not leave the pod asleep forever
            self.journal.error(f"{life.key.label}: watching held sockets failed: {err!r}")
            await self._wake(life, f"the held-port watch failed: {err}", None, StepTimer())

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
            cached = getattr(self.node_networks, "cached", None)
            node = cached() if cached is not None else self.node_networks()
            decision = self._recent_client(life, node)
            if decision is None:
                decision, node = await self._queued(life, listener, ports, node)
        if decision.verdict is probes.Verdict.WAKE:
            await self._wake(life, decision.reason, seen, timer)
            return False
        taken = accept_nowait(listener)
        if taken is None:
            await asyncio.sleep(0.01)  # another round took it; look again
            return True
        conn, peer = taken
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

    def _recent_client(self, life: PodLife, node: Sequence[Network]) -> probes.Decision | None:
        """A WAKE from the kernel's SYN record of the held sockets, when it proves a client
        knocked (no walk of the TCP hash); None leaves the verdict to :meth:`_queued`, and
        so does a source that may be a node address the cached list does not know yet."""
        copies = life.ports.copies
        record = copies.syn_log if copies is not None else None
        if record is None:
            return None
        try:
            syns = record.syns()
        except OSError as err:
            self.journal.warning(f"{life.key.label}: reading the SYN record failed: {err}")
            return None
        decision = probes.recent_client(syns, node, time.monotonic_ns())
        if decision is None or decision.source is None or self.may_be_local(decision.source):
            return None
        return decision

    async def _queued(
        self, life: PodLife, listener: socket.socket, ports: list[int], node: Sequence[Network]
    ) -> tuple[probes.Decision, Sequence[Network]]:
        """The verdict on who is queued (one sock_diag dump of the held listeners' families),
        judged by the node's addresses as last read. A node address newer than that list
        would make a probe look like a client: if the deciding source binds here, read the
        addresses now and judge again (the common wake reads nothing). Returns the verdict
        and the addresses it used."""
        families = held_families(life, listener)
        connections = await life.net.connections(ports, probes.QUEUED_STATES, families)
        decision = probes.decide(connections, ports, node)
        refresh = getattr(self.node_networks, "refresh", None)
        if (
            decision.verdict is probes.Verdict.WAKE
            and decision.source is not None
            and refresh is not None
            and self.may_be_local(decision.source)
        ):
            node = await asyncio.to_thread(refresh)
            decision = probes.decide(connections, ports, node)
        return decision, node

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
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def held_families(life: PodLife, listener: socket.socket) -> set[int]:
    """The address families of the pod's held listeners (a dual-stack IPv6 listener's
    IPv4 clients are IPv6 sockets, v4-mapped)."""
    copies = life.ports.copies
    sockets = copies.sockets if copies is not None else [listener]
    return {s.family for s in sockets} | {listener.family}
