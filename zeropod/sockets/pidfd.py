"""Duplicate another process's socket: pidfd_open + pidfd_getfd, with errors that name it.

Python 3.11 has `os.pidfd_open` but no `pidfd_getfd` (syscall 438 on every architecture
that has the unified syscall table, x86_64 and aarch64 included), so that call goes through
ctypes. The duplicate refers to the *same* open socket as the target's fd: options set on it
change the target's socket. Needs ptrace access to the target (root, or the caller itself).

    with duplicate_socket(pid, fd) as sock:
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import stat
from collections.abc import Iterator
from contextlib import contextmanager

SYS_PIDFD_GETFD = 438

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


class SocketAccessError(OSError):
    """A socket of another process could not be reached; names the pid and fd."""

    def __init__(self, pid: int, fd: int | None, reason: str, err: int = 0) -> None:
        where = f"pid {pid}" if fd is None else f"pid {pid} fd {fd}"
        super().__init__(err, f"{where}: {reason}")
        self.pid = pid
        self.fd = fd
        self.reason = reason


class ProcessGoneError(SocketAccessError):
    """The process does not exist (any more), or has exited and is a zombie."""


class FdNotOpenError(SocketAccessError):
    """The process has no such file descriptor (any more)."""


class NotASocketError(SocketAccessError):
    """The file descriptor is open but is not a socket."""


def pidfd_getfd(pidfd: int, targetfd: int) -> int:
    """A new close-on-exec fd of this process for TARGETFD of the process behind PIDFD.

    Raises OSError with the syscall's errno (ESRCH: exited, EBADF: no such fd, EPERM: no
    ptrace access).
    """
    fd = _syscall(SYS_PIDFD_GETFD, ctypes.c_int(pidfd), ctypes.c_int(targetfd), ctypes.c_uint(0))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"pidfd_getfd: {os.strerror(err)}")
    return int(fd)


def duplicate_fd(pid: int, fd: int) -> int:
    """A duplicate (in this process) of file descriptor FD of process PID; the caller closes it.

    Raises ProcessGoneError, FdNotOpenError, or SocketAccessError (e.g. no permission).
    """
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError as err:
        raise ProcessGoneError(pid, fd, "no such process", errno.ESRCH) from err
    except OSError as err:
        raise SocketAccessError(pid, fd, f"pidfd_open failed: {err.strerror}", err.errno) from err
    try:
        return pidfd_getfd(pidfd, fd)
    except OSError as err:
        if err.errno == errno.ESRCH:
            raise ProcessGoneError(pid, fd, "the process has exited", err.errno) from err
        if err.errno == errno.EBADF:
            # A zombie has no file table left either: say which of the two it is.
            if _is_zombie(pid):
                raise ProcessGoneError(pid, fd, "the process has exited", errno.ESRCH) from err
            raise FdNotOpenError(pid, fd, "no such open file descriptor", err.errno) from err
        if err.errno == errno.EPERM:
            raise SocketAccessError(
                pid, fd, "not permitted (pidfd_getfd needs ptrace access: run as root)", err.errno
            ) from err
        raise SocketAccessError(pid, fd, f"pidfd_getfd failed: {err.strerror}", err.errno) from err
    finally:
        os.close(pidfd)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return True
    # The state follows the last ")" (the command name may contain parentheses).
    return data[data.rfind(b")") + 2 : data.rfind(b")") + 3] in (b"Z", b"X")


@contextmanager
def duplicate_socket(pid: int, fd: int) -> Iterator[socket.socket]:
    """A socket object on a duplicate of PID's socket FD, closed (only the duplicate) on exit.

    Raises what `duplicate_fd` raises, and NotASocketError when FD is not a socket.
    """
    dup = duplicate_fd(pid, fd)
    try:
        mode = os.fstat(dup).st_mode
        if not stat.S_ISSOCK(mode):
            raise NotASocketError(pid, fd, f"not a socket ({_kind(mode)})", errno.ENOTSOCK)
        sock = socket.socket(fileno=dup)
    except BaseException:
        os.close(dup)
        raise
    with sock:
        yield sock


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a pipe"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return f"file mode {mode:o}"
