"""The daemon's registry of containers.

A :class:`Container` holds what identifies it, how it should scale (its config and the
annotations it came from), its phase owner, and what its last sleep and wake measured.
Everything that acts on it lives elsewhere: its pod's life (:mod:`zeropod.daemon.lifecycle`)
changes its phase and pid, the idle loop records the ports it saw, and the API renders it
(:mod:`zeropod.daemon.api.status`). Single-threaded: the daemon's event loop reads and writes
it (worker threads get values, never a container).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from zeropod.config.annotations import ScalingConfig
from zeropod.daemon.model.phase import PhaseOwner


@dataclass(frozen=True)
class ContainerIdentity:
    """Who a container is, as its shim reported it."""

    container_id: str
    pod: str
    namespace: str
    container: str
    sandbox_id: str
    netns: str
    bundle: str
    shim_socket: str = ""
    """The interposer's control socket (checkpoint/restore); empty for a shim without one."""

    @property
    def label(self) -> str:
        """``namespace/pod/container`` for log messages."""
        return f"{self.namespace}/{self.pod}/{self.container}"


@dataclass
class Measurements:
    """What the last sleep and wake of a container measured, and how many failed."""

    last_checkpoint_ms: float | None = None
    last_restore_ms: float | None = None
    checkpoint_errors: int = 0
    restore_errors: int = 0
    cold_starts: int = 0
    page_fetch_failures: int = 0
    """Lazy restores whose page server failed after the app ran (killed, started cold)."""
    last_image_bytes: int | None = None
    """Size of the last checkpoint image (None: never dumped, or stopped without an image)."""
    last_rss_bytes: int | None = None
    """The app's resident memory just before the last checkpoint: what sleeping frees."""
    last_pss_bytes: int | None = None
    """Its proportional share (shared pages split between their users)."""
    probes_answered: int = 0
    """Probes the daemon answered for the container's pod while it slept."""
    client_waiting_since: float | None = None
    """While a client's connection wakes the pod: when the daemon first saw it (epoch s)."""


class Container:
    """One registered container.

    ``config`` is ``None`` and ``unmanaged_reason`` says why when the daemon leaves the
    container alone (it runs unscaled). ``unit`` is the pod's systemd service (the journal's
    OBJECT_SYSTEMD_UNIT) for managed containers. ``annotations`` are the zeropod annotations
    the config was parsed from (kept so that persisted state can be parsed again).
    """

    def __init__(
        self,
        identity: ContainerIdentity,
        pid: int,
        config: ScalingConfig | None,
        unmanaged_reason: str | None,
        phase: PhaseOwner,
        annotations: dict[str, str] | None = None,
    ) -> None:
        self.identity = identity
        self.pid = pid
        self.config = config
        self.unmanaged_reason = unmanaged_reason
        self.phase = phase
        self.annotations = dict(annotations or {})
        self.unit: str | None = None
        self.measured = Measurements()
        self.listen_ports: tuple[int, ...] = ()
        """Ports last seen listening (auto-detected at the last sleep), for status."""

    @property
    def managed(self) -> bool:
        """True when the daemon scales this container."""
        return self.config is not None

    @property
    def ports(self) -> tuple[int, ...]:
        """Ports from the ports-map annotation, else the ones last seen listening."""
        mapped = self.config.ports_for(self.identity.container) if self.config else ()
        return mapped or self.listen_ports

    def journal_fields(self) -> dict[str, Any]:
        """The journal fields that identify this container and its state."""
        return {
            "pod": self.identity.pod,
            "namespace": self.identity.namespace,
            "container": self.identity.container,
            "state": self.phase.phase.value,
            "unit": self.unit,
            "container_id": self.identity.container_id,
        }


class Registry:
    """Registered containers by id."""

    def __init__(self) -> None:
        self._containers: dict[str, Container] = {}

    def add(self, container: Container) -> None:
        """Register ``container``, replacing any entry with the same id."""
        self._containers[container.identity.container_id] = container

    def get(self, container_id: str) -> Container | None:
        """The container with ``container_id``, if registered."""
        return self._containers.get(container_id)

    def remove(self, container_id: str) -> Container | None:
        """Forget a container and return it, if it was registered."""
        return self._containers.pop(container_id, None)

    def __iter__(self) -> Iterator[Container]:
        """Containers ordered by namespace, pod and container name."""
        return iter(
            sorted(
                self._containers.values(),
                key=lambda c: (c.identity.namespace, c.identity.pod, c.identity.container),
            )
        )

    def __len__(self) -> int:
        return len(self._containers)


def iso_time(epoch: float) -> str:
    """``epoch`` as an ISO-8601 UTC timestamp with milliseconds and a ``Z``."""
    stamp = datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")
