"""Pods as units of scale: a pod's scaled containers sleep and wake together.

The registry knows containers; this module groups the managed ones by pod, names the pod's
systemd units (``zeropod@<instance>.socket`` / ``.service``, ``<instance>`` being
``<namespace>_<pod>`` escaped the way ``systemd-escape`` does) and keeps what belongs to the
pod rather than to one container: the lock that serialises its sleeps and wakes, the ports
its socket unit holds, and the sockets handed over by the activated service. Single-threaded:
used from the daemon's event loop.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field
from typing import Protocol

from zeropod.daemon.backoff import SleepBackoff
from zeropod.daemon.phase import Phase
from zeropod.daemon.registry import Container, Registry
from zeropod.systemd.names import instance_name, unit_name

UNIT_PREFIX = "zeropod"


@dataclass(frozen=True, order=True)
class PodKey:
    """A pod by namespace and name."""

    namespace: str
    pod: str

    @property
    def instance(self) -> str:
        """The escaped systemd instance ``<namespace>_<pod>`` (``zeropod.systemd.names``)."""
        return instance_name(self.namespace, self.pod, UNIT_PREFIX)

    @property
    def service(self) -> str:
        """``zeropod@<instance>.service``: the activated service, and the journal's unit."""
        return unit_name(UNIT_PREFIX, self.instance, "service")

    @property
    def socket(self) -> str:
        """``zeropod@<instance>.socket``: the transient unit holding the ports while asleep."""
        return unit_name(UNIT_PREFIX, self.instance, "socket")

    @property
    def label(self) -> str:
        """``namespace/pod`` for log messages."""
        return f"{self.namespace}/{self.pod}"

    @classmethod
    def of(cls, container: Container) -> PodKey:
        """The pod ``container`` belongs to."""
        return cls(container.identity.namespace, container.identity.pod)


@dataclass(frozen=True)
class HeldPort:
    """One listening address the socket unit holds: the app's exact family, address, v6only."""

    family: int
    address: str
    port: int
    v6only: bool

    @property
    def listen_stream(self) -> str:
        """systemd's ``ListenStream=`` form: ``0.0.0.0:80``, ``[::]:80``."""
        if self.family == socket.AF_INET6:
            return f"[{self.address}]:{self.port}"
        return f"{self.address}:{self.port}"

    def to_json(self) -> dict[str, object]:
        """JSON-ready form (state files)."""
        family = "inet6" if self.family == socket.AF_INET6 else "inet"
        return {"family": family, "address": self.address, "port": self.port, "v6only": self.v6only}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> HeldPort:
        """Inverse of :meth:`to_json`; raises ValueError for a malformed entry."""
        try:
            family = socket.AF_INET6 if data["family"] == "inet6" else socket.AF_INET
            return cls(family, str(data["address"]), int(data["port"]), bool(data["v6only"]))  # type: ignore[call-overload]
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"bad held port entry {data!r}") from err


class Handoff(Protocol):
    """The sockets the activated service handed over, and its connection."""

    def close(self) -> None:
        """Close the daemon's copies of the held sockets and end the activator's connection."""
        ...

    def drain(self) -> list[socket.socket]:
        """Accept every connection waiting in the held sockets' queues (never blocks)."""
        ...


@dataclass
class Pod:
    """What belongs to a pod as a whole while the daemon runs.

    ``lock`` serialises sleep and wake; ``held_ports`` is what the socket unit listens on
    while the pod sleeps (empty when awake); ``handoff`` is the open hand-off of the
    activated service (see :mod:`zeropod.daemon.handoff`), if any.
    """

    key: PodKey
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    held_ports: tuple[HeldPort, ...] = ()
    handoff: Handoff | None = None
    backoff: SleepBackoff = field(default_factory=SleepBackoff)
    """Failed sleeps in a row and when the idle loop may try again (:mod:`.backoff`)."""


class Pods:
    """Groups the registry's managed containers by pod and keeps one :class:`Pod` per pod."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._pods: dict[PodKey, Pod] = {}

    def get(self, key: PodKey) -> Pod:
        """The pod object for ``key`` (created on first use)."""
        pod = self._pods.get(key)
        if pod is None:
            pod = self._pods[key] = Pod(key)
        return pod

    def scaled(self, key: PodKey) -> list[Container]:
        """The pod's managed containers still registered (not STOPPED), by container name."""
        return [
            c
            for c in self.registry
            if c.managed and c.phase.phase is not Phase.STOPPED and PodKey.of(c) == key
        ]

    def pod_keys(self) -> list[PodKey]:
        """Every pod with at least one scaled container, sorted."""
        return sorted({PodKey.of(c) for c in self.registry if c.managed})

    def forget_if_empty(self, key: PodKey) -> Pod | None:
        """Drop the pod object once no scaled container is left; returns what was dropped."""
        if self.scaled(key):
            return None
        return self._pods.pop(key, None)


def pod_phase(containers: list[Container]) -> Phase | None:
    """The pod's phase when all its scaled containers agree, else None (mid-transition)."""
    phases = {c.phase.phase for c in containers}
    return phases.pop() if len(phases) == 1 else None
