"""The control protocol's requests as frozen dataclasses, validated field by field.

:func:`parse_request` turns a decoded JSON object into one of the request types or raises
:class:`~zeropod.control.protocol.ControlError` whose message names the offending field.
Unknown fields are refused so that typos surface. To add an op, add a dataclass with
``OP``, ``from_fields`` and ``to_message`` and list it in :data:`REQUEST_TYPES`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from zeropod.control.protocol import (
    BAD_REQUEST,
    UNKNOWN_OP,
    UNSUPPORTED_VERSION,
    VERSION,
    ControlError,
)

# containerd identifiers: alphanumerics joined by single '.', '_' or '-', at most 76 chars.
_ID_RE = re.compile(r"[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*")
_ID_MAX = 76
_LABEL = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_LABEL_RE = re.compile(_LABEL)
_SUBDOMAIN_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_MAX_ANNOTATIONS = 256
_MAX_PATH = 4096


def _bad(name: str, problem: str, value: Any) -> ControlError:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return ControlError(BAD_REQUEST, f"field {name!r}: {problem}, got {shown}")


def _string(fields: Mapping[str, Any], name: str) -> str:
    if name not in fields:
        raise ControlError(BAD_REQUEST, f"field {name!r} is missing")
    value = fields[name]
    if not isinstance(value, str):
        raise _bad(name, "must be a string", value)
    return value


def _identifier(fields: Mapping[str, Any], name: str) -> str:
    value = _string(fields, name)
    if len(value) > _ID_MAX or not _ID_RE.fullmatch(value):
        raise _bad(name, f"must be a containerd id (letters, digits, . _ -, <= {_ID_MAX})", value)
    return value


def _dns_name(fields: Mapping[str, Any], name: str, *, subdomain: bool) -> str:
    value = _string(fields, name)
    pattern, limit, kind = (
        (_SUBDOMAIN_RE, 253, "a DNS-1123 subdomain")
        if subdomain
        else (_LABEL_RE, 63, "a DNS-1123 label")
    )
    if len(value) > limit or not pattern.fullmatch(value):
        raise _bad(name, f"must be {kind} (lowercase letters, digits, '-')", value)
    return value


def _path(fields: Mapping[str, Any], name: str, *, allow_empty: bool) -> str:
    value = _string(fields, name)
    if allow_empty and value == "":
        return value
    if not value.startswith("/") or "\0" in value or len(value) > _MAX_PATH:
        allowed = "an absolute path" + (" or empty" if allow_empty else "")
        raise _bad(name, f"must be {allowed}", value)
    return value


def _pid(fields: Mapping[str, Any], name: str) -> int:
    if name not in fields:
        raise ControlError(BAD_REQUEST, f"field {name!r} is missing")
    value = fields[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _bad(name, "must be an integer >= 1", value)
    return value


def _annotations(fields: Mapping[str, Any], name: str) -> dict[str, str]:
    value = fields.get(name, {})
    if not isinstance(value, dict):
        raise _bad(name, "must be an object of string to string", value)
    if len(value) > _MAX_ANNOTATIONS:
        raise _bad(name, f"must have at most {_MAX_ANNOTATIONS} entries", len(value))
    for key, item in value.items():
        if not isinstance(item, str):
            raise _bad(f"{name}.{key}", "must be a string", item)
    return dict(value)


def _container_id(fields: Mapping[str, Any]) -> str:
    """The container id, sent as ``id`` (older shims) or ``container_id`` (the contract)."""
    if "id" in fields and "container_id" in fields:
        raise ControlError(BAD_REQUEST, "give the container id once, as 'id' or 'container_id'")
    return _identifier(fields, "container_id" if "container_id" in fields else "id")


def _no_extra(fields: Mapping[str, Any], op: str, known: frozenset[str]) -> None:
    extra = sorted(set(fields) - known)
    if extra:
        raise ControlError(BAD_REQUEST, f"unknown field {extra[0]!r} for op {op!r}")


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
        _no_extra(fields, cls.OP, cls.FIELDS)
        return cls(
            container_id=_identifier(fields, "id"),
            pod=_dns_name(fields, "pod", subdomain=True),
            namespace=_dns_name(fields, "namespace", subdomain=False),
            container=_dns_name(fields, "container", subdomain=False),
            sandbox_id=_identifier(fields, "sandbox_id"),
            netns=_path(fields, "netns", allow_empty=True),
            bundle=_path(fields, "bundle", allow_empty=False),
            pid=_pid(fields, "pid"),
            annotations=_annotations(fields, "annotations"),
            shim_socket=_path(fields, "shim_socket", allow_empty=True)
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
        _no_extra(fields, cls.OP, cls.FIELDS)
        reason = _string(fields, "reason") if "reason" in fields else ""
        return cls(container_id=_container_id(fields), reason=reason[:512])

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
        _no_extra(fields, cls.OP, frozenset())
        return cls()

    def to_message(self) -> dict[str, Any]:
        return {"v": VERSION, "op": self.OP}


@dataclass(frozen=True)
class EventsRequest:
    """Follow state changes until the client disconnects."""

    OP: ClassVar[str] = "events"

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any]) -> EventsRequest:
        _no_extra(fields, cls.OP, frozenset())
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
        _no_extra(fields, cls.OP, cls.FIELDS)
        container = fields.get("container")
        return cls(
            pod=_dns_name(fields, "pod", subdomain=True),
            namespace=_dns_name(fields, "namespace", subdomain=False),
            container=None
            if container is None
            else _dns_name(fields, "container", subdomain=False),
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
        _no_extra(fields, cls.OP, cls.FIELDS)
        if "id" in fields or "container_id" in fields:
            if "pod" in fields or "namespace" in fields:
                raise ControlError(BAD_REQUEST, "give either 'id' or 'pod' and 'namespace'")
            return cls(container_id=_container_id(fields))
        return cls(
            pod=_dns_name(fields, "pod", subdomain=True),
            namespace=_dns_name(fields, "namespace", subdomain=False),
        )

    def to_message(self) -> dict[str, Any]:
        if self.container_id is not None:
            return {"v": VERSION, "op": self.OP, "id": self.container_id}
        return {"v": VERSION, "op": self.OP, "pod": self.pod, "namespace": self.namespace}


Request = (
    RegisterRequest | UnregisterRequest | StatusRequest | EventsRequest | SleepRequest | WakeRequest
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
    )
}


def parse_request(message: Mapping[str, Any]) -> Request:
    """Validate a decoded request object and return its typed request."""
    version = message.get("v")
    if version != VERSION or isinstance(version, bool):
        raise ControlError(
            UNSUPPORTED_VERSION, f"field 'v': this daemon speaks version {VERSION}, got {version!r}"
        )
    op = message.get("op")
    if not isinstance(op, str):
        raise _bad("op", "must be a string", op)
    request_type = REQUEST_TYPES.get(op)
    if request_type is None:
        known = ", ".join(sorted(REQUEST_TYPES))
        raise ControlError(UNKNOWN_OP, f"unknown op {op!r}; known ops: {known}")
    fields = {k: v for k, v in message.items() if k not in ("v", "op")}
    return request_type.from_fields(fields)
