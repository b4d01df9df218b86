"""The daemon's own copies of the listening sockets systemd holds for a sleeping pod.

While a pod sleeps, its transient socket unit ``zeropod@<pod>.socket`` listens in the pod's
netns. Right after the unit starts, the daemon takes duplicates of systemd's sockets
(``pidfd_getfd`` on the service manager, found by the sockets' inodes, which sock_diag in the
pod netns gives) and watches them itself: the first connection wakes the pod without waiting
for a process to start. The socket unit's service (``zeropod@.service``) is a oneshot that
stays active once triggered, so systemd neither re-triggers nor flushes the socket meanwhile.

At the wake the daemon hands the queue over with ``shutdown()`` on its copy
(:meth:`HeldSockets.hand_over`), then stops the unit.

The copies also carry the pod's SYN record (:mod:`zeropod.sockets.synlog`), attached when
they are taken: a wake's probe check reads who knocked from it instead of walking the
kernel's TCP hash. Where the kernel refuses it (no bpf(2) here), ``syn_log`` is None and
every check uses sock_diag.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
from collections.abc import Sequence
from typing import Any

from zeropod.daemon.model.pod import HeldPort
from zeropod.sockets.synlog import SynLog

SERVICE_MANAGER_PID = 1
"""systemd, which holds the socket units' sockets (the daemon runs in its pid namespace)."""


class CopiesError(OSError):
    """The daemon could not take its copies of the held sockets (names what is missing)."""


def accept_nowait(sock: socket.socket) -> tuple[socket.socket, Any] | None:
    """One queued connection of a held socket, or None when none is queued; never blocks.

    A copy shares its open file with systemd's, so O_NONBLOCK is systemd's to change too: it
    clears it when it triggers the service, unless the service says ``NonBlocking=yes``
    (zeropod@.service does; a drop-in could undo it). So the flag is set again and the queue
    looked at before every accept: a blocking accept would stop the daemon's event loop.
    """
    sock.setblocking(False)
    ready, _, _ = select.select([sock], [], [], 0)
    if not ready:
        return None
    try:
        return sock.accept()
    except (BlockingIOError, InterruptedError):
        return None


class HeldSockets:
    """The daemon's copies of a sleeping pod's held listening sockets.

    Waiting on them registers their fds with the event loop; :meth:`close` unregisters every
    fd before closing it. (Closing an fd the loop still watches is a trap: the number is
    reused by the next socket, say a control connection, and the stale registration then
    swallows or removes that socket's reader, so the connection is never served.)
    """

    def __init__(self, sockets: list[socket.socket], syn_log: SynLog | None = None) -> None:
        self.sockets = sockets
        self.syn_log = syn_log
        """The SYNs these sockets received, recorded by the kernel (None: not available)."""
        self.closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watched: dict[int, asyncio.Future[None]] = {}
        for sock in sockets:
            sock.setblocking(False)

    def hand_over(self) -> None:
        """Give the queue to the app and close: ``shutdown()`` stops the held socket listening
        for every fd of it (systemd's too), and with ``tcp_migrate_req=1`` the kernel moves
        its accept queue to the app's listener in the same reuseport group (none there: the
        queued clients are reset, as a close would). Then :meth:`close`."""
        if not self.closed:
            for sock in self.sockets:
                with contextlib.suppress(OSError):  # not listening any more: nothing to move
                    sock.shutdown(socket.SHUT_RD)
        self.close()

    def close(self) -> None:
        """Close the daemon's copies (idempotent); a pending :meth:`readable` returns None.
        The socket itself lives on in systemd, still listening."""
        if self.closed:
            return
        self.closed = True
        for fd, waiter in list(self._watched.items()):
            self._unwatch(fd)
            if not waiter.done():
                waiter.set_result(None)
        for sock in self.sockets:
            sock.close()
        if self.syn_log is not None:
            self.syn_log.close()

    def _watch(self, fd: int, waiter: asyncio.Future[None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(fd, lambda: waiter.done() or waiter.set_result(None))
        self._watched[fd] = waiter

    def _unwatch(self, fd: int) -> None:
        if self._watched.pop(fd, None) is not None and self._loop is not None:
            self._loop.remove_reader(fd)

    async def readable(self) -> socket.socket | None:
        """Wait until one of the sockets has a connection queued; return that socket, or
        None once closed."""
        if self.closed:
            return None
        loop = asyncio.get_running_loop()
        waiters = {sock.fileno(): loop.create_future() for sock in self.sockets}
        for fd, waiter in waiters.items():
            self._watch(fd, waiter)
        try:
            await asyncio.wait(waiters.values(), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for fd in waiters:
                self._unwatch(fd)
        if self.closed:
            return None
        return next(s for s in self.sockets if waiters[s.fileno()].done())


def take_copies(
    netns: str, ports: Sequence[HeldPort], pid: int = SERVICE_MANAGER_PID
) -> HeldSockets:
    """Duplicates of the sockets ``pid`` (systemd) listens on for ``ports`` in ``netns``.

    Raises :class:`CopiesError` unless there is one copy per held address: a pod whose
    sockets the daemon cannot watch would never wake, so the sleep must not go on.
    """
    from zeropod.activity.podsockets import PodSockets
    from zeropod.activity.sockdiag import ListeningSocket, TcpState
    from zeropod.sockets.listeners import sockets_by_inode
    from zeropod.sockets.pidfd import SocketAccessError

    wanted = {p.port for p in ports}
    with PodSockets(netns) as view:
        inodes = {
            item.inode
            for item in view.dump(1 << TcpState.LISTEN.value)
            if isinstance(item, ListeningSocket) and item.local_port in wanted
        }
    try:
        copies = sockets_by_inode(pid, inodes)
    except SocketAccessError as err:
        raise CopiesError(err.errno, f"cannot copy the held sockets from {err}") from err
    if len(copies) != len(ports):
        for sock in copies:
            sock.close()
        held = ", ".join(p.listen_stream for p in ports)
        raise CopiesError(
            0, f"pid {pid} listens on {len(copies)} of the {len(ports)} held addresses ({held})"
        )
    return HeldSockets(copies, record_syns(copies))


def record_syns(sockets: Sequence[socket.socket]) -> SynLog | None:
    """A SYN record attached to each of ``sockets``, or None where the kernel refuses one
    (the daemon said why at its start: :func:`zeropod.sockets.synlog.unavailable`)."""
    try:
        syn_log = SynLog()
    except OSError:
        return None
    try:
        for sock in sockets:
            syn_log.attach(sock)
    except OSError:
        syn_log.close()
        return None
    return syn_log
