"""The interposer wired to a fake runc shim and a fake containerd, for the shim's tests.

containerd's side is a ttrpc client on the interposer's task socket; the runc shim is a fake
that dumps, kills and restores in memory; the daemon is absent (registration is best effort).
The ``rig`` fixture runs each test against both task APIs (v3, v2).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from zeropod._gen.containerd.api.services.ttrpc.events.v1 import events_pb2
from zeropod.shim.context import ShimContext
from zeropod.shim.control import ShimControl
from zeropod.shim.daemonlink import DaemonLink
from zeropod.shim.eventfilter import SERVICE as EVENTS
from zeropod.shim.eventfilter import FilteringRelay
from zeropod.shim.scaling import ScalingProxy
from zeropod.shim.spec import CRIU_CONFIG_ENV
from zeropod.shim.taskapi import BY_SERVICE, V2, V3, TaskAPI
from zeropod.shim.tasks import Tracker
from zeropod.shim.upstream import Upstream
from zeropod.ttrpc import Call, Client, Server, TtrpcError
from zeropod.ttrpc.status import Code

RUNNING, STOPPED = 2, 3
FAKE_SHIM_PID = 4_194_305  # above any pid_max: no process of this namespace has it
CID = "app"


@dataclass
class FakeTask:
    checkpoint: str
    options: bytes
    pid: int = 0
    status: int | None = None
    exited: asyncio.Event = field(default_factory=asyncio.Event)

    def exit(self, status: int) -> None:
        self.status = status
        self.exited.set()


class FakeRunc:
    """A runc shim in memory: Checkpoint and Kill end the process, Start may 'restore'."""

    def __init__(self) -> None:
        self.tasks: dict[str, FakeTask] = {}
        self.calls: list[str] = []
        self.pids = itertools.count(100)
        self.fail_restore = False
        self.restore_failures_left = 0  # the next N restores fail, later ones succeed
        self.writes_image = False  # Checkpoint writes a pages file, as CRIU would
        self.hang_delete: asyncio.Event | None = None  # Delete answers once it is set
        self.hang_restore: asyncio.Event | None = None  # Start hangs until it is set
        self.fail_checkpoint = False
        self.hang_checkpoint = False  # CRIU stuck mid-dump: Checkpoint never answers
        self.created: list[FakeTask] = []

    async def handle(self, call: Call) -> bytes:
        api = BY_SERVICE[call.service]
        m = api.messages
        name = call.method
        self.calls.append(name)
        if name == "Create":
            req = api.decode("CreateTaskRequest", call.payload)
            if req.id in self.tasks:
                raise TtrpcError(Code.ALREADY_EXISTS, f"{req.id} exists")
            task = FakeTask(req.checkpoint, req.options.SerializeToString())
            self.tasks[req.id] = task
            self.created.append(task)
            return m.CreateTaskResponse(pid=0 if req.checkpoint else 1).SerializeToString()
        if name == "Connect":  # as runc's: the shim's pid, whichever task is asked about
            return m.ConnectResponse(shim_pid=FAKE_SHIM_PID).SerializeToString()
        decode = {"Checkpoint": "CheckpointTaskRequest", "Exec": "ExecProcessRequest"}
        req = api.decode(decode.get(name, f"{name}Request"), call.payload)
        task = self.tasks.get(req.id)
        if task is None:
            raise TtrpcError(Code.NOT_FOUND, f"container {req.id}: not found")
        if name == "Start":
            if task.checkpoint and self.hang_restore is not None:
                await self.hang_restore.wait()
                raise TtrpcError(Code.UNKNOWN, "criu failed: type RESTORE errno 0 (killed)")
            if task.checkpoint and self.restore_failures_left:
                self.restore_failures_left -= 1
                raise TtrpcError(Code.UNKNOWN, "criu failed: type RESTORE errno 0 (killed)")
            if task.checkpoint and self.fail_restore:
                raise TtrpcError(Code.UNKNOWN, "criu failed: type RESTORE errno 0")
            task.pid = next(self.pids)
            return m.StartResponse(pid=task.pid).SerializeToString()
        if name == "Wait":
            await task.exited.wait()
            return m.WaitResponse(exit_status=task.status).SerializeToString()
        if name == "Checkpoint":
            if self.fail_checkpoint:
                raise TtrpcError(Code.UNKNOWN, "criu failed: type DUMP errno 0")
            if self.hang_checkpoint:
                await asyncio.Event().wait()
            if self.writes_image:
                (Path(req.path) / "pages-1.img").write_bytes(b"page")
            task.exit(137)
            return b""
        if name == "Kill":
            task.exit(128 + req.signal)
            return b""
        if name == "Delete":
            if self.hang_delete is not None:
                await self.hang_delete.wait()
            if task.status is None and task.pid:
                raise TtrpcError(Code.FAILED_PRECONDITION, "still running")
            del self.tasks[req.id]
            return m.DeleteResponse(pid=task.pid, exit_status=task.status).SerializeToString()
        if name == "State":
            status = RUNNING if task.status is None else STOPPED
            return m.StateResponse(id=req.id, pid=task.pid, status=status).SerializeToString()
        if name == "Stats":
            resp = m.StatsResponse()
            resp.stats.type_url = "io.containerd.cgroups.v1.Metrics"
            resp.stats.value = b"\x0a\x00"
            return resp.SerializeToString()
        return b""


class FakeContainerd:
    def __init__(self) -> None:
        self.envelopes: list[events_pb2.Envelope] = []

    async def forward(self, call: Call) -> bytes:
        self.envelopes.append(events_pb2.ForwardRequest.FromString(call.payload).envelope)
        return b""

    def topics(self) -> list[str]:
        return [e.topic for e in self.envelopes]


@dataclass
class Rig:
    runc: FakeRunc
    containerd: FakeContainerd
    client: Client
    api: TaskAPI
    ctx: ShimContext
    control: ShimControl
    tmp: Path

    async def call(self, method: str, reply: str | None = None, **fields: object):
        m = self.api.messages
        name = {"Create": "CreateTaskRequest", "Exec": "ExecProcessRequest"}.get(
            method, f"{method}Request"
        )
        payload = await self.client.call(
            self.api.service, method, getattr(m, name)(**fields).SerializeToString(), timeout=5
        )
        return self.api.decode(reply, payload) if reply else None

    async def run_container(self) -> int:
        await self.call("Create", id=CID, bundle=str(self.tmp))
        started = await self.call("Start", "StartResponse", id=CID)
        return started.pid

    async def checkpoint(self, **fields: object) -> dict:
        """The control op, then the clean-up it runs after its reply (runc Delete...)."""
        reply = await self.control.handle(self.op("checkpoint", **fields))
        finishing = self.ctx.tracker.get(CID).finishing
        if finishing is not None:
            await finishing
        return reply

    def op(self, op: str, **fields: object) -> dict:
        return {"op": op, "container_id": CID, **fields}

    async def events(self, count: int) -> list[str]:
        await self.ctx.relay.drain(5)
        async with asyncio.timeout(5):
            while len(self.containerd.envelopes) < count:
                await asyncio.sleep(0.01)
        return self.containerd.topics()


@pytest.fixture(params=[V3, V2], ids=["v3", "v2"])
async def rig(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Rig]:
    (tmp_path / "config.json").write_text(json.dumps({"annotations": {}}))
    monkeypatch.setenv(CRIU_CONFIG_ENV, str(tmp_path / "criu.conf"))
    runc = FakeRunc()
    up_server = Server({}, fallback=runc.handle, name="runc")
    await up_server.listen(str(tmp_path / "runc.sock"))
    containerd = FakeContainerd()
    cd_server = Server({(EVENTS, "Forward"): containerd.forward}, name="containerd")
    await cd_server.listen(str(tmp_path / "containerd.sock"))
    upstream = await Client.connect(str(tmp_path / "runc.sock"))
    tracker = Tracker()
    daemon = DaemonLink(str(tmp_path / "ctl.sock"), path=str(tmp_path / "no-daemon.sock"))
    relay = FilteringRelay(
        str(tmp_path / "containerd.sock"), tracker, "k8s.io", lambda c, e: ctx.exited(c, e)
    )
    ctx = ShimContext(tracker, Upstream(upstream), relay, daemon)
    relay_task = asyncio.create_task(relay.run())
    proxy = ScalingProxy(ctx, True)
    server = Server(proxy.handlers(), fallback=proxy.forward, name="task")
    await server.listen(str(tmp_path / "task.sock"))
    client = await Client.connect(str(tmp_path / "task.sock"))
    control = ShimControl(str(tmp_path / "ctl.sock"), ctx)
    yield Rig(runc, containerd, client, request.param, ctx, control, tmp_path)
    await client.close()
    await server.close()
    relay_task.cancel()
    await daemon.close()
    await up_server.close()
    await cd_server.close()
