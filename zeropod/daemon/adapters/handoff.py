"""The activated service's hand-off: its listening sockets and its connection to the daemon.

``zeropod@<instance>.service`` (``zeropod.activator``) connects to the daemon's activation
socket (``/run/zeropod/activator.sock``, next to the control socket) and sends one JSON line
``{"v": 1, "op": "activated", "unit": "zeropod@<instance>.service"}`` with the listening
sockets attached (SCM_RIGHTS), then waits until the daemon closes the connection: systemd
does not re-trigger a socket whose service runs (Accept=no, DESIGN.md "systemd here").

A second socket rather than the control socket: the control server reads through asyncio
streams, which drop ancillary data; this one reads the single message with ``recvmsg`` and
has nothing else to do. :class:`ActivationServer` accepts connections and passes each
:class:`HeldSockets` to a callback; the pod's wake closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import Awaitable, Callable

from zeropod.contract.protocol import socket_path
from zeropod.sockets.peercred import peer_credentials

ACTIVATION_SOCKET = "activator.sock"
MAX_FDS = 64
RECEIVE_TIMEOUT = 5.0


def activation_path(control_path: str | None = None) -> str:
    """The activation socket: ``activator.sock`` next to the control socket."""
    return os.path.join(os.path.dirname(control_path or socket_path()), ACTIVATION_SOCKET)


class HeldSockets:
    """Listening sockets received from the activated service, and its connection.

    Waiting on them registers their fds with the event loop; :meth:`close` unregisters every
    fd before closing it. (Closing an fd the loop still watches is a trap: the number is
    reused by the next socket, say a control connection, and the stale registration then
    swallows or removes that socket's reader, so the connection is never served.)
    """

    def __init__(self, unit: str, sockets: list[socket.socket], connection: socket.socket) -> None:
        self.unit = unit
        self.sockets = sockets
        self.connection = connection
        self.closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watched: dict[int, asyncio.Future[None]] = {}
        for sock in (*sockets, connection):
            sock.setblocking(False)

    def close(self) -> None:
        """Close the daemon's copies and end the activator's connection (idempotent).

        Pending waits (:meth:`readable`, :meth:`activator_gone`) return.
        """
        if self.closed:
            return
        self.closed = True
        for fd, waiter in list(self._watched.items()):
            self._unwatch(fd)
            if not waiter.done():
                waiter.set_result(None)
        for sock in self.sockets:
            sock.close()
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
        self.connection.close()

    def drain(self) -> list[socket.socket]:
        """Accept every connection waiting in the queues now (never blocks)."""
        accepted: list[socket.socket] = []
        for sock in self.sockets:
            while not self.closed:
                try:
                    conn, _ = sock.accept()
                except OSError:  # BlockingIOError: the queue is empty
                    break
                accepted.append(conn)
        return accepted

    def _watch(self, fd: int, waiter: asyncio.Future[None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(fd, lambda: waiter.done() or waiter.set_result(None))
        self._watched[fd] = waiter

    def _unwatch(self, fd: int) -> None:
        if self._watched.pop(fd, None) is not None and self._loop is not None:
            self._loop.remove_reader(fd)

    async def _wait_readable(self, socks: list[socket.socket]) -> socket.socket | None:
        """The first of ``socks`` that is readable; None once closed."""
        if self.closed:
            return None
        loop = asyncio.get_running_loop()
        waiters = {sock.fileno(): loop.create_future() for sock in socks}
        for fd, waiter in waiters.items():
            self._watch(fd, waiter)
        try:
            await asyncio.wait(waiters.values(), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for fd in waiters:
                self._unwatch(fd)
        if self.closed:
            return None
        return next(s for s in socks if waiters[s.fileno()].done())

    async def readable(self) -> socket.socket | None:
        """Wait until one of the sockets has a connection queued; return that socket, or
        None when the hand-off was closed meanwhile."""
        return await self._wait_readable(self.sockets)

    async def activator_gone(self) -> None:
        """Return when the activated service closes its side (it died or was stopped), or
        the hand-off is closed."""
        while not self.closed:
            if await self._wait_readable([self.connection]) is None:
                return
            try:
                if not self.connection.recv(64):
                    return
            except BlockingIOError:
                continue
            except OSError:
                return


Callback = Callable[[HeldSockets], Awaitable[None]]


class ActivationServer:
    """Accepts activated services on ``path`` and hands each :class:`HeldSockets` to
    ``on_activation``; ``log_error`` gets one line per malformed hand-off."""

    def __init__(
        self,
        path: str,
        on_activation: Callback,
        log_error: Callable[[str], None],
        sock: socket.socket | None = None,
        check_peer: Callable[[socket.socket, str], None] | None = None,
    ) -> None:
        self.path = path
        self._check_peer = check_peer or check_activated_service
        """Raises ValueError unless the peer may hand over the sockets of the unit it names."""
        self.keep_file = sock is not None
        """Leave the socket file at close (the socket lives on in systemd's fd store)."""
        self._on_activation = on_activation
        self._log_error = log_error
        self._listener: socket.socket | None = sock
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Listen (a leftover socket file is replaced: only the daemon serves it), or serve
        the inherited socket given at construction."""
        if self._listener is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            listener.bind(self.path)
            os.chmod(self.path, 0o600)
            listener.listen(64)
            self._listener = listener
        self._listener.setblocking(False)
        self._task = asyncio.create_task(self._accept_loop())

    def listening_fd(self) -> int:
        """The fd of the listening socket (to hand to systemd's fd store)."""
        assert self._listener is not None
        return self._listener.fileno()

    async def close(self) -> None:
        """Stop accepting and remove the socket file."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._tasks):
            task.cancel()
        await asyncio.sleep(0)  # let the cancelled accept unregister its fd before the close
        if self._listener is not None:
            self._listener.close()
            if not self.keep_file:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._listener is not None
        while True:
            conn, _ = await loop.sock_accept(self._listener)
            conn.setblocking(False)
            task = asyncio.create_task(self._receive(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _receive(self, conn: socket.socket) -> None:
        held: HeldSockets | None = None
        try:
            async with asyncio.timeout(RECEIVE_TIMEOUT):
                data, fds = await _recv_fds(conn)
            held = _parse(data, fds, conn)
            self._check_peer(conn, held.unit)
        except (TimeoutError, OSError, ValueError) as err:
            if held is not None:
                held.close()
            self._log_error(f"activation hand-off refused: {err}")
            conn.close()
            return
        await self._on_activation(held)


async def _recv_fds(conn: socket.socket) -> tuple[bytes, list[int]]:
    """One message and the fds attached to it, without blocking the loop."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            data, fds, _flags, _addr = socket.recv_fds(conn, 65536, MAX_FDS)
            return data, fds
        except BlockingIOError:
            await _readable(loop, conn)


async def _readable(loop: asyncio.AbstractEventLoop, conn: socket.socket) -> None:
    ready: asyncio.Future[None] = loop.create_future()
    loop.add_reader(conn.fileno(), lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        loop.remove_reader(conn.fileno())


def check_activated_service(conn: socket.socket, unit: str) -> None:
    """Only a root process of the unit it names may hand sockets over: systemd's activated
    ``zeropod@<pod>.service``, started by a socket unit of the daemon's. Raises ValueError."""
    pid, uid, _ = peer_credentials(conn)
    if uid != 0:
        raise ValueError(f"the peer (pid {pid}) runs as uid {uid}, not root")
    runs_in = unit_of(pid)
    if runs_in != unit:
        raise ValueError(f"the peer (pid {pid}) runs in {runs_in or 'no unit'}, not in {unit}")


def unit_of(pid: int) -> str | None:
    """The systemd service PID runs in, from its cgroup path (v1 name=systemd or v2)."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        hierarchy, _, path = line.partition(":")[2].partition(":")
        if hierarchy in ("", "name=systemd") and path.endswith(".service"):
            return path.rsplit("/", 1)[-1]
    return None


def _parse(data: bytes, fds: list[int], conn: socket.socket) -> HeldSockets:
    sockets: list[socket.socket] = []
    try:
        for fd in fds:
            sockets.append(socket.socket(fileno=fd))  # OSError (ENOTSOCK) for another fd
    except OSError:
        for sock in sockets:
            sock.close()
        for fd in fds[len(sockets) :]:
            os.close(fd)
        raise
    try:
        message = json.loads(data.partition(b"\n")[0])
        unit = message.get("unit") if isinstance(message, dict) else None
        if not isinstance(message, dict) or message.get("op") != "activated":
            raise ValueError(f"expected an 'activated' message, got {data[:80]!r}")
        if not isinstance(unit, str) or not unit.endswith(".service"):
            raise ValueError(f"field 'unit' must name a service, got {unit!r}")
        if not sockets:
            raise ValueError(f"{unit} sent no sockets")
    except ValueError:
        for sock in sockets:
            sock.close()
        raise
    for sock in sockets:
        sock.setblocking(False)
    return HeldSockets(unit, sockets, conn)
