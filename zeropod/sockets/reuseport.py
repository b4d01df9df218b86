"""Set SO_REUSEPORT on another process's listening socket (step 2 of the gapless scale-down).

The option is set through a duplicate of the app's fd (see `pidfd`), which is the same socket:
afterwards a holder bound with SO_REUSEPORT to the same address (same family, address and
v6only, same owner uid) joins the app's reuseport group, and CRIU records so_reuseport=true so
the restored socket joins the holder's group again. The duplicate is closed at once, so the
app's socket keeps exactly the references it had.
"""

from __future__ import annotations

import errno
import socket

from zeropod.sockets.pidfd import NotASocketError, SocketAccessError, duplicate_socket


def set_reuseport(pid: int, fd: int) -> bool:
    """Set SO_REUSEPORT=1 on listening TCP socket FD of process PID; return the old value.

    Blocks only for a few syscalls. Raises ProcessGoneError, FdNotOpenError, NotASocketError
    (also for a socket that is not a listening TCP socket), or SocketAccessError.
    """
    with duplicate_socket(pid, fd) as sock:
        _require_tcp_listener(pid, fd, sock)
        try:
            before = bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT))
            if not before:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        except OSError as err:
            raise SocketAccessError(
                pid, fd, f"setting SO_REUSEPORT failed: {err.strerror}", err.errno or 0
            ) from err
        return before


def get_reuseport(pid: int, fd: int) -> bool:
    """Whether socket FD of process PID has SO_REUSEPORT set (errors as for set_reuseport)."""
    with duplicate_socket(pid, fd) as sock:
        return bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT))


def _require_tcp_listener(pid: int, fd: int, sock: socket.socket) -> None:
    family = sock.family
    kind = sock.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE)
    listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    if family not in (socket.AF_INET, socket.AF_INET6) or kind != socket.SOCK_STREAM:
        raise NotASocketError(
            pid, fd, f"not a TCP socket ({family!s}, type {kind})", errno.ENOTSOCK
        )
    if not listening:
        raise NotASocketError(pid, fd, "a TCP socket that is not listening", errno.EINVAL)
