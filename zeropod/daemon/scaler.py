"""Decides when a pod sleeps or wakes and runs the sequence under the pod's lock.

Entry points: :meth:`Scaler.sleep` (idle loop, ``zeropodctl sleep``), :meth:`Scaler.wake`
(``zeropodctl wake``, a shim's ``wake`` before an Exec, a real client on a held socket) and
:meth:`Scaler.on_activation` (the activated service handed the held sockets over: watch them,
answer probes, wake on anything else). The steps themselves are in :mod:`.sleep` and
:mod:`.wake`; what a probe is, in :mod:`.probes`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

from zeropod.activity.sockdiag import normalise
from zeropod.activity.sources import Network, excluded
from zeropod.control.protocol import NOT_FOUND, ControlError
from zeropod.daemon import probes, proctime, proxy
from zeropod.daemon.backoff import SLEEP_FAILED
from zeropod.daemon.handoff import HeldSockets
from zeropod.daemon.idle import scaledown_after
from zeropod.daemon.phase import Phase
from zeropod.daemon.pods import Pod, PodKey, Pods, pod_phase
from zeropod.daemon.registry import Container
from zeropod.daemon.sleep import SleepOutcome, sleep_pod
from zeropod.daemon.steps import Machinery
from zeropod.daemon.wake import wake_pod
from zeropod.journal import Journal

HANDOFF_IDLE = 5.0
"""Seconds without a connection after which a probe-only hand-off ends."""
WAKE_FAILED = "wake_failed"
CONFLICT = "conflict"

QueueReader = Callable[[str, Sequence[int]], Any]
"""(netns, ports) -> the connections on those ports (sock_diag); blocking, run in a thread."""


def probe_settings(containers: Sequence[Container]) -> tuple[bool, int]:
    """(probe detection on, probe buffer size) for a pod: detection is off when any scaled
    container's config turns it off; the buffer is the largest asked for."""
    configs = [c.config for c in containers if c.config is not None]
    if not configs:
        return True, probes.MAX_REQUEST
    detection = not any(c.disable_probe_detection for c in configs)
    return detection, max(c.probe_buffer_size for c in configs)


