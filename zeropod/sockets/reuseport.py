"""Set SO_REUSEPORT on another process's listening socket (step 2 of the gapless scale-down).

The option is set through a duplicate of the app's fd (see `pidfd`), which is the same socket:
afterwards a holder bound with SO_REUSEPORT to the same address (same family, address and
v6only, same owner uid) joins the app's reuseport group, and CRIU records so_reuseport=true so
the restored socket joins the holder's group again. The duplicate is closed at once, so the
app's socket keeps exactly the references it had.
"""

from __future__ import annotations

import errno
import os
import socket

from zeropod.sockets.pidfd import NotASocketError, SocketAccessError, duplicate_socket


def set_reuseport(pid: int, fd: int) -> bool:
    """Set SO_REUSEPORT=1 on listening TCP socket FD of process PID; return the old value.

    Blocks only for a few syscalls. Raises ProcessGoneError, FdNotOpenError, NotASocketError
    (also for a socket that is not a listening TCP socket), or SocketAccessError.
    """
    with duplicate_socket(pid, fd) as sock:
        _require_tcp_listener(pid, fd, sock)
        return _enable_reuseport(pid, fd, sock)


def share_with_root_holder(pid: int, fd: int) -> int:
    """Prepare listening socket FD of PID to share its port with a root-owned holder.

    Sets SO_REUSEPORT (as :func:`set_reuseport`) and, when the socket belongs to another uid,
    makes root its owner with fchown(2) on a duplicate. The kernel admits a socket into a
    reuseport group (and migrates queued connections between its members) only when the
    owners' uids match; systemd creates the holder as root, and CRIU re-creates a restored
    listener as root anyway. The app keeps accepting on its socket whatever its owner
    (DESIGN.md, "The hand-off", measured). Returns the uid that owned the socket before.

    Raises as :func:`set_reuseport`, and SocketAccessError when the owner cannot change.
    """
    with duplicate_socket(pid, fd) as sock:
        _require_tcp_listener(pid, fd, sock)
        owner = os.fstat(sock.fileno()).st_uid
        _enable_reuseport(pid, fd, sock)
        if owner != 0:
            try:
                os.fchown(sock.fileno(), 0, -1)
            except OSError as err:
                raise SocketAccessError(
                    pid,
                    fd,
                    f"making root the owner (was uid {owner}) failed: {err.strerror}",
                    err.errno or 0,
                ) from err
        return owner


def _enable_reuseport(pid: int, fd: int, sock: socket.socket) -> bool:
    """SO_REUSEPORT=1 on SOCK (a duplicate of FD of PID); returns the value it had."""
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
