"""Fakes of what a pod's lifecycle acts through (shim, network, netns view, socket units,
images) that record calls, and a World wiring them like zeropod.daemon.main does."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

from zeropod.activity.sockdiag import Connection, TcpState
from zeropod.contract.protocol import RESTORE_FAILED
from zeropod.contract.requests import RegisterRequest, SleepRequest
from zeropod.contract.shimops import TaskReply
from zeropod.daemon.adapters.heldcopies import HeldSockets
from zeropod.daemon.api.eventhub import EventHub
from zeropod.daemon.api.service import ControlService
from zeropod.daemon.api.status import describe_pod
from zeropod.daemon.lifecycle.interfaces import ShimError
from zeropod.daemon.lifecycle.podlife import PodLife
from zeropod.daemon.lifecycle.pods import Pods
from zeropod.daemon.lifecycle.ports import PortHold
from zeropod.daemon.lifecycle.watch import HeldPortWatch
from zeropod.daemon.model.phase import Phase
from zeropod.daemon.model.pod import HeldPort, PodKey
from zeropod.daemon.model.registry import Container, Registry
from zeropod.journal import Journal

PORT = HeldPort(socket.AF_INET, "0.0.0.0", 8080, False)


async def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Poll PREDICATE on the loop until it holds, or fail naming WHAT."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def queued_from(address: str, port: int) -> Connection:
    """What sock_diag shows for a connection from ADDRESS waiting on a held PORT."""
    here = ipaddress.ip_address("127.0.0.1")
    return Connection(TcpState.ESTABLISHED, here, port, ipaddress.ip_address(address), 1, 1)


def exchange(port: int, request: bytes) -> bytes:
    """Send REQUEST to 127.0.0.1:PORT, half-close, and read the answer to its end."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(request)
        conn.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := conn.recv(4096):
            data += chunk
        return data


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
        self.restore_reply: dict[str, TaskReply | ShimError] = {}
        self.broken_images: dict[str, str] = {}  # container -> why its restore fails
        self.hang_checkpoint: asyncio.Event | None = None  # a dump answers once it is set
        self.checkpointing = False
        self.lazy: dict[str, bool] = {}  # container -> whether its last restore asked for lazy

    async def checkpoint(self, container: Container, image_dir: str, mode: str) -> TaskReply:
        self.rec.calls.append(("checkpoint", container.identity.container, mode))
        if self.hang_checkpoint is not None:
            self.checkpointing = True
            await self.hang_checkpoint.wait()
        pending = self.refusals.get(container.identity.container)
        if pending:
            raise pending.pop(0)
        return TaskReply(pid=container.pid, duration_ms=120.0)

    async def restore(
        self, container: Container, image_dir: str | None, *, lazy: bool = False
    ) -> TaskReply:
        self.rec.calls.append(("restore", container.identity.container, image_dir))
        self.lazy[container.identity.container] = lazy
        broken = self.broken_images.get(container.identity.container)
        if broken is not None and image_dir is not None:
            raise ShimError(RESTORE_FAILED, broken)
        reply = self.restore_reply.get(container.identity.container)
        if isinstance(reply, ShimError):
            raise reply
        return reply or TaskReply(pid=container.pid + 1000, duration_ms=90.0)


class FakeNetwork:
    """``take_copies`` gives a real listening socket on 127.0.0.1 (``listeners``, newest
    last) standing in for systemd's held one."""

    def __init__(self, rec: Recorder) -> None:
        self.rec = rec
        self.fail_migrate: Exception | None = None
        self.fail_copies: Exception | None = None
        self.listeners: list[socket.socket] = []
        self.syn_log: Any = None  # given to the copies taken next (None: sock_diag only)

    async def enable_migrate(self, netns: str) -> None:
        self.rec.calls.append(("migrate", netns))
        if self.fail_migrate is not None:
            raise self.fail_migrate

    async def share_listeners(self, pid: int, ports: Sequence[int]) -> list[HeldPort]:
        self.rec.calls.append(("reuseport", pid, tuple(ports)))
        return [PORT]

    async def take_copies(self, netns: str, ports: Sequence[HeldPort]) -> HeldSockets:
        self.rec.calls.append(("copies", netns, tuple(ports)))
        if self.fail_copies is not None:
            raise self.fail_copies
        held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        held.bind(("127.0.0.1", 0))
        held.listen(16)
        self.listeners.append(held)
        return HeldSockets([held.dup()], self.syn_log)

    def close(self) -> None:
        for sock in self.listeners:
            sock.close()


