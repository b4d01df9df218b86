"""Framing, error codes and the socket path of the control protocol (version 1).

One request or response per line, UTF-8 JSON terminated by ``\\n``. A request is
``{"v": 1, "op": NAME, ...fields}``; a response is ``{"ok": true, ...}`` or
``{"ok": false, "error": {"code": CODE, "message": TEXT}}``. The ``events`` op answers with
one ``{"ok": true, "stream": "events"}`` line and then one ``{"ok": true, "event": {...}}``
line per state change until either side closes. This module knows nothing of the daemon.
"""

from __future__ import annotations

import json
import os
from typing import Any

VERSION = 1
DEFAULT_SOCKET = "/run/zeropod/control.sock"
SOCKET_ENV = "ZEROPOD_CONTROL_SOCKET"
MAX_LINE = 1 << 20
"""Longest accepted line in bytes (annotations can be long; anything bigger is an error)."""

# Error codes (the ``error.code`` of a failed response).
BAD_JSON = "bad_json"
BAD_REQUEST = "bad_request"
UNSUPPORTED_VERSION = "unsupported_version"
UNKNOWN_OP = "unknown_op"
NOT_FOUND = "not_found"
TOO_LARGE = "too_large"
OVERFLOW = "overflow"
INTERNAL = "internal"
UNAVAILABLE = "unavailable"
"""Client side only: the daemon could not be reached."""
PERMISSION = "permission_denied"
"""The peer may not make this request (SO_PEERCRED: not root, nor the read-only group)."""
BUSY = "busy"
"""The daemon serves its maximum of connections; try again."""


class ControlError(Exception):
    """A request that failed, with a stable ``code`` and a message for humans."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


class DaemonUnavailable(ControlError):
    """The daemon could not be reached (no socket, refused, permission, timeout)."""

    def __init__(self, message: str) -> None:
        super().__init__(UNAVAILABLE, message)


def socket_path() -> str:
    """The control socket's path: ``$ZEROPOD_CONTROL_SOCKET`` or the default."""
    return os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET


def encode(message: dict[str, Any]) -> bytes:
    """One message as a JSON line."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    """Parse one line into a JSON object, or raise :class:`ControlError` (``bad_json``)."""
    try:
        message = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ControlError(BAD_JSON, f"line is not valid JSON: {err}") from err
    if not isinstance(message, dict):
        raise ControlError(BAD_JSON, f"expected a JSON object, got {type(message).__name__}")
    return message


def ok(**body: Any) -> dict[str, Any]:
    """A successful response carrying ``body``."""
    return {"ok": True, **body}


def failure(error: ControlError) -> dict[str, Any]:
    """The failed response for ``error``."""
    return {"ok": False, "error": {"code": error.code, "message": error.message}}


def check_response(message: dict[str, Any]) -> dict[str, Any]:
    """Return a successful response, or raise the :class:`ControlError` a failed one carries."""
    if message.get("ok") is True:
        return message
    error = message.get("error")
    if isinstance(error, dict):
        raise ControlError(str(error.get("code", INTERNAL)), str(error.get("message", "")))
    raise ControlError(BAD_JSON, f"malformed response: {message!r}")
