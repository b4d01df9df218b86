"""The one client of the daemon's control socket: the shim's (:mod:`zeropod.shim.daemonlink`),
the CLI's and the tests'.

:class:`ControlClient` raises :class:`~zeropod.contract.protocol.DaemonUnavailable` when the
daemon cannot be reached and :class:`~zeropod.contract.protocol.ControlError` when it refuses a
request. Imports only the standard library and the contract (the shim's start-up path stays
cheap).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

from zeropod.contract.protocol import (
    BAD_JSON,
    MAX_LINE,
    ControlError,
    DaemonUnavailable,
    check_response,
    decode,
    encode,
    older_version,
    socket_path,
)
from zeropod.contract.requests import (
    EventsRequest,
    SleepRequest,
    StatusRequest,
    WakeRequest,
)

ANNOTATION_PREFIX = "zeropod.ctrox.dev/"
SHIM_TIMEOUT = 0.5
"""Seconds the shim's best-effort calls may take in total."""


class ControlClient:
    """Talks to the daemon at ``path`` (default: ``$ZEROPOD_CONTROL_SOCKET`` or the default).

    Each request opens its own connection; ``timeout`` bounds each request as a whole.
    """

    def __init__(self, path: str | None = None, timeout: float = 5.0) -> None:
        self.path = path or socket_path()
        self.timeout = timeout

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send one request message and return the successful response.

        A daemon that speaks only an older version of the contract gets the message again as
        that version (the fields it lacks dropped), once per version.
        """
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                return self._request(message, deadline)
            except ControlError as err:
                older = older_version(err, message)
                if older is None:
                    raise
                message = older

    def _request(self, message: dict[str, Any], deadline: float) -> dict[str, Any]:
        with self._connect(deadline) as sock:
            _send(sock, message, deadline, self.path)
            response = _LineReader(sock, self.path).read(deadline)
        if response is None:
            raise DaemonUnavailable(f"daemon at {self.path} closed the connection without answer")
        return check_response(response)

    def status(self) -> list[dict[str, Any]]:
        """Every registered container, as the daemon describes it."""
        containers = self.request(StatusRequest().to_message()).get("containers")
        if not isinstance(containers, list):
            raise ControlError(BAD_JSON, "status response has no container list")
        return containers

    def sleep(self, pod: str, namespace: str, container: str | None = None) -> dict[str, Any]:
        """Put a pod to sleep now; returns once it is scaled down (``pod`` describes it)."""
        return self.request(SleepRequest(pod, namespace, container).to_message())

    def wake(self, pod: str, namespace: str) -> dict[str, Any]:
        """Wake a pod now; returns once it runs again (``pod`` describes it)."""
        return self.request(WakeRequest(pod=pod, namespace=namespace).to_message())

    def events(self) -> Iterator[dict[str, Any]]:
        """Yield state-change events until the daemon closes the stream.

        Connecting is bounded by the timeout; waiting for events is not.
        """
        deadline = time.monotonic() + self.timeout
        with self._connect(deadline) as sock:
            _send(sock, EventsRequest().to_message(), deadline, self.path)
            reader = _LineReader(sock, self.path)
            ack = reader.read(deadline)
            if ack is None:
                raise DaemonUnavailable(f"daemon at {self.path} closed the connection")
            check_response(ack)
            while True:
                message = reader.read(None)
                if message is None:
                    return
                event = check_response(message).get("event")
                if isinstance(event, dict):
                    yield event

    def _connect(self, deadline: float) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.settimeout(_remaining(deadline, self.path))
            sock.connect(self.path)
        except FileNotFoundError as err:
            sock.close()
            raise DaemonUnavailable(f"no control socket at {self.path}") from err
        except ConnectionRefusedError as err:
            sock.close()
            raise DaemonUnavailable(f"nothing listens on {self.path}") from err
        except TimeoutError as err:
            sock.close()
            raise DaemonUnavailable(f"timed out connecting to {self.path}") from err
        except OSError as err:
            sock.close()
            raise DaemonUnavailable(f"cannot connect to {self.path}: {err.strerror}") from err
        return sock


class _LineReader:
    """Reads JSON lines from a socket, each read bounded by a deadline (or none)."""

    def __init__(self, sock: socket.socket, path: str) -> None:
        self._sock = sock
        self._path = path
        self._buffer = b""

    def read(self, deadline: float | None) -> dict[str, Any] | None:
        """The next message; ``None`` at end of stream."""
        while b"\n" not in self._buffer:
            if len(self._buffer) > MAX_LINE:
                raise ControlError(BAD_JSON, f"response line longer than {MAX_LINE} bytes")
            self._sock.settimeout(None if deadline is None else _remaining(deadline, self._path))
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError as err:
                raise DaemonUnavailable(f"daemon at {self._path} did not answer in time") from err
            except OSError as err:
                raise DaemonUnavailable(f"lost connection to {self._path}: {err}") from err
            if not chunk:
                if self._buffer.strip():
                    raise ControlError(BAD_JSON, "connection closed in the middle of a line")
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return decode(line)


def _send(sock: socket.socket, message: dict[str, Any], deadline: float, path: str) -> None:
    sock.settimeout(_remaining(deadline, path))
    try:
        sock.sendall(encode(message))
    except TimeoutError as err:
        raise DaemonUnavailable(f"timed out sending to {path}") from err
    except OSError as err:
        raise DaemonUnavailable(f"lost connection to {path}: {err}") from err


def _remaining(deadline: float, path: str) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise DaemonUnavailable(f"daemon at {path} did not answer in time")
    return left
