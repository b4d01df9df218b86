"""The uid rule of reuseport groups, against the real kernel in a private netns on the host.

A non-root app's listener cannot share its port with systemd's root-owned holder: the kernel
admits a socket into a reuseport group only when the owners' uids match. The daemon makes
root the owner of the app's socket (fchown on a pidfd_getfd duplicate) before the holder
binds; this checks that, done that way, the holder binds next to the app and every client
queued at the app migrates to the holder when the app dies (tcp_migrate_req=1), and that
without it the holder's bind fails. Needs root, not the node.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Runs as root inside `unshare -n`: argv[1] is "fchown" or "plain".
SCRIPT = r"""
import json, os, signal, socket, subprocess, sys, time
from zeropod.sockets.listeners import tree_listeners
from zeropod.sockets.reuseport import share_with_root_holder

subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
with open("/proc/sys/net/ipv4/tcp_migrate_req", "w") as f:
    f.write("1")
ready_r, ready_w = os.pipe()
pid = os.fork()
if pid == 0:  # the app: drops to uid 65534 first, then listens (never accepts)
    os.setresgid(65534, 65534, 65534)
    os.setresuid(65534, 65534, 65534)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    os.write(ready_w, str(sock.getsockname()[1]).encode())
    signal.pause()
port = int(os.read(ready_r, 16))
clients = [socket.create_connection(("127.0.0.1", port), timeout=2) for _ in range(20)]
[listener] = tree_listeners(pid)
result = {"owner_before": listener.uid}
if sys.argv[1] == "fchown":
    result["returned"] = share_with_root_holder(listener.pid, listener.fd)
holder = socket.socket()  # as systemd's ListenStream= with ReusePort=yes makes it
holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
try:
    holder.bind(("127.0.0.1", port))
except OSError as err:
    result["bind"] = err.strerror
    os.kill(pid, signal.SIGKILL)
    print(json.dumps(result))
    sys.exit(0)
holder.listen(4096)
result["bind"] = "ok"
result["owner_after"] = tree_listeners(pid)[0].uid
os.kill(pid, signal.SIGKILL)
os.waitpid(pid, 0)
holder.settimeout(2)
served = 0
for client in clients:
    conn, _ = holder.accept()
    conn.sendall(b"x")
    conn.close()
for client in clients:
    served += client.recv(1) == b"x"
result["served"] = served
print(json.dumps(result))
"""


def run(mode: str) -> dict:
    if os.geteuid() != 0:
        pytest.skip("needs root (unshare -n, setresuid, fchown)")
    out = subprocess.run(
        ["unshare", "-n", sys.executable, "-c", SCRIPT, mode],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_a_non_root_listener_made_roots_shares_its_port_and_hands_its_queue_over() -> None:
    result = run("fchown")
    assert result == {
        "owner_before": 65534,
        "returned": 65534,
        "bind": "ok",
        "owner_after": 0,
        "served": 20,
    }


def test_without_the_owner_change_the_root_holder_cannot_bind() -> None:
    assert run("plain") == {"owner_before": 65534, "bind": "Address already in use"}
