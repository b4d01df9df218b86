"""The node test-bed itself: what every other end-to-end test takes for granted.

CRIU 4.2.1 works inside the node, the requested containerd version runs, node.run passes stdio
and exit status through, the host reaches the node's unix sockets through /proc/<pid>/root, and
ctr runs, checkpoints and restores a busybox container (node/check).
"""

from __future__ import annotations

import socket
import subprocess

from e2e.node import NODE_SCRIPTS, Node


def test_criu_check_looks_good(node: Node) -> None:
    result = node.run(["criu", "check"])
    assert result.returncode == 0, result.stderr
    assert "Looks good." in result.stdout


def test_criu_and_pycriu_are_4_2_1(node: Node) -> None:
    assert node.run(["criu", "--version"], check=True).stdout.startswith("Version: 4.2.1")
    code = "import pycriu, dbus_fast, zeropod; print(pycriu.__name__)"
    assert node.run(["python3", "-c", code], check=True).stdout == "pycriu\n"


def test_containerd_is_the_requested_version(node: Node, containerd_version: str) -> None:
    out = node.run(["ctr", "version"], check=True).stdout
    server = out.split("Server:", 1)[1]
    assert f"Version:  {containerd_version}." in server, out


def test_run_passes_stdio_and_exit_status(node: Node) -> None:
    result = node.run(["sh", "-c", "cat; echo oops >&2; exit 3"], input="hello\n")
    assert (result.returncode, result.stdout, result.stderr) == (3, "hello\n", "oops\n")


def test_host_connects_to_node_unix_socket(node: Node) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(node.containerd_socket))


def test_ctr_runs_checkpoints_and_restores_busybox(node: Node) -> None:
    result = subprocess.run(
        [str(NODE_SCRIPTS / "check")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "hello from busybox" in result.stdout
    assert "node check passed" in result.stdout
