"""A pod as the daemon names it (:class:`PodKey`: namespace, name, its systemd units) and the
listening addresses its socket unit holds while it sleeps (:class:`HeldPort`). Values only."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from zeropod.daemon.model.registry import Container
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
