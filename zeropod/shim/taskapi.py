"""Which containerd task API a runc shim speaks, and how to decode its messages.

containerd 1.6/1.7 use ``containerd.task.v2.Task``; 2.x uses ``containerd.task.v3.Task``.
The messages are identical apart from the protobuf package, so hooks look the module up by
the service name of the call they intercept.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

from google.protobuf.message import Message

from zeropod._gen.containerd.api.runtime.task.v2 import shim_pb2 as task_v2
from zeropod._gen.containerd.api.runtime.task.v3 import shim_pb2 as task_v3

METHODS: tuple[str, ...] = tuple(
    m.name for m in task_v3.DESCRIPTOR.services_by_name["Task"].methods
)


@dataclass(frozen=True, slots=True)
class TaskAPI:
    version: int
    service: str
    messages: ModuleType

    def decode(self, message: str, payload: bytes) -> Message:
        """Parse ``payload`` as the named message of this API version (e.g. "CreateTaskRequest")."""
        return getattr(self.messages, message).FromString(payload)


V2 = TaskAPI(2, "containerd.task.v2.Task", task_v2)
V3 = TaskAPI(3, "containerd.task.v3.Task", task_v3)
BY_SERVICE = {api.service: api for api in (V2, V3)}
