"""The listening TCP sockets of a process, found through /proc.

/proc/PID/net/tcp and tcp6 list every TCP socket of PID's network namespace; the ones in state
0A (LISTEN) whose inode is one of PID's fds (`socket:[INODE]` in /proc/PID/fd) are the
process's listeners. v6only is not in /proc: it is read with getsockopt(IPV6_V6ONLY) on a
duplicate of the socket (`pidfd`). A holder must match family, address, port and v6only
exactly to share the app's reuseport group (DESIGN.md, "The hand-off").

    for lst in listeners(pid):
        print(lst.listen_address, lst.v6only)   # "[::]:8080" False
"""

from __future__ import annotations

import os
import re
import socket
import struct
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from zeropod.sockets.pidfd import (
    FdNotOpenError,
    ProcessGoneError,
    SocketAccessError,
    duplicate_fd,
    duplicate_socket,
)

TCP_LISTEN = 0x0A
_SOCKET_LINK = re.compile(r"^socket:\[(\d+)\]$")


@dataclass(frozen=True)
class TcpEntry:
    """One LISTEN line of /proc/net/tcp or tcp6."""

    family: socket.AddressFamily
    address: str
    port: int
    uid: int
    inode: int


@dataclass(frozen=True)
class Listener:
    """A listening TCP socket of a process: where it listens and which fd of the process it is.

    `address` is the compressed text form ("0.0.0.0", "::", "10.88.0.5"); `uid` owns the
    socket (a reuseport group only admits sockets of one uid); `v6only` is False for IPv4.
    """

    family: socket.AddressFamily
    address: str
    port: int
    inode: int
    fd: int
    v6only: bool
    uid: int = 0
    pid: int = 0
    """The process whose ``fd`` this is (in a process tree, the first one holding it)."""

    @property
    def listen_address(self) -> str:
        """systemd's ListenStream= form: "0.0.0.0:80", "[::]:80"."""
        if self.family == socket.AF_INET6:
            return f"[{self.address}]:{self.port}"
        return f"{self.address}:{self.port}"


def _decode_address(hex_addr: str, family: socket.AddressFamily) -> str:
    """The text form of /proc/net/tcp's hex address: 32-bit words in host byte order."""
    raw = bytes.fromhex(hex_addr)
    words = struct.unpack(f">{len(raw) // 4}I", raw)
    packed = struct.pack(f"={len(words)}I", *words)
    return socket.inet_ntop(family, packed)  # libc's form, as ss prints it


def parse_proc_net_tcp(text: str, family: socket.AddressFamily) -> list[TcpEntry]:
    """The LISTEN entries of the contents of /proc/net/tcp (AF_INET) or tcp6 (AF_INET6).

    Raises ValueError naming the line when a line does not have the kernel's layout.
    """
    want = 8 if family == socket.AF_INET else 32
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0] == "sl":
            continue
        try:
            addr, port = fields[1].split(":")
            state = int(fields[3], 16)
            if state != TCP_LISTEN:
                continue
            if len(addr) != want:
                raise ValueError(f"address {addr!r} is not {want} hex digits")
            entries.append(
                TcpEntry(
                    family=family,
                    address=_decode_address(addr, family),
                    port=int(port, 16),
                    uid=int(fields[7]),
                    inode=int(fields[9]),
                )
            )
        except (IndexError, ValueError) as err:
            raise ValueError(
                f"line {number} of /proc/net/tcp{'6' * (want == 32)}: {line!r}"
            ) from err
    return entries


def socket_fds(pid: int) -> dict[int, int]:
    """Socket inode -> lowest fd of PID holding it, from /proc/PID/fd.

    Raises ProcessGoneError when the process is gone; fds closed while listing are skipped.
    """
    fd_dir = f"/proc/{pid}/fd"
    try:
        names = os.listdir(fd_dir)
    except FileNotFoundError as err:
        raise ProcessGoneError(pid, None, "no such process") from err
    except OSError as err:
        raise SocketAccessError(pid, None, f"cannot list {fd_dir}: {err.strerror}") from err
    found: dict[int, int] = {}
    for name in sorted(names, key=int):
        try:
            target = os.readlink(f"{fd_dir}/{name}")
        except FileNotFoundError:
            continue  # closed meanwhile, or the whole process went (checked below)
        match = _SOCKET_LINK.match(target)
        if match:
            found.setdefault(int(match.group(1)), int(name))
    if not os.path.exists(fd_dir):
        raise ProcessGoneError(pid, None, "the process exited while its fds were listed")
    return found


