"""The daemon's answers to control requests: register, unregister, status, events, sleep, wake.

Registration parses the container's annotations (a bad value leaves the container
registered but unmanaged, with one journal line naming the key), creates its phase owner and
logs it. Every phase transition of every container is logged to the journal, published to
event subscribers and saved to the state directory from here. ``sleep`` and ``wake`` go to
the pod's :class:`~zeropod.daemon.lifecycle.podlife.PodLife`; a managed container's pod gets its
idle loop.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from zeropod.config.annotations import (
    CONTAINER_NAMES,
    AnnotationError,
    ScalingConfig,
    parse_annotations,
)
from zeropod.contract.protocol import NOT_FOUND, UNKNOWN_OP, ControlError
from zeropod.contract.requests import (
    RegisterRequest,
    Request,
    RestartedColdRequest,
    SleepRequest,
    StatusRequest,
    UnregisterRequest,
    WakeRequest,
)
from zeropod.daemon.api.eventhub import EventHub, Subscription
from zeropod.daemon.api.reporting import event, log_registration
from zeropod.daemon.api.status import describe_container, describe_pod
from zeropod.daemon.lifecycle.podlife import PodLife
from zeropod.daemon.lifecycle.pods import Pods
from zeropod.daemon.model.phase import IllegalTransition, Phase, PhaseOwner, Transition
from zeropod.daemon.model.pod import PodKey
from zeropod.daemon.model.registry import Container, ContainerIdentity, Registry, iso_time
from zeropod.journal import Journal

if TYPE_CHECKING:
    from zeropod.daemon.adapters.statefiles import StateStore
    from zeropod.daemon.lifecycle.idle import IdleLoops


class ControlService:
    """Implements the control handler on top of the registry, the journal and the event hub."""

    def __init__(
        self,
        registry: Registry,
        journal: Journal,
        hub: EventHub,
        *,
        pods: Pods,
        idle: IdleLoops | None = None,
        store: StateStore | None = None,
    ) -> None:
        self.registry = registry
        self.journal = journal
        self.hub = hub
        self.pods = pods
        self.idle = idle
        self.store = store

    async def handle(self, request: Request) -> dict[str, Any]:
        match request:
            case RegisterRequest():
                return self.register(request)
            case UnregisterRequest():
                return await self.unregister_async(request.container_id, request.reason)
            case StatusRequest():
                return {"containers": [self._status_entry(c) for c in self.registry]}
            case SleepRequest():
                life = self._life(PodKey(request.namespace, request.pod))
                await life.sleep("zeropodctl sleep", request.container)
                return describe_pod(life)
            case RestartedColdRequest():
                return self.restarted_cold(request)
            case WakeRequest(container_id=str(container_id)):
                container = self.registry.get(container_id)
                if container is None:
                    raise ControlError(NOT_FOUND, f"container {container_id!r} is not registered")
                if not container.managed:
                    return {}
                life = self.pods.life_of(container)
                await life.wake(f"{container.identity.container}: exec")
                return describe_pod(life)
            case WakeRequest(pod=str(pod), namespace=str(namespace)):
                life = self._life(PodKey(namespace, pod))
                await life.wake("zeropodctl wake")
                return describe_pod(life)
        raise ControlError(UNKNOWN_OP, f"op {request.OP!r} is not served by this daemon")

    def _life(self, key: PodKey) -> PodLife:
        life = self.pods.find(key)
        if life is None:
            raise ControlError(NOT_FOUND, f"pod {key.label} has no scaled containers")
        return life

    def _status_entry(self, container: Container) -> dict[str, Any]:
        entry = describe_container(container)
        backoff = self.pods.life_of(container).backoff if container.managed else None
        described = backoff.describe() if backoff is not None else None
        if described is not None and described["next_try"] is not None:
            described["next_try"] = iso_time(described["next_try"])
        entry["sleep_backoff"] = described
        return entry

    async def unregister_async(self, container_id: str, reason: str = "") -> dict[str, Any]:
        """Forget a container and clean up what it leaves behind (image, socket unit).

        A scaled container's phase changes only under its pod's lock: a sleep or wake under
        way ends first, then the container is STOPPED (never mid-sequence)."""
        container = self.registry.get(container_id)
        life = self.pods.find(PodKey.of(container)) if container and container.managed else None
        if container is None or life is None:
            return self.unregister(container_id, reason)
        async with life.lock:
            answer = self.unregister(container_id, reason)
        await self.pods.forget(container)
        return answer

    def subscribe(self) -> Subscription:
        """A subscription to every event published from now on."""
        return self.hub.subscribe()

    def register(self, request: RegisterRequest) -> dict[str, Any]:
        """Add (or refresh) a container; returns whether it is managed, and why not."""
        identity = ContainerIdentity(
            container_id=request.container_id,
            pod=request.pod,
            namespace=request.namespace,
            container=request.container,
            sandbox_id=request.sandbox_id,
            netns=request.netns,
            bundle=request.bundle,
            shim_socket=request.shim_socket,
        )
        config, reason, bad_key = None, None, None
        try:
            config = parse_annotations(request.annotations)
        except AnnotationError as err:
            reason, bad_key = f"{err}; the container runs unscaled", err.key
        if config is not None and not config.applies_to(identity.container):
            config, reason = None, f"not listed in {CONTAINER_NAMES}"

        existing = self.registry.get(identity.container_id)
        if existing is not None:
            existing.identity, existing.pid = identity, request.pid
            existing.config, existing.unmanaged_reason = config, reason
            container, verb = existing, "re-registered"
        else:
            container = self._new_container(identity, request.pid, config, reason)
            self.registry.add(container)
            verb = "registered"
        container.annotations = dict(request.annotations)
        container.unit = PodKey.of(container).service if container.managed else None
        if container.managed:  # a changed pod (restarted, new settings) may sleep afresh
            life = self.pods.life_of(container)
            life.backoff.reset()
            life.settle()
        log_registration(self.journal, container, verb, bad_key)
        self.hub.publish(event(verb, container, None))
        self._save(container)
        if container.managed and self.idle is not None:
            self.idle.ensure(PodKey.of(container))
        return {"managed": container.managed, "reason": reason}

    def restarted_cold(self, request: RestartedColdRequest) -> dict[str, Any]:
        """A shim killed a lazily restored container whose pages could not all be served,
        and started it cold: count it (a failed restore, a cold start) and say so."""
        container = self.registry.get(request.container_id)
        if container is None:
            raise ControlError(NOT_FOUND, f"container {request.container_id!r} is not registered")
        container.pid = request.pid
        container.measured.restore_errors += 1
        container.measured.cold_starts += 1
        container.measured.page_fetch_failures += 1
        self.journal.error(
            f"{container.identity.label}: restored memory lost after the wake, "
            f"killed and started cold: {request.error}",
            **container.journal_fields(),
        )
        self._save(container)
        return {}

    def unregister(self, container_id: str, reason: str = "") -> dict[str, Any]:
        """Forget a container; its phase ends in STOPPED."""
        container = self.registry.remove(container_id)
        if container is None:
            raise ControlError(NOT_FOUND, f"container {container_id!r} is not registered")
        if container.phase.phase is not Phase.STOPPED:
            why = f"unregistered by its shim: {reason}" if reason else "unregistered by its shim"
            container.phase.transition(Phase.STOPPED, why)
        self.hub.publish(event("unregistered", container, None))
        if self.store is not None:
            self.store.remove(container_id)
        return {}

    def restore_container(
        self,
        identity: ContainerIdentity,
        pid: int,
        annotations: dict[str, str],
        phase: Phase,
    ) -> Container:
        """Re-create a container from saved state at start (no journal line per field)."""
        config, reason = None, None
        try:
            config = parse_annotations(annotations)
        except AnnotationError as err:
            reason = f"{err}; the container runs unscaled"
        if config is not None and not config.applies_to(identity.container):
            config, reason = None, f"not listed in {CONTAINER_NAMES}"
        container = self._new_container(identity, pid, config, reason, phase)
        container.annotations = dict(annotations)
        container.unit = PodKey.of(container).service if container.managed else None
        self.registry.add(container)
        if container.managed:
            self.pods.life_of(container).settle()
            if self.idle is not None:
                self.idle.ensure(PodKey.of(container))
        return container

    def save_pod(self, life: PodLife) -> None:
        """Persist the pod's containers with the ports its socket unit holds now."""
        for container in life.containers():
            self._save(container)

    def _save(self, container: Container) -> None:
        if self.store is None or container.phase.phase is Phase.STOPPED:
            return
        life = self.pods.find(PodKey.of(container)) if container.managed else None
        held = life.ports.ports if life is not None else ()
        try:
            self.store.save(container, held)
        except OSError as err:
            self.journal.error(
                f"{container.identity.label}: saving state failed: {err}",
                **container.journal_fields(),
            )

    def _new_container(
        self,
        identity: ContainerIdentity,
        pid: int,
        config: ScalingConfig | None,
        reason: str | None,
        initial: Phase = Phase.RUNNING,
    ) -> Container:
        container: Container

        def observe(transition: Transition) -> None:
            self._on_transition(container, transition)

        def on_illegal(error: IllegalTransition) -> None:
            label = container.identity.label
            self.journal.error(f"{label}: {error}", **container.journal_fields())

        reason_text = "registered" if initial is Phase.RUNNING else "reloaded after a restart"
        phase = PhaseOwner(initial, reason=reason_text, observer=observe, on_illegal=on_illegal)
        container = Container(identity, pid, config, reason, phase)
        return container

    def _on_transition(self, container: Container, transition: Transition) -> None:
        """Log, publish and persist a transition. Never raises: it runs inside the sleep and
        wake sequences, whose clients must not fail because reporting did."""
        try:
            self._report_transition(container, transition)
        except Exception as err:  # reporting must not break a sequence
            print(
                f"zeropod: reporting {container.identity.label} {transition.phase.value} "
                f"failed: {err!r}",
                file=sys.stderr,
                flush=True,
            )

    def _report_transition(self, container: Container, transition: Transition) -> None:
        self.journal.info(
            f"{container.identity.label}: {transition.previous.value} -> "
            f"{transition.phase.value} ({transition.reason})",
            previous_state=transition.previous.value,
            reason=transition.reason,
            **container.journal_fields(),
        )
        self.hub.publish(event("transition", container, transition))
        self._save(container)
