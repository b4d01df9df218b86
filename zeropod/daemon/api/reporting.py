"""What the daemon tells about its containers: the journal line of a registration and the
event record of a change (for ``zeropodctl events`` and the metrics). Values only."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from zeropod.daemon.model.phase import Transition
from zeropod.daemon.model.registry import Container, iso_time
from zeropod.journal import Journal


def log_registration(
    journal: Journal, container: Container, verb: str, bad_key: str | None
) -> None:
    """One journal line for a (re-)registration: how the container is scaled, or why not."""
    label = container.identity.label
    fields = container.journal_fields()
    if bad_key is not None:
        journal.warning(
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
        summary = f"managed, scales down after {config.scaledown_seconds:g}s idle, ports {ports}"
    managed = "yes" if container.managed else "no"
    journal.info(f"{label}: {verb} (pid {container.pid}), {summary}", managed=managed, **fields)


def event(kind: str, container: Container, transition: Transition | None) -> dict[str, Any]:
    """The event subscribers (``zeropodctl events``, the metrics) get for a change."""
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
        # What the container measured so far, as of this event (metrics read it).
        "measured": asdict(container.measured),
    }