def sockets_by_inode(pid: int, inodes: Collection[int]) -> list[socket.socket]:
    """Duplicates of PID's sockets whose inode is one of INODES (the caller closes them), found
    by :func:`socket_fds`; an fd closed meanwhile is skipped, so fewer may come back. Raises
    what :func:`socket_fds` and `duplicate_fd` raise for the process itself."""
    found: list[socket.socket] = []
    try:
        for inode, fd in socket_fds(pid).items():
            if inode in inodes:
                try:
                    found.append(socket.socket(fileno=duplicate_fd(pid, fd)))
                except FdNotOpenError:
                    continue
    except BaseException:
        for sock in found:
            sock.close()
        raise
    return found


def tcp_listen_entries(pid: int) -> list[TcpEntry]:
    """Every LISTEN entry of PID's network namespace (IPv4 then IPv6)."""
    entries: list[TcpEntry] = []
    for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        path = f"/proc/{pid}/net/{name}"
        try:
            with open(path) as f:
                text = f.read()
        except FileNotFoundError as err:
            if not os.path.exists(f"/proc/{pid}"):
                raise ProcessGoneError(pid, None, "no such process") from err
            continue  # no IPv6 in this kernel
        except ProcessLookupError as err:
            raise ProcessGoneError(pid, None, "no such process") from err
        entries += parse_proc_net_tcp(text, family)
    return entries


def match_listeners(entries: Iterable[TcpEntry], fds: dict[int, int]) -> list[tuple[TcpEntry, int]]:
    """The entries whose inode is one of the process's sockets, with that fd, by fd."""
    matched = {e.inode: (e, fds[e.inode]) for e in entries if e.inode in fds}
    return sorted(matched.values(), key=lambda pair: pair[1])


def process_tree(pid: int) -> list[int]:
    """PID and its descendants, parents before children (from /proc/PID/task/*/children).

    A process that exits meanwhile is skipped with its subtree; raises ProcessGoneError only
    when PID itself is gone.
    """
    if not os.path.exists(f"/proc/{pid}"):
        raise ProcessGoneError(pid, None, "no such process")
    tree: list[int] = []
    pending = [pid]
    while pending:
        current = pending.pop(0)
        if current in tree:
            continue
        tree.append(current)
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in sorted(tasks, key=int):
            try:
                with open(f"/proc/{current}/task/{task}/children") as f:
                    pending += [int(child) for child in f.read().split()]
            except OSError:
                continue
    return tree


def tree_entries(pid: int) -> list[tuple[TcpEntry, int, int]]:
    """(LISTEN entry, pid, fd) of each listening socket of PID and its descendants, each
    socket once, in the first process (parents first) that holds it.

    A container's init may hold no listener itself (a wrapper that forks the server); a
    master and its workers share one socket, found in the master. The netns's TCP table is
    read once, for the whole tree. Raises ProcessGoneError only when PID itself is gone.
    """
    entries = tcp_listen_entries(pid)
    found: dict[int, tuple[TcpEntry, int, int]] = {}
    for member in process_tree(pid):
        try:
            fds = socket_fds(member)
        except ProcessGoneError:
            if member == pid:
                raise
            continue  # a child that exited meanwhile
        for entry, fd in match_listeners(entries, fds):
            found.setdefault(entry.inode, (entry, member, fd))
    return list(found.values())


def tree_listeners(pid: int) -> list[Listener]:
    """The listening TCP sockets of PID and its descendants (see :func:`tree_entries`).

    Duplicates each IPv6 socket once to read IPV6_V6ONLY; errors as :func:`listeners`.
    """
    return [_listener(entry, member, fd) for entry, member, fd in tree_entries(pid)]


def listeners(pid: int) -> list[Listener]:
    """The listening TCP sockets of process PID, ordered by fd.

    Reads /proc and duplicates each socket once to read IPV6_V6ONLY (root, or PID is us).
    Raises ProcessGoneError when PID is gone, SocketAccessError when it cannot be inspected.
    """
    return [
        _listener(entry, pid, fd)
        for entry, fd in match_listeners(tcp_listen_entries(pid), socket_fds(pid))
    ]


def _listener(entry: TcpEntry, pid: int, fd: int) -> Listener:
    """ENTRY as fd FD of PID, with v6only read from a duplicate of an IPv6 socket."""
    v6only = False
    if entry.family == socket.AF_INET6:
        with duplicate_socket(pid, fd) as sock:
            v6only = bool(sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY))
    return Listener(
        entry.family, entry.address, entry.port, entry.inode, fd, v6only, entry.uid, pid
    )
