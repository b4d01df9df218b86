"""A small synchronous client of the control protocol, for the CLI and the shim.

:class:`ControlClient` raises :class:`~zeropod.control.protocol.DaemonUnavailable` when the
daemon cannot be reached and :class:`~zeropod.control.protocol.ControlError` when it refuses a
request. :func:`register_container` and :func:`unregister_container` are the shim's
best-effort calls: they never raise and give up after a short timeout, because a container
must never fail because the daemon is down. Imports only the standard library (the shim's
start-up path stays cheap).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from zeropod.control.protocol import (
    BAD_JSON,
    MAX_LINE,
    ControlError,
    DaemonUnavailable,
    check_response,
    decode,
    encode,
    socket_path,
)
from zeropod.control.requests import (
    EventsRequest,
    RegisterRequest,
    SleepRequest,
    StatusRequest,
    UnregisterRequest,
    WakeRequest,
)

ANNOTATION_PREFIX = "zeropod.ctrox.dev/"
SHIM_TIMEOUT = 0.5
"""Seconds the shim's best-effort calls may take in total."""
WAKE_TIMEOUT = 120.0
"""Seconds a shim waits for the daemon to wake a pod (a restore of a large app takes long)."""


class ControlClient:
    """Talks to the daemon at ``path`` (default: ``$ZEROPOD_CONTROL_SOCKET`` or the default).

    Each request opens its own connection; ``timeout`` bounds each request as a whole.
    """

    def __init__(self, path: str | None = None, timeout: float = 5.0) -> None:
        self.path = path or socket_path()
        self.timeout = timeout

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send one request message and return the successful response."""
        deadline = time.monotonic() + self.timeout
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


@dataclass(frozen=True)
class Outcome:
    """What a best-effort call achieved; ``error`` is set when it did not succeed."""

    ok: bool
    managed: bool | None = None
    reason: str | None = None
    error: str | None = None


def register_container(
    *,
    container_id: str,
    pod: str,
    namespace: str,
    container: str,
    sandbox_id: str,
    netns: str,
    bundle: str,
    pid: int,
    annotations: Mapping[str, str],
    shim_socket: str = "",
    path: str | None = None,
    timeout: float = SHIM_TIMEOUT,
) -> Outcome:
    """Tell the daemon about a container; never raises, gives up after ``timeout`` seconds.

    Only ``zeropod.ctrox.dev/*`` annotations are sent. The outcome says whether the daemon
    manages the container (and why not), or why the call failed.
    """
    request = RegisterRequest(
        container_id=container_id,
        pod=pod,
        namespace=namespace,
        container=container,
        sandbox_id=sandbox_id,
        netns=netns,
        bundle=bundle,
        pid=pid,
        annotations={k: v for k, v in annotations.items() if k.startswith(ANNOTATION_PREFIX)},
        shim_socket=shim_socket,
    )
    try:
        response = ControlClient(path, timeout).request(request.to_message())
    except Exception as err:  # best effort by contract: the container must not fail
        return Outcome(ok=False, error=str(err))
    managed = response.get("managed")
    reason = response.get("reason")
    return Outcome(
        ok=True,
        managed=managed if isinstance(managed, bool) else None,
        reason=reason if isinstance(reason, str) else None,
    )


def unregister_container(
    container_id: str,
    *,
    reason: str = "",
    path: str | None = None,
    timeout: float = SHIM_TIMEOUT,
) -> Outcome:
    """Tell the daemon a container is gone; never raises, gives up after ``timeout``."""
    try:
        request = UnregisterRequest(container_id, reason)
        ControlClient(path, timeout).request(request.to_message())
    except Exception as err:  # best effort by contract: the container must not fail
        return Outcome(ok=False, error=str(err))
    return Outcome(ok=True)


def wake_container(
    container_id: str, *, path: str | None = None, timeout: float = WAKE_TIMEOUT
) -> Outcome:
    """Ask the daemon to wake the pod of ``container_id`` and wait until it runs.

    Never raises; blocks at most ``timeout`` seconds. ``ok`` is False with ``error`` set when
    the daemon is unreachable or could not wake it (the shim then forwards the call anyway).
    """
    try:
        request = WakeRequest(container_id=container_id)
        ControlClient(path, timeout).request(request.to_message())
    except Exception as err:  # best effort by contract: the container must not fail
        return Outcome(ok=False, error=str(err))
    return Outcome(ok=True)


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
