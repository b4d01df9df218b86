"""Learning that a sleeping pod's shim ended without asking it: one pidfd per interposer.

While a pod sleeps nothing of it runs but its shims, and the daemon must still learn when
one ends (containerd killed it with the pod, it crashed): the container's image, socket unit
and held ports must not outlive it. Connecting to every sleeping pod's shim every 10 s cost
CPU per sleeping pod. Instead the daemon finds the process serving each shim's control
socket once (``SO_PEERCRED`` of one connection: the listener's pid), opens a pidfd for it,
and the event loop waits on that fd, which becomes readable when the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Iterable

from zeropod.sockets.peercred import peer_credentials


def listener_pidfd(path: str) -> int | None:
    """A pidfd of the process listening on the unix socket PATH; None when nothing does."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK) as probe:
        try:
            probe.connect(path)
        except BlockingIOError:
            pass  # backlog full: still connected far enough to know the listener
        except OSError:
            return None
        pid, _, _ = peer_credentials(probe)
    if pid <= 0:
        return None
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return None


class ShimExits:
    """pidfds of the shims the daemon waits on, by control socket path (owned by the loop)."""

    def __init__(self) -> None:
        self._pidfds: dict[str, int] = {}

    def _pidfd(self, path: str) -> int | None:
        fd = self._pidfds.get(path)
        if fd is None:
            fd = listener_pidfd(path)
            if fd is not None:
                self._pidfds[path] = fd
        return fd

    def watch(self, paths: Iterable[str]) -> list[str]:
        """Open pidfds for PATHS' shims; the paths whose shim could not be found (gone, or
        not listening now: the caller checks those the old way)."""
        return [path for path in paths if path and self._pidfd(path) is None]

    async def wait_any(self, paths: Iterable[str]) -> str:
        """Return the first of PATHS whose watched shim ended; wait forever when none of
        them is watched (the caller cancels this on its other events)."""
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[str] = loop.create_future()
        watched: list[int] = []
        try:
            for path in dict.fromkeys(paths):
                fd = self._pidfds.get(path)
                if fd is not None:
                    loop.add_reader(fd, _resolve, ended, path)
                    watched.append(fd)
            gone = await ended
        finally:
            for fd in watched:
                loop.remove_reader(fd)
        self.forget([gone])
        return gone

    def forget(self, paths: Iterable[str]) -> None:
        """Close the pidfds of PATHS (their shim ended, or their pod is gone)."""
        for path in paths:
            fd = self._pidfds.pop(path, None)
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def close(self) -> None:
        self.forget(list(self._pidfds))


def _resolve(ended: asyncio.Future[str], path: str) -> None:
    if not ended.done():
        ended.set_result(path)
