"""The daemon's answers to control requests: register, unregister, status, events.

Registration parses the container's annotations (a bad value leaves the container
registered but unmanaged, with one journal line naming the key), creates its phase owner and
logs it. Every phase transition of every container is logged to the journal and published
to event subscribers from here.
"""

from __future__ import annotations

import time
from typing import Any

from zeropod.config.annotations import (
    CONTAINER_NAMES,
    AnnotationError,
    ScalingConfig,
    parse_annotations,
)
from zeropod.control.protocol import NOT_FOUND, UNKNOWN_OP, ControlError
from zeropod.control.requests import (
    RegisterRequest,
    Request,
    StatusRequest,
    UnregisterRequest,
)
from zeropod.daemon.events import EventHub, Subscription
from zeropod.daemon.phase import IllegalTransition, Phase, PhaseOwner, Transition
from zeropod.daemon.registry import Container, ContainerIdentity, Registry, iso_time
from zeropod.journal import Journal


class ControlService:
    """Implements the control handler on top of the registry, the journal and the event hub."""

    def __init__(self, registry: Registry, journal: Journal, hub: EventHub) -> None:
        self.registry = registry
        self.journal = journal
        self.hub = hub

    async def handle(self, request: Request) -> dict[str, Any]:
        """Answer one control request (see :class:`zeropod.control.server.ControlHandler`)."""
        match request:
            case RegisterRequest():
                return self.register(request)
            case UnregisterRequest():
                return self.unregister(request.container_id)
            case StatusRequest():
                return {"containers": [c.describe() for c in self.registry]}
        raise ControlError(UNKNOWN_OP, f"op {request.OP!r} is not served by this daemon")

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
        self._log_registration(container, verb, bad_key)
        self.hub.publish(self._event(verb, container, None))
        return {"managed": container.managed, "reason": reason}

    def unregister(self, container_id: str) -> dict[str, Any]:
        """Forget a container; its phase ends in STOPPED."""
        container = self.registry.remove(container_id)
        if container is None:
            raise ControlError(NOT_FOUND, f"container {container_id!r} is not registered")
        if container.phase.phase is not Phase.STOPPED:
            container.phase.transition(Phase.STOPPED, "unregistered by its shim")
        self.hub.publish(self._event("unregistered", container, None))
        return {}

    def _new_container(
        self,
        identity: ContainerIdentity,
        pid: int,
        config: ScalingConfig | None,
        reason: str | None,
    ) -> Container:
        container: Container

        def observe(transition: Transition) -> None:
            self._on_transition(container, transition)

        def on_illegal(error: IllegalTransition) -> None:
            label = container.identity.label
            self.journal.error(f"{label}: {error}", **container.journal_fields())

        phase = PhaseOwner(Phase.RUNNING, observer=observe, on_illegal=on_illegal)
        container = Container(identity, pid, config, reason, phase)
        return container

    def _on_transition(self, container: Container, transition: Transition) -> None:
        self.journal.info(
            f"{container.identity.label}: {transition.previous.value} -> "
            f"{transition.phase.value} ({transition.reason})",
            previous_state=transition.previous.value,
            reason=transition.reason,
            **container.journal_fields(),
        )
        self.hub.publish(self._event("transition", container, transition))

    def _log_registration(self, container: Container, verb: str, bad_key: str | None) -> None:
        label = container.identity.label
        fields = container.journal_fields()
        if bad_key is not None:
            self.journal.warning(
                f"{label}: {container.unmanaged_reason}", annotation=bad_key, managed="no", **fields
            )
            return
        config = container.config
        if config is None:
            summary = f"unmanaged: {container.unmanaged_reason}"
        elif not config.scales_on_idle:
            summary = "managed, never scales down on idle (scaledown-duration 0)"
        else:
            ports = ",".join(map(str, container.ports)) or "auto-detected"
            summary = (
                f"managed, scales down after {config.scaledown_seconds:g}s idle, ports {ports}"
            )
        managed = "yes" if container.managed else "no"
        self.journal.info(
            f"{label}: {verb} (pid {container.pid}), {summary}", managed=managed, **fields
        )

    @staticmethod
    def _event(kind: str, container: Container, transition: Transition | None) -> dict[str, Any]:
        identity = container.identity
        return {
            "type": kind,
            "time": iso_time(transition.at if transition else time.time()),
            "id": identity.container_id,
            "namespace": identity.namespace,
            "pod": identity.pod,
            "container": identity.container,
            "state": container.phase.phase.value,
            "previous": transition.previous.value if transition else None,
            "reason": transition.reason if transition else container.unmanaged_reason,
            "managed": container.managed,
        }
