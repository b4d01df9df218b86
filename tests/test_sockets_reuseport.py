"""SO_REUSEPORT on another process's listening socket through pidfd_getfd, and its errors.

A child process stands in for the app (the caller may duplicate its parent-owned child's fds:
same uid, and it is our descendant); the test process's own sockets cover the error cases.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import pytest

from zeropod.sockets.listeners import listeners
from zeropod.sockets.pidfd import (
    FdNotOpenError,
    NotASocketError,
    ProcessGoneError,
    SocketAccessError,
    duplicate_socket,
)
from zeropod.sockets.reuseport import get_reuseport, set_reuseport

# The stand-in app: listens on [::]:0 (dual stack), prints "fd port", then waits for stdin.
APP = """
import socket, sys
s = socket.socket(socket.AF_INET6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", 0)); s.listen()
print(s.fileno(), s.getsockname()[1], flush=True)
sys.stdin.read()
"""


@pytest.fixture
def app() -> Iterator[tuple[int, int, int]]:
    """A child process with a listening socket: (pid, fd, port)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", APP], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        fd, port = map(int, proc.stdout.readline().split())
        yield proc.pid, fd, port
    finally:
        proc.kill()
        proc.wait()


def _accessible(pid: int, fd: int) -> bool:
    try:
        with duplicate_socket(pid, fd):
            return True
    except SocketAccessError as err:
        if "not permitted" in str(err):
            return False
        raise


def test_set_reuseport_changes_the_apps_own_socket(app) -> None:
    pid, fd, port = app
    if not _accessible(pid, fd):
        pytest.skip("ptrace access to a child is restricted here (Yama ptrace_scope)")
    assert [(x.fd, x.port, x.v6only) for x in listeners(pid)] == [(fd, port, False)]
    assert get_reuseport(pid, fd) is False
    assert set_reuseport(pid, fd) is False
    assert set_reuseport(pid, fd) is True  # already set: the second cycle's case
    assert get_reuseport(pid, fd) is True
    # The proof that it is the app's socket: a second SO_REUSEPORT listener can now bind the
    # same address next to it (same uid), which EADDRINUSE would refuse otherwise.
    with socket.socket(socket.AF_INET6) as holder:
        holder.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("::", port))
        holder.listen()
        ports = sorted(x.port for x in listeners(os.getpid()) if x.port == port)
        assert ports == [port]


def test_without_reuseport_a_holder_cannot_bind(app) -> None:
    _, _, port = app
    with socket.socket(socket.AF_INET6) as holder:
        holder.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        with pytest.raises(OSError, match="Address already in use"):
            holder.bind(("::", port))


def test_the_duplicate_is_closed_afterwards() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        before = set(os.listdir("/proc/self/fd"))
        set_reuseport(os.getpid(), sock.fileno())
        assert set(os.listdir("/proc/self/fd")) == before
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1


def test_not_a_socket_is_named() -> None:
    with tempfile.TemporaryFile() as f:
        message = rf"pid {os.getpid()} fd {f.fileno()}: not a socket \(a regular file\)"
        with pytest.raises(NotASocketError, match=message):
            set_reuseport(os.getpid(), f.fileno())


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("udp", "not a TCP socket"),
        ("unix", "not a TCP socket"),
        ("unbound", "not listening"),
    ],
)
def test_only_listening_tcp_sockets(kind: str, message: str) -> None:
    sock = {
        "udp": lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM),
        "unix": lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM),
        "unbound": lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM),
    }[kind]()
    with sock, pytest.raises(NotASocketError, match=message):
        set_reuseport(os.getpid(), sock.fileno())
    assert sock.fileno() == -1 or sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 0


def test_a_closed_fd_is_named() -> None:
    # Well above any open fd (and above the pidfd that the call itself opens).
    fd = max(int(x) for x in os.listdir("/proc/self/fd")) + 100
    with pytest.raises(FdNotOpenError, match=rf"pid {os.getpid()} fd {fd}: no such open"):
        set_reuseport(os.getpid(), fd)


def test_a_reaped_process_is_named() -> None:
    child = subprocess.Popen(["true"])
    child.wait()
    with pytest.raises(ProcessGoneError, match=rf"pid {child.pid} fd 3: no such process"):
        set_reuseport(child.pid, 3)


def test_an_exited_but_unreaped_process_is_named() -> None:
    child = subprocess.Popen(["true"])
    # Wait for the exit without reaping: the pid is a zombie with no files.
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
    try:
        with pytest.raises(ProcessGoneError, match=rf"pid {child.pid} fd 0: .*exited"):
            set_reuseport(child.pid, 0)
    finally:
        child.wait()
