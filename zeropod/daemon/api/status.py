"""How the control API shows containers and pods (JSON-ready), for ``status``, ``sleep``
and ``wake`` answers."""

from __future__ import annotations

from typing import Any

from zeropod.daemon.lifecycle.podlife import PodLife
from zeropod.daemon.model.registry import Container, iso_time


def describe_container(container: Container) -> dict[str, Any]:
    """This container as the ``status`` op reports it (JSON-ready)."""
    config = container.config
    return {
        "id": container.identity.container_id,
        "namespace": container.identity.namespace,
        "pod": container.identity.pod,
        "container": container.identity.container,
        "sandbox_id": container.identity.sandbox_id,
        "pid": container.pid,
        "state": container.phase.phase.value,
        "since": iso_time(container.phase.since),
        "unit": container.unit,
        "managed": container.managed,
        "unmanaged_reason": container.unmanaged_reason,
        "ports": list(container.ports),
        "scaledown_seconds": config.scaledown_seconds if config else None,
        "disable_checkpointing": config.disable_checkpointing if config else None,
        "last_checkpoint_ms": container.measured.last_checkpoint_ms,
        "last_restore_ms": container.measured.last_restore_ms,
        "checkpoint_errors": container.measured.checkpoint_errors,
        "restore_errors": container.measured.restore_errors,
        "cold_starts": container.measured.cold_starts,
        "page_fetch_failures": container.measured.page_fetch_failures,
        "image_bytes": container.measured.last_image_bytes,
        "rss_bytes": container.measured.last_rss_bytes,
        "pss_bytes": container.measured.last_pss_bytes,
        "probes_answered": container.measured.probes_answered,
        "history": [
            {
                "from": t.previous.value,
                "to": t.phase.value,
                "reason": t.reason,
                "at": iso_time(t.at),
            }
            for t in container.phase.history
        ],
    }


def describe_pod(life: PodLife) -> dict[str, Any]:
    """A pod as the sleep and wake ops answer: its phase, lifecycle state, held ports and
    containers."""
    containers = life.containers()
    phases = {c.phase.phase for c in containers}
    return {
        "pod": {
            "namespace": life.key.namespace,
            "name": life.key.pod,
            "unit": life.key.service,
            "state": phases.pop().value if len(phases) == 1 else "MIXED",
            "lifecycle": life.state.name,
            "ports": [p.listen_stream for p in life.ports.ports],
            "containers": [describe_container(c) for c in containers],
        }
    }
