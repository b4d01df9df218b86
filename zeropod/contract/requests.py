"""The control protocol's requests as frozen dataclasses, validated field by field.

:func:`parse_request` turns a decoded JSON object into one of the request types or raises
:class:`~zeropod.contract.protocol.ControlError` whose message names the offending field.
Unknown fields are refused so that typos surface. To add an op, add a dataclass with
``OP``, ``from_fields`` and ``to_message`` and list it in :data:`REQUEST_TYPES`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from zeropod.contract import fields as fields_
from zeropod.contract.protocol import (
    BAD_REQUEST,
    UNKNOWN_OP,
    VERSION,
    ControlError,
    check_version,
)


@dataclass(frozen=True)
class RegisterRequest:
    """A shim tells the daemon about a container it created."""

    OP: ClassVar[str] = "register"
    FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"id", "pod", "namespace", "container", "sandbox_id", "annotations", "netns"}
        | {"bundle", "pid", "shim_socket"}
    )

    container_id: str
    pod: str
    namespace: str
    container: str
    sandbox_id: str
    netns: str
    bundle: str
    pid: int
    annotations: Mapping[str, str] = field(default_factory=dict)
    shim_socket: str = ""
    """The interposer's own control socket (checkpoint/restore); empty when it has none."""

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any]) -> RegisterRequest:
        fields_.no_extra(fields, cls.OP, cls.FIELDS)
        return cls(
            container_id=fields_.identifier(fields, "id"),
            pod=fields_.dns_name(fields, "pod", subdomain=True),
            namespace=fields_.dns_name(fields, "namespace", subdomain=False),
            container=fields_.dns_name(fields, "container", subdomain=False),
            sandbox_id=fields_.identifier(fields, "sandbox_id"),
            netns=fields_.path(fields, "netns", allow_empty=True),
            bundle=fields_.path(fields, "bundle", allow_empty=False),
            pid=fields_.pid(fields, "pid"),
            annotations=fields_.annotations(fields, "annotations"),
            shim_socket=fields_.path(fields, "shim_socket", allow_empty=True)
            if "shim_socket" in fields
            else "",
        )

    def to_message(self) -> dict[str, Any]:
        message = {
            "v": VERSION,
            "op": self.OP,
            "id": self.container_id,
            "pod": self.pod,
            "namespace": self.namespace,
            "container": self.container,
            "sandbox_id": self.sandbox_id,
            "netns": self.netns,
            "bundle": self.bundle,
            "pid": self.pid,
            "annotations": dict(self.annotations),
        }
        if self.shim_socket:
            message["shim_socket"] = self.shim_socket
        return message


@dataclass(frozen=True)
class UnregisterRequest:
    """A shim tells the daemon that a container is gone (deleted)."""

    OP: ClassVar[str] = "unregister"
    FIELDS: ClassVar[frozenset[str]] = frozenset({"id", "container_id", "reason"})

    container_id: str
    reason: str = ""

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any]) -> UnregisterRequest:
        fields_.no_extra(fields, cls.OP, cls.FIELDS)
        reason = fields_.string(fields, "reason") if "reason" in fields else ""
        return cls(container_id=fields_.container_id(fields), reason=reason[:512])

    def to_message(self) -> dict[str, Any]:
        message = {"v": VERSION, "op": self.OP, "id": self.container_id}
        if self.reason:
            message["reason"] = self.reason
        return message


@dataclass(frozen=True)
class StatusRequest:
    """List every registered container with its phase."""

    OP: ClassVar[str] = "status"

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any]) -> StatusRequest:
        fields_.no_extra(fields, cls.OP, frozenset())
        return cls()

    def to_message(self) -> dict[str, Any]:
        return {"v": VERSION, "op": self.OP}


@dataclass(frozen=True)
class EventsRequest:
    """Follow state changes until the client disconnects."""

    OP: ClassVar[str] = "events"

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any]) -> EventsRequest:
        fields_.no_extra(fields, cls.OP, frozenset())
        return cls()

    def to_message(self) -> dict[str, Any]:
        return {"v": VERSION, "op": self.OP}


