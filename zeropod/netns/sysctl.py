"""Network sysctls inside another network namespace (e.g. a pod's), such as tcp_migrate_req.

/proc/sys/net belongs to the network namespace of the thread that opens it. So the file is
opened and written from a fresh thread that first joins the target namespace with
setns(CLONE_NEWNET) (through ctypes: Python 3.11 has no os.setns). setns changes only the
calling thread; that thread does nothing else and then ends, so no pooled thread (asyncio's
executor, say) is ever left in the pod's namespace. Needs CAP_SYS_ADMIN (root).

    enable_tcp_migrate_req("/var/run/netns/cni-1234")     # or "/proc/PID/ns/net"
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

CLONE_NEWNET = 0x40000000
TCP_MIGRATE_REQ = "net.ipv4.tcp_migrate_req"
_KEY = re.compile(r"^net(\.[A-Za-z0-9_-]+)+$")

_libc = ctypes.CDLL(None, use_errno=True)

T = TypeVar("T")


class NetnsError(OSError):
    """Joining a network namespace or reading/writing one of its sysctls failed."""


def _setns_net(netns_path: str) -> None:
    """Move the calling thread into the network namespace at NETNS_PATH."""
    try:
        fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as err:
        raise NetnsError(err.errno, f"cannot open netns {netns_path}: {err.strerror}") from err
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            errno_ = ctypes.get_errno()
            raise NetnsError(errno_, f"setns({netns_path}, CLONE_NEWNET): {os.strerror(errno_)}")
    finally:
        os.close(fd)


def run_in_netns(netns_path: str | Path, fn: Callable[[], T], timeout: float = 5.0) -> T:
    """Call FN in a new thread that has joined the network namespace at NETNS_PATH.

    Blocks until FN returns (at most TIMEOUT seconds, then TimeoutError; the thread is left to
    finish on its own). FN's exception is re-raised here. The thread ends after FN.
    """
    outcome: list[tuple[bool, object]] = []

    def body() -> None:
        try:
            _setns_net(str(netns_path))
            outcome.append((True, fn()))
        except BaseException as err:  # handed to the caller below
            outcome.append((False, err))

    thread = threading.Thread(target=body, name=f"netns:{netns_path}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"work in netns {netns_path} did not finish in {timeout:g} s")
    ok, value = outcome[0]
    if not ok:
        assert isinstance(value, BaseException)
        raise value
    return value  # type: ignore[return-value]


def sysctl_path(key: str) -> str:
    """/proc/sys path of a net.* sysctl KEY; raises ValueError for anything else."""
    if not _KEY.match(key):
        raise ValueError(f"sysctl {key!r}: expected a net.* key such as {TCP_MIGRATE_REQ}")
    return "/proc/sys/" + key.replace(".", "/")


def read_sysctl(netns_path: str | Path, key: str) -> str:
    """The value of net.* sysctl KEY in the network namespace at NETNS_PATH, stripped."""
    path = sysctl_path(key)

    def read() -> str:
        with open(path) as f:
            return f.read().strip()

    try:
        return run_in_netns(netns_path, read)
    except NetnsError:
        raise
    except OSError as err:
        raise NetnsError(err.errno, f"reading {key} in netns {netns_path}: {err}") from err


def write_sysctl(netns_path: str | Path, key: str, value: str | int) -> None:
    """Set net.* sysctl KEY to VALUE in the network namespace at NETNS_PATH and verify it.

    Raises NetnsError when the namespace cannot be joined, the write fails, or reading back
    gives another value.
    """
    path = sysctl_path(key)
    want = str(value)

    def write() -> str:
        with open(path, "w") as f:
            f.write(want + "\n")
        with open(path) as f:
            return f.read().strip()

    try:
        got = run_in_netns(netns_path, write)
    except NetnsError:
        raise
    except OSError as err:
        raise NetnsError(err.errno, f"writing {key}={want} in netns {netns_path}: {err}") from err
    if got != want:
        raise NetnsError(0, f"{key} in netns {netns_path} reads {got!r} after writing {want!r}")


def enable_tcp_migrate_req(netns_path: str | Path) -> None:
    """net.ipv4.tcp_migrate_req=1 in the pod netns: a closing listener's pending connections
    move to another socket of its reuseport group instead of being reset."""
    write_sysctl(netns_path, TCP_MIGRATE_REQ, 1)


async def enable_tcp_migrate_req_async(netns_path: str | Path) -> None:
    """`enable_tcp_migrate_req` without blocking the event loop. The executor thread only
    waits for the dedicated netns thread; it never joins the namespace itself."""
    await asyncio.to_thread(enable_tcp_migrate_req, netns_path)
