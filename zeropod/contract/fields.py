"""Field validators of the contract's requests: each error names the field and what is allowed."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from zeropod.contract.protocol import BAD_REQUEST, ControlError

# containerd identifiers: alphanumerics joined by single '.', '_' or '-', at most 76 chars.
_ID_RE = re.compile(r"[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*")
_ID_MAX = 76
_LABEL = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_LABEL_RE = re.compile(_LABEL)
_SUBDOMAIN_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_MAX_ANNOTATIONS = 256
_MAX_PATH = 4096


def bad(name: str, problem: str, value: Any) -> ControlError:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return ControlError(BAD_REQUEST, f"field {name!r}: {problem}, got {shown}")


def string(fields: Mapping[str, Any], name: str) -> str:
    if name not in fields:
        raise ControlError(BAD_REQUEST, f"field {name!r} is missing")
    value = fields[name]
    if not isinstance(value, str):
        raise bad(name, "must be a string", value)
    return value


def identifier(fields: Mapping[str, Any], name: str) -> str:
    value = string(fields, name)
    if len(value) > _ID_MAX or not _ID_RE.fullmatch(value):
        raise bad(name, f"must be a containerd id (letters, digits, . _ -, <= {_ID_MAX})", value)
    return value


def dns_name(fields: Mapping[str, Any], name: str, *, subdomain: bool) -> str:
    value = string(fields, name)
    pattern, limit, kind = (
        (_SUBDOMAIN_RE, 253, "a DNS-1123 subdomain")
        if subdomain
        else (_LABEL_RE, 63, "a DNS-1123 label")
    )
    if len(value) > limit or not pattern.fullmatch(value):
        raise bad(name, f"must be {kind} (lowercase letters, digits, '-')", value)
    return value


def path(fields: Mapping[str, Any], name: str, *, allow_empty: bool) -> str:
    value = string(fields, name)
    if allow_empty and value == "":
        return value
    if not value.startswith("/") or "\0" in value or len(value) > _MAX_PATH:
        allowed = "an absolute path" + (" or empty" if allow_empty else "")
        raise bad(name, f"must be {allowed}", value)
    return value


def pid(fields: Mapping[str, Any], name: str) -> int:
    if name not in fields:
        raise ControlError(BAD_REQUEST, f"field {name!r} is missing")
    value = fields[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise bad(name, "must be an integer >= 1", value)
    return value


def annotations(fields: Mapping[str, Any], name: str) -> dict[str, str]:
    value = fields.get(name, {})
    if not isinstance(value, dict):
        raise bad(name, "must be an object of string to string", value)
    if len(value) > _MAX_ANNOTATIONS:
        raise bad(name, f"must have at most {_MAX_ANNOTATIONS} entries", len(value))
    for key, item in value.items():
        if not isinstance(item, str):
            raise bad(f"{name}.{key}", "must be a string", item)
    return dict(value)


def container_id(fields: Mapping[str, Any]) -> str:
    """The container id, sent as ``id`` (older shims) or ``container_id`` (the contract)."""
    if "id" in fields and "container_id" in fields:
        raise ControlError(BAD_REQUEST, "give the container id once, as 'id' or 'container_id'")
    return identifier(fields, "container_id" if "container_id" in fields else "id")


def no_extra(fields: Mapping[str, Any], op: str, known: frozenset[str]) -> None:
    extra = sorted(set(fields) - known)
    if extra:
        raise ControlError(BAD_REQUEST, f"unknown field {extra[0]!r} for op {op!r}")
