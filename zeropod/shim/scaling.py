"""The task API as containerd must see it while containers sleep: the proxy's overrides.

Create remembers the request (and points runc at zeropod's CRIU config), Start registers the
container with the daemon. While a container is hidden (checkpointing, scaled down,
restoring) State says RUNNING with the last pid, Pids lists it, Stats reports zero usage,
Connect names it, and Wait stays pending until the task really ends (on the restored task,
or with the status of a Kill while asleep). Kill and Delete while asleep end the task from
our record; calls only a live process can serve (Exec, Update, Pause, Resume, ResizePty,
CloseIO) wake it first. Everything else is forwarded unchanged.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from google.protobuf import any_pb2

from zeropod._gen.containerd.api.types.task import task_pb2 as task_types
from zeropod._gen.ttrpc import request_pb2
from zeropod.shim import mountns, spec
from zeropod.shim.context import ShimContext
from zeropod.shim.restore import end_asleep, restore
from zeropod.shim.taskphase import TaskPhase
from zeropod.shim.taskproxy import TaskProxy
from zeropod.shim.tasks import TaskRecord
from zeropod.ttrpc import Call, RawResponse, TtrpcError
from zeropod.ttrpc.status import Code

log = logging.getLogger(__name__)

RUNNING = task_types.Status.Value("RUNNING")
STOPPED = task_types.Status.Value("STOPPED")
# Calls only a live process can serve, with their request message.
AWAKE_REQUESTS = {
    "Exec": "ExecProcessRequest",
    "Update": "UpdateTaskRequest",
    "Pause": "PauseRequest",
    "Resume": "ResumeRequest",
    "ResizePty": "ResizePtyRequest",
    "CloseIO": "CloseIORequest",
}


def reply_payload(reply: RawResponse) -> bytes | None:
    """The payload of a successful forwarded reply, None for an error status."""
    resp = request_pb2.Response.FromString(reply.data)
    return resp.payload if resp.status.code == 0 else None


def stats_type_url() -> str:
    """The metrics type the runc shim reports on this node's cgroup layout."""
    if Path("/sys/fs/cgroup/cgroup.controllers").exists():
        return "io.containerd.cgroups.v2.Metrics"
    return "io.containerd.cgroups.v1.Metrics"


