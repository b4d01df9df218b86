"""The interposer's start-up configuration, handed from the launcher as one JSON argument.

Kept apart from the daemon so that ``start`` imports nothing of asyncio or protobuf.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass


@dataclass(frozen=True, slots=True)
class Config:
    """Everything the launcher tells the daemon (passed as one JSON argument)."""

    id: str
    namespace: str
    group: str
    upstream: str  # the runc shim's socket path
    containerd_events: str  # containerd's TTRPC_ADDRESS
    socket: str
    events: str
    bootstrap: str
    lock: str
    log: str
    socket_fd: int
    events_fd: int
    ready_fd: int
    debug: bool = False
    control: str = ""  # the interposer's control socket (daemon -> shim)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Config:
        return cls(**json.loads(text))
