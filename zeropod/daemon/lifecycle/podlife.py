"""One pod's life: the one object that owns its lock, its state, its held ports (and the
daemon's copies of them) and its view of the pod netns. Every sleep, wake and forget of a pod
goes through its :class:`PodLife`; the state object decides what is legal (:mod:`.states`), the
sequences do the steps (:mod:`.sleep`, :mod:`.wake`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from zeropod.contract.protocol import NOT_FOUND, SLEEP_FAILED, WAKE_FAILED, ControlError
from zeropod.daemon.lifecycle import states
from zeropod.daemon.lifecycle.backoff import Backoff
from zeropod.daemon.lifecycle.idle import scaledown_after
from zeropod.daemon.lifecycle.interfaces import Images, NetView, Shim
from zeropod.daemon.lifecycle.ports import PortHold
from zeropod.daemon.lifecycle.sleep import sleep_pod
from zeropod.daemon.lifecycle.wake import wake_pod
from zeropod.daemon.model.phase import Phase
from zeropod.daemon.model.pod import PodKey
from zeropod.daemon.model.registry import Container, Registry
from zeropod.journal import Journal
from zeropod.steptimer import StepTimer


class PodLife:
    """A pod's scaled containers sleep and wake together, one sequence at a time.

    ``lock`` guards ``state``, ``ports.ports`` and the phases and pids of the pod's
    containers: only a sequence holding it changes them (:meth:`run_sleep`,
    :meth:`run_wake`, :meth:`forget`); :meth:`settle` changes ``state`` only while the lock
    is free. Everything runs on the daemon's one event loop; the one blocking thing, the
    netns view, runs in worker threads behind its own lock (:mod:`..adapters.podnet`).
    """

    def __init__(
        self,
        key: PodKey,
        registry: Registry,
        *,
        shim: Shim,
        images: Images,
        ports: PortHold,
        net: NetView,
        journal: Journal,
    ) -> None:
        self.key = key
        self._registry = registry
        self.shim = shim
        self.images = images
        self.ports = ports
        self.net = net
        """The pod netns's sock_diag view, shared by the idle loop, the watch and the wake."""
        self.journal = journal
        self.lock = asyncio.Lock()
        self.state: states.PodState = states.RUNNING
        """Guarded by ``lock`` (see the class docstring)."""
        self.moved = asyncio.Event()
        """Set at every change of ``state``; the idle loop clears it and waits on it while
        the pod sleeps (nothing polls a sleeping pod)."""
        self.backoff = Backoff()
        """Failed sleeps in a row; written by the sleep (lock held) and by a registration."""
        self.wake_retry = Backoff()
        """Failed retries of a FAILED pod's wake by the idle loop (the loop's alone)."""
        self.on_ports_held: Callable[[PodLife], None] | None = None
        """Called once the sleep holds the ports, before any dump: the daemon saves them, so a
        restart in the middle of the dump still knows what its socket unit holds, and starts
        watching its copies (a client during the dump wakes the pod right after it)."""

    # --- what the pod is -------------------------------------------------------------------

    def containers(self) -> list[Container]:
        """The pod's scaled containers still registered (not STOPPED), by name."""
        return [
            c
            for c in self._registry
            if c.managed and c.phase.phase is not Phase.STOPPED and PodKey.of(c) == self.key
        ]

    def _scaled(self, container: str | None = None) -> list[Container]:
        containers = self.containers()
        if not containers:
            raise ControlError(NOT_FOUND, f"pod {self.key.label} has no scaled containers")
        if container is not None and container not in {c.identity.container for c in containers}:
            raise ControlError(
                NOT_FOUND, f"{container!r} is not a scaled container of pod {self.key.label}"
            )
        return containers

    def settle(self) -> None:
        """Containers came or went with no sequence running: the state follows their phases."""
        if not self.lock.locked():
            self._settle_locked()

    def _settle_locked(self) -> None:
        self._set_state(self._at_rest())

    def _set_state(self, state: states.PodState) -> None:
        if state is not self.state:
            self.state = state
            self.moved.set()

    def _at_rest(self) -> states.PodState:
        return states.at_rest([c.phase.phase for c in self.containers()])

    def _move(self, target: states.PodState) -> None:
        if target not in states.MOVES[self.state]:
            raise states.IllegalOperation(self.key.label, self.state.name, f"move to {target}")
        self._set_state(target)

    # --- operations: each is the state's to allow ------------------------------------------

    async def sleep(self, reason: str, container: str | None = None) -> None:
        """Put the pod to sleep (nothing to do when it sleeps). Raises ControlError:
        ``conflict`` when its state does not allow it, ``sleep_failed`` when it failed."""
        self._scaled(container)
        async with self.lock:
            self._scaled(container)
            await self.state.sleep(self, reason)

    async def wake(
        self, reason: str, client_since: float | None = None, timer: StepTimer | None = None
    ) -> None:
        """Wake the pod (nothing to do when it runs); raises ControlError ``wake_failed``
        when some container does not run after. ``client_since``: when the daemon first saw
        the client that wakes it (epoch s, for the wake-latency metric); ``timer``: the steps
        already taken for that client (the probe check), continued by the wake."""
        self._scaled()
        async with self.lock:
            self._scaled()
            await self.state.wake(self, reason, client_since, timer)

    # --- the sequences, run by the states under the lock -----------------------------------

    async def run_sleep(self, reason: str) -> None:
        containers = self.containers()
        self._move(states.GOING_TO_SLEEP)
        try:
            outcome = await sleep_pod(self, containers, reason)
        finally:
            self._end_sequence(containers, "sleep")
        if outcome.ok:
            self.backoff.reset()
            return
        error = outcome.error or "unknown error"
        delay = self.backoff.delay_for_next(scaledown_after(containers))
        self.backoff.failed(delay, error)
        next_try = f"next idle try in {delay:g} s (failure {self.backoff.failures} in a row)"
        self.journal.error(
            f"{self.key.label}: sleep failed, keeps running: {error}; {next_try}",
            unit=self.key.service,
            pod=self.key.pod,
            namespace=self.key.namespace,
            state=Phase.RUNNING.value,
            sleep_failures=self.backoff.failures,
            next_try_s=delay,
            **(outcome.fields or {}),
        )
        raise ControlError(SLEEP_FAILED, f"pod {self.key.label}: {error}; {next_try}")

    async def run_wake(
        self, reason: str, client_since: float | None, timer: StepTimer | None
    ) -> None:
        sleeping = [
            c for c in self.containers() if c.phase.phase in (Phase.SCALED_DOWN, Phase.FAILED)
        ]
        self._move(states.WAKING)
        for container in sleeping:
            container.measured.client_waiting_since = client_since
        try:
            outcome = await wake_pod(self, sleeping, reason, timer or StepTimer())
        finally:
            for container in sleeping:
                container.measured.client_waiting_since = None
            self._end_sequence(self.containers(), "wake")
        if not outcome.ok:
            raise ControlError(WAKE_FAILED, f"pod {self.key.label}: {outcome.error}")

    def _end_sequence(self, containers: list[Container], sequence: str) -> None:
        """A sequence ended, however it did: no container stays in a phase between two (an
        interrupted one is FAILED, so the next wake asks its shim), and the pod's state
        follows the phases."""
        for container in containers:
            if container.phase.phase in (Phase.CHECKPOINTING, Phase.RESTORING):
                container.phase.transition(Phase.FAILED, f"{sequence} interrupted")
        self._move(self._at_rest())

    async def forget(self, container: Container) -> bool:
        """``container`` left (killed or deleted): its image goes; with the pod's last scaled
        container also the held ports and the netns view. True when the pod is empty."""
        await asyncio.to_thread(self.images.remove, container.identity.container_id)
        async with self.lock:
            if self.containers():
                self._settle_locked()
                return False
            errors = await self.ports.release()
            self.net.close()
        for error in errors:  # a leftover unit is replaced at the next sleep
            self.journal.error(f"{self.key.label}: {error}", unit=self.key.service)
        return True


LifeFactory = Callable[[PodKey, str], PodLife]
"""(pod, its netns path) -> a new PodLife wired to the node (or to fakes)."""
