"""Finding a process's listening TCP sockets: /proc/net/tcp{,6} parsing and fd matching."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from zeropod.sockets.listeners import (
    Listener,
    TcpEntry,
    listeners,
    match_listeners,
    parse_proc_net_tcp,
    socket_fds,
)
from zeropod.sockets.pidfd import ProcessGoneError

pytestmark = pytest.mark.skipif(
    sys.byteorder != "little", reason="the /proc samples are from a little-endian machine"
)

V4 = socket.AF_INET
V6 = socket.AF_INET6
TCP_HEADER = (
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
    "timeout inode"
)
TCP6_HEADER = (
    "  sl  local_address                         remote_address                        st "
    "tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode"
)


def tcp_line(local: str, remote: str, state: str, uid: int = 0, inode: int = 1000) -> str:
    return (
        f"   0: {local} {remote} {state} 00000000:00000000 00:00000000 00000000 "
        f"{uid:>5}        0 {inode} 1 00000000545ba811 100 0 0 10 0"
    )


@pytest.mark.parametrize(
    ("family", "local", "address", "port"),
    [
        (V4, "00000000:1F90", "0.0.0.0", 8080),
        (V4, "0100007F:0050", "127.0.0.1", 80),
        (V4, "0558000A:01BB", "10.0.88.5", 443),
        (V6, "00000000000000000000000000000000:1F90", "::", 8080),
        (V6, "00000000000000000000000001000000:1F90", "::1", 8080),
        (V6, "0000000000000000FFFF00000100007F:0016", "::ffff:127.0.0.1", 22),
        (V6, "000000FD000000000000000005000000:1F90", "fd00::5", 8080),
    ],
)
def test_listen_lines_decode_address_and_port(family, local, address, port) -> None:
    remote = "0" * (8 if family == V4 else 32) + ":0000"
    header = TCP_HEADER if family == V4 else TCP6_HEADER
    text = f"{header}\n{tcp_line(local, remote, '0A', uid=1000, inode=4242)}\n"
    assert parse_proc_net_tcp(text, family) == [TcpEntry(family, address, port, 1000, 4242)]


def test_only_listen_state_counts() -> None:
    text = "\n".join(
        [
            TCP_HEADER,
            tcp_line("00000000:1F90", "00000000:0000", "0A", inode=1),
            tcp_line("0100007F:DF6E", "0100007F:ADB9", "01", inode=2),  # established
            tcp_line("0100007F:DF6F", "0100007F:ADB9", "06", inode=0),  # time-wait
            "",
        ]
    )
    assert [e.inode for e in parse_proc_net_tcp(text, V4)] == [1]


@pytest.mark.parametrize(
    ("family", "line"),
    [
        (V4, "   0: 00000000:1F90"),  # cut short
        (V4, tcp_line("0000000:1F90", "00000000:0000", "0A")),  # 7 hex digits
        (V6, tcp_line("00000000:1F90", "00000000:0000", "0A")),  # an IPv4 line in tcp6
        (V4, tcp_line("0000000G:1F90", "00000000:0000", "0A")),  # not hex
    ],
)
def test_malformed_lines_are_named(family, line) -> None:
    with pytest.raises(ValueError, match=r"line 2 of /proc/net/tcp"):
        parse_proc_net_tcp(f"{TCP_HEADER}\n{line}\n", family)


def test_match_keeps_the_process_sockets_by_fd() -> None:
    entries = [
        TcpEntry(V6, "::", 8080, 0, 11),
        TcpEntry(V4, "127.0.0.1", 9090, 0, 12),
        TcpEntry(V4, "0.0.0.0", 22, 0, 99),  # another process's listener in the netns
    ]
    assert match_listeners(entries, {12: 3, 11: 7, 50: 4}) == [
        (entries[1], 3),
        (entries[0], 7),
    ]


def _listen(family: socket.AddressFamily, address: str, v6only: bool | None = None):
    sock = socket.socket(family, socket.SOCK_STREAM)
    if v6only is not None:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
    sock.bind((address, 0))
    sock.listen()
    return sock


def test_listeners_of_this_process() -> None:
    with (
        _listen(V4, "127.0.0.1") as a,
        _listen(V6, "::", v6only=False) as b,
        _listen(V6, "::1", v6only=True) as c,
        socket.socket(V4, socket.SOCK_STREAM) as unbound,
        socket.socket(V4, socket.SOCK_DGRAM) as udp,
    ):
        udp.bind(("127.0.0.1", 0))
        mine = {x.fd: x for x in listeners(os.getpid())}
        uid = os.geteuid()
        for sock, family, address, v6only in (
            (a, V4, "127.0.0.1", False),
            (b, V6, "::", False),
            (c, V6, "::1", True),
        ):
            port = sock.getsockname()[1]
            inode = os.fstat(sock.fileno()).st_ino
            assert mine[sock.fileno()] == Listener(
                family, address, port, inode, sock.fileno(), v6only, uid, os.getpid()
            )
        assert unbound.fileno() not in mine and udp.fileno() not in mine
        port = b.getsockname()[1]
        assert mine[b.fileno()].listen_address == f"[::]:{port}"
        assert mine[a.fileno()].listen_address == f"127.0.0.1:{a.getsockname()[1]}"


def test_a_socket_on_two_fds_is_listed_once_by_its_lowest_fd() -> None:
    with _listen(V4, "127.0.0.1") as sock:
        dup = os.dup(sock.fileno())
        try:
            fds = socket_fds(os.getpid())
            inode = os.fstat(sock.fileno()).st_ino
            assert fds[inode] == min(sock.fileno(), dup)
            assert [x.fd for x in listeners(os.getpid()) if x.inode == inode] == [fds[inode]]
        finally:
            os.close(dup)


def test_a_gone_process_is_named() -> None:
    child = subprocess.Popen(["true"])
    child.wait()
    with pytest.raises(ProcessGoneError, match=rf"pid {child.pid}\b"):
        listeners(child.pid)


# A wrapper that forks the server: the listener is the grandchild's, not the wrapper's.
WRAPPER = """
import os, socket, sys, time
if os.fork() == 0:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
    print(os.getpid(), s.fileno(), s.getsockname()[1], flush=True)
    time.sleep(60)
else:
    sys.stdin.read()
"""


def test_tree_listeners_find_a_child_processes_listener() -> None:
    from zeropod.sockets.listeners import process_tree, tree_listeners

    proc = subprocess.Popen(
        [sys.executable, "-c", WRAPPER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        child, fd, port = map(int, proc.stdout.readline().split())
        assert process_tree(proc.pid) == [proc.pid, child]
        assert listeners(proc.pid) == []
        [found] = tree_listeners(proc.pid)
        assert (found.pid, found.fd, found.port) == (child, fd, port)
    finally:
        proc.kill()
        proc.wait()
        os.kill(child, 9)


def test_process_tree_of_a_gone_process() -> None:
    from zeropod.sockets.listeners import process_tree

    proc = subprocess.Popen(["true"])
    proc.wait()
    with pytest.raises(ProcessGoneError):
        process_tree(proc.pid)
