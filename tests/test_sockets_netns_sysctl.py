"""Sysctls inside a network namespace (zeropod.netns.sysctl): keys, errors, thread isolation.

Writing tcp_migrate_req into a real pod netns is covered on the node (e2e/test_holder.py);
here the key mapping and error paths run without root, and joining this process's own netns
(a no-op move that still needs CAP_SYS_ADMIN) runs when root.
"""

from __future__ import annotations

import errno
import os
import threading

import pytest

from zeropod.netns.sysctl import (
    TCP_MIGRATE_REQ,
    NetnsError,
    read_sysctl,
    run_in_netns,
    sysctl_path,
)


@pytest.mark.parametrize(
    ("key", "path"),
    [
        (TCP_MIGRATE_REQ, "/proc/sys/net/ipv4/tcp_migrate_req"),
        ("net.ipv4.conf.eth0.forwarding", "/proc/sys/net/ipv4/conf/eth0/forwarding"),
        ("net.core.somaxconn", "/proc/sys/net/core/somaxconn"),
    ],
)
def test_keys_map_to_proc_sys(key: str, path: str) -> None:
    assert sysctl_path(key) == path


@pytest.mark.parametrize(
    "key", ["kernel.pid_max", "net", "net..x", "net.ipv4/../../kernel/x", "net.a b", ""]
)
def test_only_net_keys(key: str) -> None:
    with pytest.raises(ValueError, match="expected a net"):
        sysctl_path(key)


def test_a_missing_netns_is_named() -> None:
    with pytest.raises(NetnsError, match="cannot open netns /nonexistent/ns") as info:
        read_sysctl("/nonexistent/ns", TCP_MIGRATE_REQ)
    assert info.value.errno == errno.ENOENT


def test_a_namespace_of_another_kind_is_refused() -> None:
    with pytest.raises(NetnsError, match=r"setns\(/proc/self/ns/uts, CLONE_NEWNET\)") as info:
        run_in_netns("/proc/self/ns/uts", lambda: None)
    assert info.value.errno == errno.EINVAL


@pytest.mark.skipif(os.geteuid() != 0, reason="setns needs CAP_SYS_ADMIN")
def test_work_runs_in_a_thread_of_its_own_that_ends() -> None:
    caller = threading.get_ident()
    seen: list[int] = []

    def work() -> str:
        seen.append(threading.get_ident())
        return "ok"

    assert run_in_netns("/proc/self/ns/net", work) == "ok"
    assert seen and seen[0] != caller
    assert all(t.ident != seen[0] for t in threading.enumerate())


@pytest.mark.skipif(os.geteuid() != 0, reason="setns needs CAP_SYS_ADMIN")
def test_read_in_own_netns_matches_proc() -> None:
    with open("/proc/sys/net/core/somaxconn") as f:
        want = f.read().strip()
    assert read_sysctl("/proc/self/ns/net", "net.core.somaxconn") == want


def test_errors_of_the_work_reach_the_caller() -> None:
    def boom() -> None:
        raise KeyError("inside")

    # Without root the setns fails first; with root the work's own error comes back.
    with pytest.raises((KeyError, NetnsError)):
        run_in_netns("/proc/self/ns/net", boom)
