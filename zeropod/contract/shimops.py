"""The daemon's ops on a shim's own control socket, and their replies, as typed values.

The daemon (:mod:`zeropod.daemon.adapters.shim`) builds these and the shim
(:mod:`zeropod.shim.control`) parses them: one definition of each op, its fields and its
reply. Framing, version and error codes are :mod:`.protocol`'s; how long each op may take is
:mod:`.timeouts`'.

- ``checkpoint {container_id, image_dir, mode}`` -> :class:`TaskReply` (``pid``,
  ``duration_ms``). ``mode`` ``checkpoint`` dumps into ``image_dir``; ``stop`` ends the task
  (disable-checkpointing) and needs no directory.
- ``restore {container_id, image_dir, fallback, lazy}`` -> :class:`TaskReply` (``pid``,
  ``cold``, ``duration_ms``, ``error``, ``lazy``). ``image_dir`` null starts the task cold.
  With ``fallback`` false a failed restore is not followed by a cold start: the answer is
  ``restore_failed`` and the task stays scaled down (the daemon decides the cold start, see
  :mod:`zeropod.daemon.lifecycle.wake`). ``lazy`` asks for a lazy-pages restore (memory
  served after the app runs, :mod:`zeropod.shim.lazypages`); the reply's ``lazy`` says
  whether it was one.
- ``status {}`` -> ``{containers: [...]}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from zeropod.contract import fields as fields_
from zeropod.contract.protocol import (
    BAD_REQUEST,
    OLDEST_VERSION,
    UNKNOWN_OP,
    VERSION,
    ControlError,
    check_version,
)

Mode = Literal["checkpoint", "stop"]
MODES: tuple[Mode, ...] = ("checkpoint", "stop")


def _image_dir(fields: Mapping[str, Any], *, required: bool) -> str | None:
    value = fields.get("image_dir")
    if value is None and not required:
        return None
    return fields_.path({"image_dir": value}, "image_dir", allow_empty=False)


@dataclass(frozen=True)
class CheckpointRequest:
    """Dump (or stop) one container's task."""

    OP: ClassVar[str] = "checkpoint"
    FIELDS: ClassVar[frozenset[str]] = frozenset({"container_id", "id", "image_dir", "mode"})

    container_id: str
    image_dir: str | None
    mode: Mode = "checkpoint"

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any]) -> CheckpointRequest:
        fields_.no_extra(fields, cls.OP, cls.FIELDS)
        mode = fields.get("mode", "checkpoint")
        if mode not in MODES:
            raise ControlError(BAD_REQUEST, f"field 'mode': one of {MODES}, got {mode!r}")
        image_dir = _image_dir(fields, required=mode == "checkpoint")
        return cls(fields_.container_id(fields), image_dir, mode)

    def to_message(self) -> dict[str, Any]:
        return {
            "v": VERSION,
            "op": self.OP,
            "container_id": self.container_id,
            "image_dir": self.image_dir,
            "mode": self.mode,
        }


@dataclass(frozen=True)
class RestoreRequest:
    """Re-create one container's task from ``image_dir`` (None: cold)."""

    OP: ClassVar[str] = "restore"
    FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"container_id", "id", "image_dir", "fallback", "lazy"}
    )

    container_id: str
    image_dir: str | None
    fallback: bool = False
    lazy: bool = False

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any]) -> RestoreRequest:
        fields_.no_extra(fields, cls.OP, cls.FIELDS)
        flags = {}
        for name in ("fallback", "lazy"):
            value = flags[name] = fields.get(name, False)
            if not isinstance(value, bool):
                raise ControlError(BAD_REQUEST, f"field {name!r}: true or false, got {value!r}")
        return cls(fields_.container_id(fields), _image_dir(fields, required=False), **flags)

    def to_message(self) -> dict[str, Any]:
        return {
            "v": VERSION,
            "op": self.OP,
            "container_id": self.container_id,
            "image_dir": self.image_dir,
            "fallback": self.fallback,
            **({"lazy": True} if self.lazy else {}),  # a shim older than lazy restores
        }


@dataclass(frozen=True)
class ShimStatusRequest:
    """Every task the shim knows, with its phase."""

    OP: ClassVar[str] = "status"

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any]) -> ShimStatusRequest:
        fields_.no_extra(fields, cls.OP, frozenset())
        return cls()

    def to_message(self) -> dict[str, Any]:
        return {"v": VERSION, "op": self.OP}


ShimRequest = CheckpointRequest | RestoreRequest | ShimStatusRequest
SHIM_REQUESTS: dict[str, type[ShimRequest]] = {
    t.OP: t for t in (CheckpointRequest, RestoreRequest, ShimStatusRequest)
}


def parse_shim_request(message: Mapping[str, Any]) -> ShimRequest:
    """The typed op of a decoded line, or :class:`ControlError` naming the bad field."""
    check_version({"v": OLDEST_VERSION, **message}, "this shim")
    op = message.get("op")
    request_type = SHIM_REQUESTS.get(op) if isinstance(op, str) else None
    if request_type is None:
        known = ", ".join(SHIM_REQUESTS)
        raise ControlError(UNKNOWN_OP, f"unknown op {op!r}; known ops: {known}")
    return request_type.from_fields({k: v for k, v in message.items() if k not in ("v", "op")})


@dataclass(frozen=True)
class TaskReply:
    """A shim's answer to checkpoint or restore: the task's pid now and how long it took;
    for a restore whether it started cold and, when that was a fallback, why."""

    pid: int
    duration_ms: float
    cold: bool = False
    error: str | None = None
    lazy: bool = False  # memory still streams in from the image (a lazy restore)

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"pid": self.pid, "duration_ms": self.duration_ms}
        body["cold"] = self.cold
        body["lazy"] = self.lazy
        if self.error is not None:
            body["error"] = self.error
        return body

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> TaskReply:
        """The reply in a successful response; missing or odd fields read as zero/none."""
        pid, duration, error = body.get("pid"), body.get("duration_ms"), body.get("error")
        return cls(
            pid=pid if isinstance(pid, int) and not isinstance(pid, bool) else 0,
            duration_ms=float(duration) if isinstance(duration, int | float) else 0.0,
            cold=body.get("cold") is True,
            lazy=body.get("lazy") is True,
            error=error if isinstance(error, str) else None,
        )


@dataclass(frozen=True)
class TaskStatus:
    """One task in a shim's ``status`` answer: what the shim knows to be true of it."""

    container_id: str
    phase: str
    """The shim's phase (``running``, ``scaled_down``, ``checkpointing``, ``restoring``,
    ``exited``, ``ended``, ``created``, ``deleted``)."""
    pid: int
    """The live process's pid (0 while there is none)."""
    last_pid: int

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> TaskStatus | None:
        """An entry of the answer; None for a malformed one."""
        cid, phase = body.get("container_id"), body.get("phase")
        pid, last = body.get("pid"), body.get("last_pid")
        if not isinstance(cid, str) or not isinstance(phase, str):
            return None
        return cls(
            cid,
            phase,
            pid if isinstance(pid, int) and not isinstance(pid, bool) else 0,
            last if isinstance(last, int) and not isinstance(last, bool) else 0,
        )