class ScalingProxy(TaskProxy):
    """TaskProxy that answers for sleeping containers."""

    def __init__(self, ctx: ShimContext, criu_configs: bool) -> None:
        super().__init__(ctx.upstream.client)
        self.ctx = ctx
        self.criu_configs = criu_configs  # False: the config dir cannot be written, never dump
        self._stats_url: str | None = None
        self._shim_pid: int | None = None

    def _container(self, call: Call, message: str) -> TaskRecord | None:
        """The record of the task ``call`` is about; None for an exec or a task we do not know."""
        req = self.api(call).decode(message, call.payload)
        if getattr(req, "exec_id", ""):
            return None  # an exec process: never ours to answer
        return self.ctx.tracker.get(req.id)

    async def Create(self, call: Call) -> RawResponse:
        api = self.api(call)
        req = api.decode("CreateTaskRequest", call.payload)
        await self._refuse_shared_propagation(call, req.id, req.bundle)
        criu_config_set = False
        try:
            if self.criu_configs:
                config = spec.write_criu_config(spec.criu_config_for(req.id))
                replaced = spec.annotate_criu_config(req.bundle, config)
                criu_config_set = True
                if replaced is not None:
                    log.warning(
                        "container %s: replaced its own org.criu.config %r with zeropod's",
                        req.id,
                        replaced,
                    )
        except (OSError, ValueError) as err:
            log.warning("container %s: cannot set the CRIU config annotation: %s", req.id, err)
        reply = await self.forward(call)
        payload = reply_payload(reply)
        if payload is not None:
            c = TaskRecord(req.id, api, req, call.metadata())
            c.criu_config_set = criu_config_set
            c.pid = api.decode("CreateTaskResponse", payload).pid
            self.ctx.tracker.add(c)
        return reply

    async def _refuse_shared_propagation(self, call: Call, container_id: str, bundle: str) -> None:
        """A mount that must propagate back to the node cannot from the runc shim's mount
        namespace (:mod:`zeropod.shim.mountns`): refuse the container, saying why."""
        try:
            shared = mountns.shared_propagation(spec.read_spec(bundle))
        except (OSError, ValueError):
            return  # runc reads it too, and says what is wrong with it
        if shared and mountns.separate(await self.runc_shim_pid(call, container_id)):
            raise TtrpcError(
                Code.FAILED_PRECONDITION,
                f"container {container_id}: {', '.join(shared)}: Bidirectional mount "
                "propagation cannot reach the node from a zeropod pod (its runc shim has a "
                f"mount namespace of its own; {mountns.MODE_ENV}=node in containerd's "
                "environment shares the node's)",
            )

    async def Start(self, call: Call) -> RawResponse:
        c = self._container(call, "StartRequest")
        reply = await self.forward(call)
        payload = reply_payload(reply)
        if c is not None and payload is not None and c.phase is TaskPhase.CREATED:
            c.pid = self.api(call).decode("StartResponse", payload).pid
            self.ctx.tracker.move(c, TaskPhase.RUNNING, f"pid {c.pid}")
            self.ctx.daemon.register(c)
        return reply

    async def State(self, call: Call) -> RawResponse | bytes:
        c = self._container(call, "StateRequest")
        if c is None or not (c.hidden or c.phase is TaskPhase.ENDED):
            return await self.forward(call)
        r = c.request
        resp = self.api(call).messages.StateResponse(
            id=c.id,
            bundle=r.bundle,
            pid=c.pid,
            status=STOPPED if c.phase is TaskPhase.ENDED else RUNNING,
            stdin=r.stdin,
            stdout=r.stdout,
            stderr=r.stderr,
            terminal=r.terminal,
        )
        if c.phase is TaskPhase.ENDED:
            resp.exit_status = c.exit_status
            resp.exited_at.FromNanoseconds(int(c.exited_at * 1e9))
        return resp.SerializeToString()

    async def Wait(self, call: Call) -> RawResponse | bytes:
        c = self._container(call, "WaitRequest")
        if c is None:
            return await self.forward(call)
        tracker = self.ctx.tracker
        while True:
            if await tracker.visible(c) is TaskPhase.ENDED:
                return self._ended_wait(call, c)
            generation = c.generation
            reply = await self.forward(call)
            if c.generation == generation and not c.hidden:
                if reply_payload(reply) is not None:
                    self.ctx.exited(c)  # also told by the exit event; whichever comes first
                return reply
            log.debug("container %s: Wait ended by a checkpoint; waiting on", c.id)

    def _ended_wait(self, call: Call, c: TaskRecord) -> bytes:
        resp = self.api(call).messages.WaitResponse(exit_status=c.exit_status)
        resp.exited_at.FromNanoseconds(int(c.exited_at * 1e9))
        return resp.SerializeToString()

    async def Pids(self, call: Call) -> RawResponse | bytes:
        c = self._container(call, "PidsRequest")
        if c is None or not (c.hidden or c.phase is TaskPhase.ENDED):
            return await self.forward(call)
        resp = self.api(call).messages.PidsResponse()
        if c.hidden:
            resp.processes.add(pid=c.pid)
        return resp.SerializeToString()

    async def Stats(self, call: Call) -> RawResponse | bytes:
        c = self._container(call, "StatsRequest")
        if c is None or not (c.hidden or c.phase is TaskPhase.ENDED):
            reply = await self.forward(call)
            if self._stats_url is None and (payload := reply_payload(reply)) is not None:
                self._stats_url = self.api(call).decode("StatsResponse", payload).stats.type_url
            return reply
        # No process, no usage: an empty metrics message of the type the runc shim reports.
        url = self._stats_url or stats_type_url()
        resp = self.api(call).messages.StatsResponse(stats=any_pb2.Any(type_url=url))
        return resp.SerializeToString()

    async def Connect(self, call: Call) -> RawResponse | bytes:
        c = self._container(call, "ConnectRequest")
        if c is None or not (c.hidden or c.phase is TaskPhase.ENDED):
            return await self.forward(call)
        shim_pid = await self.runc_shim_pid(call, c.id) or os.getpid()
        resp = self.api(call).messages.ConnectResponse(shim_pid=shim_pid, task_pid=c.pid)
        return resp.SerializeToString()

    async def runc_shim_pid(self, call: Call, container_id: str) -> int:
        """The runc shim's pid as its own Connect answers it (asked once; 0 when it does not
        answer). Not the peer of its socket: that was its ``start``, which made the socket,
        handed it to the runc shim and exited."""
        if self._shim_pid is None:
            api = self.api(call)
            request = api.messages.ConnectRequest(id=container_id).SerializeToString()
            try:
                payload = await self.ctx.upstream.client.call(
                    api.service, "Connect", request, timeout=5, metadata=call.metadata()
                )
            except (TtrpcError, OSError) as err:
                log.warning("the runc shim does not say its pid: %s", err)
                return 0
            self._shim_pid = int(api.decode("ConnectResponse", payload).shim_pid)
        return self._shim_pid

    async def Kill(self, call: Call) -> RawResponse | bytes:
        req = self.api(call).decode("KillRequest", call.payload)
        c = self.ctx.tracker.get(req.id)
        if c is None or not (c.hidden or c.phase is TaskPhase.ENDED):
            return await self.forward(call)
        if req.exec_id:
            raise TtrpcError(Code.NOT_FOUND, f"process {req.exec_id} does not exist")
        if await self.ctx.tracker.settled(c) is TaskPhase.RUNNING:
            return await self.forward(call)  # woke meanwhile: a real kill
        if req.signal and c.phase is TaskPhase.SCALED_DOWN:
            await end_asleep(self.ctx, c, req.signal)
        return b""

    async def Delete(self, call: Call) -> RawResponse | bytes:
        c = self._container(call, "DeleteRequest")
        if c is None:
            return await self.forward(call)
        if c.hidden and await self.ctx.tracker.settled(c) is TaskPhase.SCALED_DOWN:
            await end_asleep(self.ctx, c, 9)  # deleted without a kill: as if SIGKILLed
        if c.phase is not TaskPhase.ENDED:
            reply = await self.forward(call)
            if reply_payload(reply) is not None:
                self.ctx.daemon.unregister(c, "deleted")
                self.ctx.tracker.move(c, TaskPhase.DELETED)
            return reply
        resp = self.api(call).messages.DeleteResponse(pid=c.pid, exit_status=c.exit_status)
        resp.exited_at.FromNanoseconds(int(c.exited_at * 1e9))
        self.ctx.relay.publish_delete(c)
        self.ctx.tracker.move(c, TaskPhase.DELETED, "deleted while scaled down")
        return resp.SerializeToString()

    async def _awake(self, call: Call) -> RawResponse:
        """Forward a call only a live process can serve, waking its container first."""
        req = self.api(call).decode(AWAKE_REQUESTS[call.method], call.payload)
        c = self.ctx.tracker.get(req.id)
        if c is not None and c.hidden:
            await self.wake(c)
        return await self.forward(call)

    async def wake(self, c: TaskRecord) -> None:
        """Bring ``c`` back: through the daemon (the whole pod), else here."""
        if await self.ctx.tracker.settled(c) is not TaskPhase.SCALED_DOWN:
            return
        if await self.ctx.daemon.wake(c) and c.phase is TaskPhase.RUNNING:
            return
        if await self.ctx.tracker.settled(c) is TaskPhase.SCALED_DOWN:
            await restore(self.ctx, c, c.image_dir, fallback=True)

    async def Exec(self, call: Call) -> RawResponse:
        return await self._awake(call)

    async def Update(self, call: Call) -> RawResponse:
        return await self._awake(call)

    async def Pause(self, call: Call) -> RawResponse:
        return await self._awake(call)

    async def Resume(self, call: Call) -> RawResponse:
        return await self._awake(call)

    async def ResizePty(self, call: Call) -> RawResponse:
        return await self._awake(call)

    async def CloseIO(self, call: Call) -> RawResponse:
        return await self._awake(call)
