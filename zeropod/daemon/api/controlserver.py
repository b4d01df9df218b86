"""The asyncio unix-socket server of the control protocol.

It frames and validates requests and hands typed requests to a :class:`ControlHandler`;
what a request means is the handler's business (the daemon's). A connection may carry any
number of requests, one per line; an ``events`` request turns it into a stream that lasts
until the client disconnects or the server closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
from collections.abc import Callable
from typing import Any, Protocol

from zeropod.contract.protocol import (
    BUSY,
    MAX_LINE,
    PERMISSION,
    TOO_LARGE,
    ControlError,
    decode,
    encode,
    ok,
    respond,
    send_failure,
)
from zeropod.contract.requests import EventsRequest, Request, parse_request
from zeropod.sockets.peercred import peer_credentials, process_groups


class EventStream(Protocol):
    """A subscription to the daemon's state changes."""

    async def get(self) -> dict[str, Any]:
        """The next event; raises :class:`ControlError` (``overflow``) if the reader fell behind."""
        ...

    def close(self) -> None:
        """Stop receiving events."""
        ...


class ControlHandler(Protocol):
    """What the server needs from the daemon."""

    async def handle(self, request: Request) -> dict[str, Any]:
        """Answer a non-streaming request with the response body (without ``ok``).

        Raises :class:`ControlError` for a request that cannot be served.
        """
        ...

    def subscribe(self) -> EventStream:
        """Start a subscription for an ``events`` request."""
        ...


MAX_CONNECTIONS = 256
"""Open connections served at once; more are answered ``busy`` and closed (a client that
floods the socket cannot exhaust the daemon's fds)."""
READ_ONLY_OPS = ("status", "events")
"""What a member of the read-only group may ask; everything else needs root."""
IDLE_TIMEOUT = 30.0
"""Seconds a connection may wait before sending its next request line (event streams, which
only send at the start, are not affected)."""


class ControlServer:
    """Serves the control protocol on a unix socket at ``path``.

    ``log_error`` receives one line for each handler failure (answered as ``internal``).
    """

    def __init__(
        self,
        path: str,
        handler: ControlHandler,
        log_error: Callable[[str], None],
        *,
        mode: int = 0o660,
        sock: socket.socket | None = None,
        max_connections: int = MAX_CONNECTIONS,
        idle_timeout: float = IDLE_TIMEOUT,
        read_gid: int | None = None,
        peer: Callable[[socket.socket], tuple[int, int, int]] | None = None,
    ) -> None:
        self.path = path
        self._handler = handler
        self._log_error = log_error
        self._mode = mode
        self._sock = sock
        self.keep_file = sock is not None
        """Leave the socket file at close (its socket lives on, e.g. in systemd's fd store)."""
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._inode: int | None = None
        self._max_connections = max_connections
        self._idle_timeout = idle_timeout
        self._read_gid = read_gid
        """Members of this group may read (status, events); None: root only."""
        self._peer = peer or peer_credentials
        self._owner = os.geteuid()
        """The daemon's own user (root on a node): it and root may do anything."""

    async def start(self) -> None:
        """Listen on the socket; a stale socket file is replaced, a live one is an error.

        With ``sock`` (an inherited listening socket) it serves that one instead.
        """
        if self._sock is not None:
            self._server = await asyncio.start_unix_server(
                self._serve, sock=self._sock, limit=MAX_LINE
            )
            return
        _clear_stale_socket(self.path)
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        self._server = await asyncio.start_unix_server(self._serve, path=self.path, limit=MAX_LINE)
        if self._read_gid is not None:
            os.chown(self.path, -1, self._read_gid)  # the group's members may connect
        os.chmod(self.path, self._mode)
        self._inode = os.stat(self.path).st_ino

    def listening_fd(self) -> int:
        """The fd of the listening socket (to hand to systemd's fd store)."""
        assert self._server is not None and self._server.sockets
        return self._server.sockets[0].fileno()

    async def close(self) -> None:
        """Stop listening, end every open connection and remove the socket file."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        # End open connections (event streams never end on their own) before waiting for the
        # server: from Python 3.12 on, wait_closed() waits for every connection.
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if server is not None:
            await server.wait_closed()
        if self.keep_file:
            return
        with contextlib.suppress(FileNotFoundError):
            if os.stat(self.path).st_ino == self._inode:
                os.unlink(self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        busy = len(self._connections) >= self._max_connections
        self._connections.add(task)
        try:
            if busy:
                error = ControlError(BUSY, f"{self._max_connections} connections open; retry")
                await send_failure(writer, error)
                return
            read_only = self._read_only(writer)
            if read_only is None:
                error = ControlError(PERMISSION, "only root may use the zeropod daemon")
                await send_failure(writer, error)
                return
            await self._converse(reader, writer, read_only)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass  # the client went away, or said nothing for too long
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _read_only(self, writer: asyncio.StreamWriter) -> bool | None:
        """False: root or the daemon's own user, may do anything; True: a member of the
        read-only group; None: may do nothing (SO_PEERCRED, the peer's groups from /proc)."""
        sock = writer.get_extra_info("socket")
        try:
            pid, uid, gid = self._peer(sock)
        except OSError:
            return None
        if uid in (0, self._owner):
            return False
        if self._read_gid is not None and self._read_gid in {gid, *process_groups(pid)}:
            return True
        return None

    async def _converse(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, read_only: bool = False
    ) -> None:
        while True:
            try:
                async with asyncio.timeout(self._idle_timeout):
                    line = await reader.readline()
            except ValueError:
                error = ControlError(TOO_LARGE, f"request line longer than {MAX_LINE} bytes")
                await send_failure(writer, error)
                return
            if not line:
                return
            if not line.strip():
                continue
            try:
                request = parse_request(decode(line))
                if read_only and request.OP not in READ_ONLY_OPS:
                    raise ControlError(PERMISSION, f"op {request.OP!r} needs root")
            except ControlError as err:
                await send_failure(writer, err)
                continue
            if isinstance(request, EventsRequest):
                await self._stream_events(reader, writer)
                return
            writer.write(encode(await self._answer(request)))
            await writer.drain()

    async def _answer(self, request: Request) -> dict[str, Any]:
        return await respond(self._handler.handle(request), f"op {request.OP!r}", self._log_error)

    async def _stream_events(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        subscription = self._handler.subscribe()
        client_gone = asyncio.ensure_future(_wait_for_eof(reader))
        try:
            writer.write(encode(ok(stream="events")))
            await writer.drain()
            while True:
                next_event = asyncio.ensure_future(subscription.get())
                await asyncio.wait({next_event, client_gone}, return_when=asyncio.FIRST_COMPLETED)
                if client_gone.done():
                    next_event.cancel()
                    return
                try:
                    event = next_event.result()
                except ControlError as err:
                    await send_failure(writer, err)
                    return
                writer.write(encode(ok(event=event)))
                await writer.drain()
        finally:
            subscription.close()
            client_gone.cancel()


async def _wait_for_eof(reader: asyncio.StreamReader) -> None:
    """Return when the client closes its side (anything it sends meanwhile is ignored)."""
    while await reader.read(4096):
        pass


def _clear_stale_socket(path: str) -> None:
    """Remove a leftover socket nobody listens on; refuse to touch a live one or a non-socket."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise RuntimeError(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    except OSError as err:
        raise RuntimeError(f"cannot probe existing socket {path}: {err}") from err
    finally:
        probe.close()
    raise RuntimeError(f"another daemon already listens on {path}")
