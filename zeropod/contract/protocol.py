"""The daemon-shim contract's framing, version, error codes and the daemon's socket path.

One request or response per line, UTF-8 JSON terminated by ``\\n``. A request is
``{"v": 1, "op": NAME, ...fields}``; a response is ``{"ok": true, ...}`` or
``{"ok": false, "error": {"code": CODE, "message": TEXT}}``. The ``events`` op answers with
one ``{"ok": true, "stream": "events"}`` line and then one ``{"ok": true, "event": {...}}``
line per state change until either side closes. This module knows nothing of the daemon.

The same framing carries both directions of the contract: the shim (and the CLI) to the
daemon (:mod:`.requests`), and the daemon to the shim's own socket (:mod:`.shimops`).

**Compatibility is the version number ``v``, never the text of an error.** Each side speaks
:data:`VERSION` and accepts :data:`OLDEST_VERSION` up to it. A peer that only knows older
versions answers ``unsupported_version``; the caller then sends the message again as that
version (:func:`as_version` drops the fields the older version lacks), once.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from typing import Any

VERSION = 2
"""Version 2 added ``shim_socket`` to register and ``reason`` to unregister."""
OLDEST_VERSION = 1
ADDED_IN = {2: {"register": ("shim_socket",), "unregister": ("reason",)}}
"""Per version: the op fields it added (dropped when a message is sent as an older version)."""
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
# The lifecycle's codes (daemon ops and the shim's checkpoint/restore).
CHECKPOINT_FAILED = "checkpoint_failed"
"""The shim's dump failed; the task still runs."""
RESTORE_FAILED = "restore_failed"
"""The shim's restore failed (with ``fallback: false`` the container stays scaled down)."""
BAD_PHASE = "bad_phase"
"""The shim's task is not in a phase where the op is legal."""
IMAGE_DIR_FAILED = "image_dir_failed"
"""The image directory could not be made: the sleep failed before any dump."""
SLEEP_FAILED = "sleep_failed"
"""A sleep failed; the pod keeps running (the message says why and when it tries again)."""
WAKE_FAILED = "wake_failed"
"""A wake left some container not running."""
CONFLICT = "conflict"
"""The pod's state does not allow the op (the message names state and op)."""


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


def check_version(message: dict[str, Any], who: str) -> int:
    """The version of MESSAGE when WHO speaks it, else :class:`ControlError`
    (``unsupported_version``, naming the versions WHO speaks)."""
    version = message.get("v")
    if isinstance(version, bool) or not isinstance(version, int):
        version = None
    if version is None or not OLDEST_VERSION <= version <= VERSION:
        raise ControlError(
            UNSUPPORTED_VERSION,
            f"field 'v': {who} speaks versions {OLDEST_VERSION} to {VERSION}, "
            f"got {message.get('v')!r}",
        )
    return version


def as_version(message: dict[str, Any], version: int) -> dict[str, Any]:
    """MESSAGE as VERSION speaks it: the fields added after VERSION dropped."""
    dropped = {
        name
        for added, ops in ADDED_IN.items()
        if added > version
        for name in ops.get(str(message.get("op")), ())
    }
    return {k: v for k, v in message.items() if k not in dropped} | {"v": version}


def older_version(err: ControlError, message: dict[str, Any]) -> dict[str, Any] | None:
    """The message to send again when a peer refused MESSAGE's version, else None."""
    version = message.get("v")
    if err.code != UNSUPPORTED_VERSION or not isinstance(version, int) or version <= OLDEST_VERSION:
        return None
    return as_version(message, version - 1)


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


async def respond(
    body: Awaitable[dict[str, Any]], what: str, log_bug: Callable[[str], None]
) -> dict[str, Any]:
    """The response to one request whose answer is BODY (awaited here): ``ok`` with it, the
    failure its :class:`ControlError` names, or ``internal`` for a bug (logged through
    LOG_BUG with WHAT, the request): a handler's bug never takes a server down."""
    try:
        return ok(**await body)
    except ControlError as err:
        return failure(err)
    except Exception as err:
        log_bug(f"{what} failed: {err!r}")
        return failure(ControlError(INTERNAL, f"{what} failed: {type(err).__name__}: {err}"))


async def send_failure(writer: asyncio.StreamWriter, error: ControlError) -> None:
    """Write the failed response for ERROR on a server's connection and wait until it is
    sent (a refusal before any request, or an answer to a bad one)."""
    writer.write(encode(failure(error)))
    await writer.drain()


def check_response(message: dict[str, Any]) -> dict[str, Any]:
    """Return a successful response, or raise the :class:`ControlError` a failed one carries."""
    if message.get("ok") is True:
        return message
    error = message.get("error")
    if isinstance(error, dict):
        raise ControlError(str(error.get("code", INTERNAL)), str(error.get("message", "")))
    raise ControlError(BAD_JSON, f"malformed response: {message!r}")