class FakeNetView:
    """The pod netns view: ``queue`` is what sock_diag would show queued on the ports."""

    def __init__(self, rec: Recorder) -> None:
        self.rec = rec
        self.queue: list[Any] = []
        self.closed = 0
        self.dumps = 0  # connections() calls: the probe check's walks of the TCP hash

    async def snapshot(self, ports: Sequence[int]) -> Any:
        raise OSError("no snapshots in the fake")

    async def listening(self) -> frozenset[int]:
        return frozenset()

    async def connections(
        self, ports: Sequence[int], states: Any, families: Any = (2, 10)
    ) -> list[Any]:
        self.dumps += 1
        return list(self.queue)

    async def wait_listening(self, ports: Sequence[int], count: int, timeout: float) -> int:
        self.rec.calls.append(("listening", tuple(ports), count))
        return 0

    def close(self) -> None:
        self.closed += 1


class FakeUnits:
    def __init__(self, rec: Recorder) -> None:
        self.rec = rec
        self.fail_start: Exception | None = None
        self.active: set[str] = set()  # the socket units systemd would list
        self.fail_stop: Exception | None = None

    async def start(self, key: PodKey, ports: Sequence[HeldPort], netns: str) -> None:
        self.rec.calls.append(("unit_start", key.socket, tuple(ports)))
        if self.fail_start is not None:
            raise self.fail_start
        self.active.add(key.socket)

    async def stop(self, key: PodKey) -> None:
        self.rec.calls.append(("unit_stop", key.socket))
        self.active.discard(key.socket)

    async def listening(self) -> set[str]:
        return set(self.active)

    async def stop_orphan(self, socket_unit: str) -> None:
        self.rec.calls.append(("unit_stop", socket_unit))
        if self.fail_stop is not None:
            raise self.fail_stop
        self.active.discard(socket_unit)


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
    """A control service with pod lifecycles on fakes; ``register`` adds containers."""

    def __init__(self, journal: Journal | None = None) -> None:
        self.rec = Recorder()
        self.shim = FakeShim(self.rec)
        self.network = FakeNetwork(self.rec)
        self.net = FakeNetView(self.rec)
        self.units = FakeUnits(self.rec)
        self.images = FakeImages(self.rec)
        self.captured = Captured()
        self.journal = journal or Journal(self.captured)
        self.registry = Registry()

        def make_life(key: PodKey, netns: str) -> PodLife:
            life = PodLife(
                key,
                self.registry,
                shim=self.shim,
                images=self.images,
                ports=PortHold(key, self.units, self.network),
                net=self.net,
                journal=self.journal,
            )
            life.on_ports_held = self._ports_held
            return life

        self.pods = Pods(self.registry, make_life)
        self.watch = HeldPortWatch(self.pods, self.journal, tuple)
        self.service = ControlService(self.registry, self.journal, EventHub(), pods=self.pods)

    def _ports_held(self, life: PodLife) -> None:  # as the daemon's main wires it
        self.service.save_pod(life)
        self.watch.watch(life)

    def life(self, key: PodKey) -> PodLife:
        life = self.pods.find(key)
        assert life is not None, key
        return life

    async def sleep(self, key: PodKey, reason: str, container: str | None = None) -> dict:
        """As ``zeropodctl sleep`` (the reason is the control op's)."""
        return await self.service.handle(SleepRequest(key.pod, key.namespace, container))

    async def wake(self, key: PodKey, reason: str, client_since: float | None = None) -> dict:
        life = self.life(key)
        await life.wake(reason, client_since)
        return describe_pod(life)

    def register(
        self,
        container: str = "app",
        pod: str = "web-1",
        annotations: dict[str, str] | None = None,
        shim_socket: str = "/run/zeropod/shim/x.sock",
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
            shim_socket=shim_socket,
        )
        self.service.register(request)
        found = self.registry.get(request.container_id)
        assert found is not None
        return found

    def phases(self) -> list[Phase]:
        return [c.phase.phase for c in self.registry]
