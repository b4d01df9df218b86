"""Fakes of the daemon's machinery (shim, network, socket units, images) that record calls."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Any

from zeropod.control.requests import RegisterRequest
from zeropod.daemon.events import EventHub
from zeropod.daemon.phase import Phase
from zeropod.daemon.pods import HeldPort, PodKey, Pods
from zeropod.daemon.registry import Container, Registry
from zeropod.daemon.scaler import Scaler
from zeropod.daemon.service import ControlService
from zeropod.daemon.steps import RESTORE_FAILED, Machinery, ShimError, ShimReply
from zeropod.journal import Journal

PORT = HeldPort(socket.AF_INET, "0.0.0.0", 8080, False)


class Recorder:
    """Collects ("step", details...) tuples in order, shared by all fakes."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def names(self) -> list[str]:
        return [call[0] for call in self.calls]


class FakeShim:
    def __init__(self, rec: Recorder) -> None:
        self.rec = rec
        self.refusals: dict[str, list[ShimError]] = {}
        self.restore_reply: dict[str, ShimReply | ShimError] = {}
        self.broken_images: dict[str, str] = {}  # container -> why its restore fails

    async def checkpoint(self, container: Container, image_dir: str, mode: str) -> ShimReply:
        self.rec.calls.append(("checkpoint", container.identity.container, mode))
        pending = self.refusals.get(container.identity.container)
        if pending:
            raise pending.pop(0)
        return ShimReply(pid=container.pid, duration_ms=120.0)

    async def restore(
        self, container: Container, image_dir: str | None, *, fallback: bool = True
    ) -> ShimReply:
        self.rec.calls.append(("restore", container.identity.container, image_dir))
        broken = self.broken_images.get(container.identity.container)
        if broken is not None and image_dir is not None:
            if not fallback:
                raise ShimError(RESTORE_FAILED, broken)
            return ShimReply(pid=container.pid + 1000, duration_ms=90.0, cold=True, error=broken)
        reply = self.restore_reply.get(container.identity.container)
        if isinstance(reply, ShimError):
            raise reply
        return reply or ShimReply(pid=container.pid + 1000, duration_ms=90.0)


class FakeNetwork:
    def __init__(self, rec: Recorder) -> None:
        self.rec = rec
        self.fail_migrate: Exception | None = None

    async def enable_migrate(self, netns: str) -> None:
        self.rec.calls.append(("migrate", netns))
        if self.fail_migrate is not None:
            raise self.fail_migrate

    async def share_listeners(self, pid: int, ports: Sequence[int]) -> list[HeldPort]:
        self.rec.calls.append(("reuseport", pid, tuple(ports)))
        return [PORT]

    async def wait_listening(
        self, netns: str, ports: Sequence[int], count: int, timeout: float
    ) -> int:
        self.rec.calls.append(("listening", tuple(ports), count))
        return 0


class FakeUnits:
    def __init__(self, rec: Recorder) -> None:
        self.rec = rec
        self.fail_start: Exception | None = None

    async def start(self, key: PodKey, ports: Sequence[HeldPort], netns: str) -> None:
        self.rec.calls.append(("unit_start", key.socket, tuple(ports)))
        if self.fail_start is not None:
            raise self.fail_start

    async def stop(self, key: PodKey) -> None:
        self.rec.calls.append(("unit_stop", key.socket))


class FakeImages:
    def __init__(self, rec: Recorder) -> None:
        self.rec = rec
        self.present: set[str] = set()

    def prepare(self, container_id: str) -> str:
        self.present.add(container_id)
        return f"/images/{container_id}"

    def path(self, container_id: str) -> str | None:
        return f"/images/{container_id}" if container_id in self.present else None

    def remove(self, container_id: str) -> None:
        self.rec.calls.append(("image_remove", container_id))
        self.present.discard(container_id)


class Captured:
    def __init__(self) -> None:
        self.entries: list[tuple[str, int, dict[str, str]]] = []

    def __call__(self, message: str, priority: int, fields: dict[str, str]) -> None:
        self.entries.append((message, priority, fields))

    def messages(self) -> list[str]:
        return [m for m, _, _ in self.entries]


class World:
    """A control service with a scaler on fakes; ``register`` adds containers."""

    def __init__(self) -> None:
        self.rec = Recorder()
        self.shim = FakeShim(self.rec)
        self.network = FakeNetwork(self.rec)
        self.units = FakeUnits(self.rec)
        self.images = FakeImages(self.rec)
        self.machinery = Machinery(self.shim, self.network, self.units, self.images)
        self.captured = Captured()
        self.journal = Journal(self.captured)
        self.registry = Registry()
        self.pods = Pods(self.registry)
        self.connections: list[Any] = []
        self.scaler = Scaler(
            self.pods, self.machinery, self.journal, tuple, lambda netns, ports: self.connections
        )
        self.service = ControlService(
            self.registry, self.journal, EventHub(), pods=self.pods, scaler=self.scaler
        )

    def register(
        self, container: str = "app", pod: str = "web-1", annotations: dict[str, str] | None = None
    ) -> Container:
        request = RegisterRequest(
            container_id=f"id-{pod}-{container}",
            pod=pod,
            namespace="shop",
            container=container,
            sandbox_id=f"sandbox-{pod}",
            netns=f"/var/run/netns/{pod}",
            bundle=f"/run/bundles/{container}",
            pid=100 + len(self.registry),
            annotations=annotations or {},
            shim_socket="/run/zeropod/shim/x.sock",
        )
        self.service.register(request)
        found = self.registry.get(request.container_id)
        assert found is not None
        return found

    def phases(self) -> list[Phase]:
        return [c.phase.phase for c in self.registry]
