"""The transient socket unit's properties: the holder matches the app's sockets exactly."""

from __future__ import annotations

import socket

import pytest

from zeropod.sockets.listeners import Listener
from zeropod.systemd.socket_unit import socket_unit_properties

V4, V6 = socket.AF_INET, socket.AF_INET6
NETNS = "/var/run/netns/cni-1234"


def lst(family, address, port, v6only=False, uid=0, fd=3, inode=100) -> Listener:
    return Listener(family, address, port, inode, fd, v6only, uid)


def props(*listeners: Listener) -> dict:
    return {k: (sig, v) for k, sig, v in socket_unit_properties(listeners, NETNS, "held")}


COMMON = {
    "Description": ("s", "held"),
    "Accept": ("b", False),
    "ReusePort": ("b", True),
    "Backlog": ("u", 4096),
    "NetworkNamespacePath": ("s", NETNS),
    "CollectMode": ("s", "inactive-or-failed"),
}


@pytest.mark.parametrize(
    ("listeners", "listen", "bind_ipv6_only"),
    [
        ([lst(V6, "::", 8080)], [("Stream", "[::]:8080")], "both"),
        ([lst(V6, "::", 8080, v6only=True)], [("Stream", "[::]:8080")], "ipv6-only"),
        ([lst(V4, "0.0.0.0", 80)], [("Stream", "0.0.0.0:80")], None),
        ([lst(V4, "10.88.0.5", 80)], [("Stream", "10.88.0.5:80")], None),
        ([lst(V6, "fd00::5", 443)], [("Stream", "[fd00::5]:443")], "both"),
        (
            [lst(V4, "0.0.0.0", 80), lst(V6, "::", 81, v6only=True, fd=4, inode=101)],
            [("Stream", "0.0.0.0:80"), ("Stream", "[::]:81")],
            "ipv6-only",
        ),
        (  # one socket reached through two processes' fds: held once
            [lst(V6, "::", 8080), lst(V6, "::", 8080, fd=7)],
            [("Stream", "[::]:8080")],
            "both",
        ),
    ],
)
def test_listen_and_v6only_follow_the_app(listeners, listen, bind_ipv6_only) -> None:
    want = {**COMMON, "Listen": ("a(ss)", listen)}
    if bind_ipv6_only:
        want["BindIPv6Only"] = ("s", bind_ipv6_only)
    assert props(*listeners) == want


def test_no_free_bind_and_no_service_property() -> None:
    # FreeBind would hide a wrong address; Service= is read-only for transient sockets on 252.
    got = props(lst(V6, "::", 8080))
    assert "FreeBind" not in got and "Service" not in got


@pytest.mark.parametrize(
    ("listeners", "netns", "message"),
    [
        ([], NETNS, "no listeners"),
        ([lst(V6, "::", 80), lst(V6, "::", 81, v6only=True)], NETNS, "disagree on v6only"),
        ([lst(V4, "0.0.0.0", 80, uid=1000)], NETNS, "owned by uid 1000"),
        ([lst(V4, "0.0.0.0", 80)], "netns/cni-1", "absolute"),
    ],
)
def test_what_one_unit_cannot_hold_is_refused(listeners, netns, message) -> None:
    with pytest.raises(ValueError, match=message):
        socket_unit_properties(listeners, netns, "held")


def test_backlog_is_configurable() -> None:
    got = socket_unit_properties([lst(V4, "0.0.0.0", 80)], NETNS, "held", backlog=128)
    assert ("Backlog", "u", 128) in got