@dataclass(frozen=True)
class SleepRequest:
    """Put a pod to sleep now (all its scaled containers); answers once it is scaled down.

    ``container``, when given, must be one of the pod's scaled containers (the whole pod
    still sleeps: its scaled containers sleep and wake together).
    """

    OP: ClassVar[str] = "sleep"
    FIELDS: ClassVar[frozenset[str]] = frozenset({"pod", "namespace", "container"})

    pod: str
    namespace: str
    container: str | None = None

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any]) -> SleepRequest:
        fields_.no_extra(fields, cls.OP, cls.FIELDS)
        container = fields.get("container")
        return cls(
            pod=fields_.dns_name(fields, "pod", subdomain=True),
            namespace=fields_.dns_name(fields, "namespace", subdomain=False),
            container=None
            if container is None
            else fields_.dns_name(fields, "container", subdomain=False),
        )

    def to_message(self) -> dict[str, Any]:
        message = {"v": VERSION, "op": self.OP, "pod": self.pod, "namespace": self.namespace}
        if self.container is not None:
            message["container"] = self.container
        return message


@dataclass(frozen=True)
class WakeRequest:
    """Wake a pod now: named by ``pod`` and ``namespace`` (the CLI), or by one of its
    containers' ``id`` (a shim that must forward an Exec). Answers once the pod runs."""

    OP: ClassVar[str] = "wake"
    FIELDS: ClassVar[frozenset[str]] = frozenset({"id", "container_id", "pod", "namespace"})

    container_id: str | None = None
    pod: str | None = None
    namespace: str | None = None

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any]) -> WakeRequest:
        fields_.no_extra(fields, cls.OP, cls.FIELDS)
        if "id" in fields or "container_id" in fields:
            if "pod" in fields or "namespace" in fields:
                raise ControlError(BAD_REQUEST, "give either 'id' or 'pod' and 'namespace'")
            return cls(container_id=fields_.container_id(fields))
        return cls(
            pod=fields_.dns_name(fields, "pod", subdomain=True),
            namespace=fields_.dns_name(fields, "namespace", subdomain=False),
        )

    def to_message(self) -> dict[str, Any]:
        if self.container_id is not None:
            return {"v": VERSION, "op": self.OP, "id": self.container_id}
        return {"v": VERSION, "op": self.OP, "pod": self.pod, "namespace": self.namespace}


@dataclass(frozen=True)
class RestartedColdRequest:
    """A shim tells the daemon that a woken container lost its memory after the restore
    (its lazy page server failed), so the shim killed it and started it cold as ``pid``."""

    OP: ClassVar[str] = "restarted_cold"
    FIELDS: ClassVar[frozenset[str]] = frozenset({"id", "container_id", "pid", "error"})

    container_id: str
    pid: int
    error: str

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any]) -> RestartedColdRequest:
        fields_.no_extra(fields, cls.OP, cls.FIELDS)
        return cls(
            container_id=fields_.container_id(fields),
            pid=fields_.pid(fields, "pid"),
            error=fields_.string(fields, "error")[:2048],
        )

    def to_message(self) -> dict[str, Any]:
        return {
            "v": VERSION,
            "op": self.OP,
            "id": self.container_id,
            "pid": self.pid,
            "error": self.error,
        }


Request = (
    RegisterRequest
    | UnregisterRequest
    | StatusRequest
    | EventsRequest
    | SleepRequest
    | WakeRequest
    | RestartedColdRequest
)
REQUEST_TYPES: dict[str, type[Request]] = {
    t.OP: t
    for t in (
        RegisterRequest,
        UnregisterRequest,
        StatusRequest,
        EventsRequest,
        SleepRequest,
        WakeRequest,
        RestartedColdRequest,
    )
}


def parse_request(message: Mapping[str, Any]) -> Request:
    """Validate a decoded request object and return its typed request."""
    check_version(message, "this daemon")
    op = message.get("op")
    if not isinstance(op, str):
        raise fields_.bad("op", "must be a string", op)
    request_type = REQUEST_TYPES.get(op)
    if request_type is None:
        known = ", ".join(sorted(REQUEST_TYPES))
        raise ControlError(UNKNOWN_OP, f"unknown op {op!r}; known ops: {known}")
    fields = {k: v for k, v in message.items() if k not in ("v", "op")}
    return request_type.from_fields(fields)