class Scaler:
    """Sleeps and wakes pods; one sequence per pod at a time (the pod's lock)."""

    def __init__(
        self,
        pods: Pods,
        machinery: Machinery,
        journal: Journal,
        node_networks: Callable[[], Sequence[Network]],
        read_queue: QueueReader,
    ) -> None:
        self.pods = pods
        self.machinery = machinery
        self.journal = journal
        self.node_networks = node_networks
        """Loopback and the node's addresses now (e.g. an ExcludedSources)."""
        self.read_queue = read_queue
        self._tasks: set[asyncio.Task[None]] = set()

    # --- sleep and wake --------------------------------------------------------------------

    async def sleep(self, key: PodKey, reason: str, container: str | None = None) -> dict[str, Any]:
        """Put the pod to sleep (no-op when it sleeps); raises ControlError when it cannot."""
        self._scaled(key, container)
        pod = self.pods.get(key)
        async with pod.lock:
            containers = self._scaled(key, container)
            phase = pod_phase(containers)
            if phase is Phase.SCALED_DOWN:
                return self._describe(key)
            if phase is not Phase.RUNNING:
                states = ", ".join(
                    f"{c.identity.container} {c.phase.phase.value}" for c in containers
                )
                raise ControlError(CONFLICT, f"pod {key.label} cannot sleep now ({states})")
            outcome = await sleep_pod(pod, containers, self.machinery, self.journal, reason)
            if outcome.ok:
                pod.backoff.reset()
            else:
                next_try = self._back_off(pod, containers, outcome)
        if not outcome.ok:
            raise ControlError(SLEEP_FAILED, f"pod {key.label}: {outcome.error}; {next_try}")
        return self._describe(key)

    def _back_off(self, pod: Pod, containers: list[Container], outcome: SleepOutcome) -> str:
        """Record a failed sleep in the pod's back-off and log the one line about it."""
        error = outcome.error or "unknown error"
        delay = pod.backoff.delay_for_next(scaledown_after(containers))
        pod.backoff.failed(delay, error)
        next_try = f"next idle try in {delay:g} s (failure {pod.backoff.failures} in a row)"
        self.journal.error(
            f"{pod.key.label}: sleep failed, keeps running: {error}; {next_try}",
            unit=pod.key.service,
            pod=pod.key.pod,
            namespace=pod.key.namespace,
            state=Phase.RUNNING.value,
            sleep_failures=pod.backoff.failures,
            next_try_s=delay,
            **(outcome.fields or {}),
        )
        return next_try

    async def wake(
        self, key: PodKey, reason: str, client_since: float | None = None
    ) -> dict[str, Any]:
        """Wake the pod (no-op when it runs); raises ControlError when it does not run after.

        ``client_since``: when the daemon first saw the client whose connection wakes the pod
        (epoch seconds); kept in the containers' ``measured`` record while the wake runs, so
        that the RUNNING event tells how long the client waited (the wake-latency metric).
        """
        self._scaled(key, None)
        pod = self.pods.get(key)
        async with pod.lock:
            containers = self._scaled(key, None)
            sleeping = [c for c in containers if c.phase.phase in (Phase.SCALED_DOWN, Phase.FAILED)]
            if not sleeping:
                return self._describe(key)
            for container in sleeping:
                container.measured.client_waiting_since = client_since
            try:
                outcome = await wake_pod(pod, sleeping, self.machinery, self.journal, reason)
            finally:
                for container in sleeping:
                    container.measured.client_waiting_since = None
        if not outcome.ok:
            raise ControlError(WAKE_FAILED, f"pod {key.label}: {outcome.error}")
        return self._describe(key)

    async def wake_container(self, container_id: str) -> dict[str, Any]:
        """A shim's ``wake``: wake the pod of ``container_id`` (no-op for an unscaled one)."""
        container = self.pods.registry.get(container_id)
        if container is None:
            raise ControlError(NOT_FOUND, f"container {container_id!r} is not registered")
        if not container.managed:
            return {}
        return await self.wake(PodKey.of(container), f"{container.identity.container}: exec")

    async def forget(self, container: Container) -> None:
        """A container left (killed or deleted): its image goes; with the pod's last scaled
        container also its socket unit and hand-off."""
        key = PodKey.of(container)
        self.machinery.images.remove(container.identity.container_id)
        pod = self.pods.forget_if_empty(key)
        if pod is None:
            return
        if pod.handoff is not None:
            pod.handoff.close()
            pod.handoff = None
        try:
            await self.machinery.units.stop(key)
        except Exception as err:  # logged; a leftover unit is replaced at the next sleep
            self.journal.error(f"{key.label}: stopping {key.socket} failed: {err}")

    # --- the hand-off from the activated service -------------------------------------------

    async def on_activation(self, held: HeldSockets) -> None:
        """Take the held sockets of a sleeping pod and watch them until it wakes."""
        key = next((k for k in self.pods.pod_keys() if k.service == held.unit), None)
        if key is None:
            self.journal.warning(
                f"{held.unit} handed over sockets of no registered pod; closing them",
                unit=held.unit,
            )
            held.close()
            return
        pod = self.pods.get(key)
        if pod_phase(self.pods.scaled(key)) is Phase.RUNNING:
            # A late activation after the wake (systemd re-triggered before the stop): the
            # app listens again, so our copies must go for the queue to migrate to it.
            held.close()
            return
        if pod.handoff is not None:
            pod.handoff.close()
        pod.handoff = held
        self.journal.info(
            f"{key.label}: {held.unit} handed over {len(held.sockets)} socket(s)",
            unit=key.service,
            pod=key.pod,
            namespace=key.namespace,
        )
        # The connection that made systemd start the activated service waits since its start.
        started = proctime.connection_peer_started(held.connection)
        task = asyncio.create_task(self._watch(pod, held, started or time.time()))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch(self, pod: Pod, held: HeldSockets, handed_over: float) -> None:
        """Answer probes on the held sockets; wake the pod for anything else.

        A client's wait is counted from ``handed_over`` (when the activated service started,
        see :mod:`.proctime`) for the connection that made systemd start the service, from the
        moment a held socket turned readable for later ones.
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
                    self._drop_handoff(pod, held)
                    return
                listener = ready.result()
                if held.closed or listener is None:
                    return
                seen = first_seen if first_seen is not None else time.time()
                first_seen = None
                if not await self._serve_probes(pod, held, listener, seen):
                    return
        except Exception as err:  # a broken watch must not leave the pod asleep forever
            self.journal.error(f"{pod.key.label}: watching held sockets failed: {err!r}")
            await self._wake_quietly(pod.key, f"hand-off watch failed: {err}")
        finally:
            gone.cancel()
            if pod.handoff is not held:
                held.close()  # released or replaced meanwhile: never keep a stale copy

    async def _serve_probes(
        self, pod: Pod, held: HeldSockets, listener: socket.socket, seen: float
    ) -> bool:
        """One round: True to keep watching, False once a wake has been asked for."""
        containers = self.pods.scaled(pod.key)
        if not containers:
            return False
        netns = containers[0].identity.netns
        detection, buffer_size = probe_settings(containers)
        if not detection:  # every connection is a client: wake without accepting
            await self._wake_quietly(pod.key, "a connection (probe detection disabled)", seen)
            return False
        ports = [p.port for p in pod.held_ports] or [listener.getsockname()[1]]
        connections = await asyncio.to_thread(self.read_queue, netns, ports)
        node = self.node_networks()
        decision = probes.decide(connections, ports, node)
        refresh = getattr(self.node_networks, "refresh", None)
        if decision.verdict is probes.Verdict.WAKE and refresh is not None:
            node = refresh()  # the source may be a node address newer than the cache
            decision = probes.decide(connections, ports, node)
        if decision.verdict is probes.Verdict.WAKE:
            await self._wake_quietly(pod.key, decision.reason, seen)
            return False
        try:
            conn, peer = listener.accept()
        except BlockingIOError:
            await asyncio.sleep(0.01)  # another round took it; look again
            return True
        if not excluded(normalise(peer[0]), node):
            await self._wake_and_relay(pod, conn, b"", f"connection from {peer[0]}", seen)
            return False
        kind, data = await probes.answer(conn, limit=buffer_size)
        if kind is probes.Kind.OTHER:
            await self._wake_and_relay(pod, conn, data, f"request from the node {peer[0]}", seen)
            return False
        for container in containers:
            container.measured.probes_answered += 1
        self.journal.info(
            f"{pod.key.label}: answered a {kind.value} from {peer[0]} without waking",
            unit=pod.key.service,
            pod=pod.key.pod,
            namespace=pod.key.namespace,
            probe=kind.name,
        )
        return True

    async def _wake_and_relay(
        self, pod: Pod, conn: socket.socket, data: bytes, why: str, seen: float
    ) -> None:
        netns = self.pods.scaled(pod.key)[0].identity.netns
        if await self._wake_quietly(pod.key, why, seen):
            try:
                await proxy.relay(conn, data, netns)
            except (OSError, TimeoutError) as err:
                self.journal.warning(f"{pod.key.label}: relaying a node connection failed: {err}")
        conn.close()

    async def _wake_quietly(self, key: PodKey, reason: str, seen: float | None = None) -> bool:
        try:
            await self.wake(key, reason, seen)
        except ControlError as err:
            self.journal.error(f"{key.label}: wake failed: {err.message}")
            return False
        return True

    def _drop_handoff(self, pod: Pod, held: HeldSockets) -> None:
        """The activated service went away: let systemd start it again on the next client."""
        held.close()
        if pod.handoff is held:
            pod.handoff = None

    # --- helpers ---------------------------------------------------------------------------

    def _scaled(self, key: PodKey, container: str | None) -> list[Container]:
        containers = self.pods.scaled(key)
        if not containers:
            raise ControlError(NOT_FOUND, f"pod {key.label} has no scaled containers")
        if container is not None and container not in {c.identity.container for c in containers}:
            raise ControlError(
                NOT_FOUND, f"{container!r} is not a scaled container of pod {key.label}"
            )
        return containers

    def _describe(self, key: PodKey) -> dict[str, Any]:
        pod = self.pods.get(key)
        containers = self.pods.scaled(key)
        phase = pod_phase(containers)
        return {
            "pod": {
                "namespace": key.namespace,
                "name": key.pod,
                "unit": key.service,
                "state": phase.value if phase else "MIXED",
                "ports": [p.listen_stream for p in pod.held_ports],
                "containers": [c.describe() for c in containers],
            }
        }

    async def close(self) -> None:
        """Stop watching held sockets (they stay with systemd; the pod stays asleep)."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
