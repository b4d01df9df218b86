"""The interposer's own calls to the runc shim, typed, in the task API version of each task.

containerd's calls are forwarded byte for byte by :mod:`.proxy`; the calls here are the ones
the interposer makes on its own to put a task to sleep and wake it: Checkpoint, Kill, Wait,
Delete, Create (from a checkpoint, or cold) and Start. Each is bounded by a timeout and raises
:class:`~zeropod.ttrpc.TtrpcError` (or ConnectionClosed) as the runc shim answered.
"""

from __future__ import annotations

from google.protobuf import any_pb2
from google.protobuf.message import Message

from zeropod._gen.containerd.runc.options import oci_pb2
from zeropod.contract import timeouts
from zeropod.shim.tasks import TaskRecord
from zeropod.ttrpc import Client

# containerd's runc shim of 1.6 only accepts the bare type URLs (no type.googleapis.com/).
OPTIONS_URL = "containerd.runc.v1.Options"
CHECKPOINT_OPTIONS_URL = "containerd.runc.v1.CheckpointOptions"
CALL_TIMEOUT = timeouts.CALL
START_TIMEOUT = timeouts.MAX + timeouts.CALL
"""A Start that restores is ended by the restore bound (restorebound) well before this."""


class Upstream:
    """Typed task API calls to the runc shim on ``client``."""

    def __init__(self, client: Client) -> None:
        self.client = client

    async def _call(
        self,
        c: TaskRecord,
        method: str,
        request: Message,
        reply: str | None,
        timeout: float = CALL_TIMEOUT,
    ) -> Message | None:
        payload = await self.client.call(
            c.api.service,
            method,
            request.SerializeToString(),
            timeout=timeout,
            metadata=c.metadata,
        )
        return c.api.decode(reply, payload) if reply else None

    async def checkpoint(self, c: TaskRecord, image_dir: str) -> None:
        """Dump the task's process into ``image_dir`` and let it exit (CRIU logs there too)."""
        opts = oci_pb2.CheckpointOptions(exit=True, work_path=image_dir)
        req = c.api.messages.CheckpointTaskRequest(
            id=c.id,
            path=image_dir,
            options=any_pb2.Any(type_url=CHECKPOINT_OPTIONS_URL, value=opts.SerializeToString()),
        )
        bound = timeouts.scaled(timeouts.resident_bytes(c.pid))  # the daemon waits longer
        await self._call(c, "Checkpoint", req, None, timeout=bound)

    async def resume(self, c: TaskRecord) -> None:
        """Thaw the task's cgroup (runc resume)."""
        await self._call(c, "Resume", c.api.messages.ResumeRequest(id=c.id), None)

    async def kill(self, c: TaskRecord, signal: int) -> None:
        await self._call(c, "Kill", c.api.messages.KillRequest(id=c.id, signal=signal), None)

    async def wait(self, c: TaskRecord) -> int:
        """Block until the task's process has exited; its exit status."""
        req = c.api.messages.WaitRequest(id=c.id)
        return self._int(await self._call(c, "Wait", req, "WaitResponse"), "exit_status")

    async def delete(self, c: TaskRecord) -> int:
        """Delete the stopped runc task; the pid it had."""
        req = c.api.messages.DeleteRequest(id=c.id)
        return self._int(await self._call(c, "Delete", req, "DeleteResponse"), "pid")

    async def create(self, c: TaskRecord, checkpoint: str | None) -> int:
        """Re-create the task as containerd first created it, from ``checkpoint`` if given."""
        req = c.api.messages.CreateTaskRequest()
        req.CopyFrom(c.request)
        if checkpoint is not None:
            req.checkpoint = checkpoint
            req.options.CopyFrom(restore_options(c.request.options, checkpoint))
        return self._int(await self._call(c, "Create", req, "CreateTaskResponse"), "pid")

    async def start(self, c: TaskRecord, timeout: float = START_TIMEOUT) -> int:
        """Start the created task (for a checkpoint: CRIU restores it); the new pid."""
        req = c.api.messages.StartRequest(id=c.id)
        return self._int(await self._call(c, "Start", req, "StartResponse", timeout), "pid")

    @staticmethod
    def _int(message: Message | None, name: str) -> int:
        assert message is not None
        return int(getattr(message, name))


def restore_options(original: any_pb2.Any, work_path: str) -> any_pb2.Any:
    """The runc options of a restoring Create: containerd's own (if any) plus CRIU's work dir.

    The zeropod handler keeps runc's runtime type, so CRI passes the node's runc options
    (SystemdCgroup, BinaryName, Root), kept here; without any, an empty ``root`` keeps the
    runc shim's default (``/run/containerd/runc/<namespace>``).
    """
    opts = oci_pb2.Options()
    type_url = OPTIONS_URL
    if original.value:
        opts.ParseFromString(original.value)
        type_url = original.type_url or OPTIONS_URL
    opts.criu_work_path = work_path
    return any_pb2.Any(type_url=type_url, value=opts.SerializeToString())
