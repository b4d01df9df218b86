"""e2e/httpload.py (run with the system python3, as in the node) and its e2e/http.py wrapper."""

from __future__ import annotations

import socket
import struct
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e import http, images

SCRIPT = Path(http.__file__).with_name("httpload.py")
PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else "python3"


class LocalNode:
    """Stands in for e2e.node.Node: runs the command here, with the checkout's script."""

    def __init__(self) -> None:
        self.commands: list[list[str]] = []

    def run(self, args: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        self.commands.append(args)
        args = [
            PYTHON if a == "python3" else str(SCRIPT) if a == http.SCRIPT_IN_NODE else a
            for a in args
        ]
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def counter(tmp_path: Path) -> Iterator[int]:
    images.ensure_built(("counter",))
    binary = images.extract_app("counter", tmp_path)
    proc = subprocess.Popen(
        [str(binary)], env={"PORT": "0", "LISTEN": "127.0.0.1"}, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # "counter listening on [127.0.0.1]:PORT"
    threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep the pipe drained
    yield int(line.rsplit(":", 1)[1])
    proc.kill()
    proc.wait(10)


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP listener on loopback whose connections the test handles itself."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield s


def serve(listener: socket.socket, action: Any) -> None:
    def loop() -> None:
        conn, _ = listener.accept()
        action(conn)

    threading.Thread(target=loop, daemon=True).start()


def test_concurrent_requests_all_answered(counter: int) -> None:
    node = LocalNode()
    res = http.get(node, http.url("127.0.0.1", counter), count=5, concurrency=3)
    assert res.summary["ok"] == 15 and not res.errors(), res.describe()
    assert sorted(res.bodies(), key=lambda b: int(b[6:])) == [f"count={n}\n" for n in range(1, 16)]
    assert node.commands[0][:3] == [
        "python3",
        http.SCRIPT_IN_NODE,
        f"http://127.0.0.1:{counter}/",
    ]


def test_keep_alive_reuses_one_connection(counter: int) -> None:
    res = http.get(LocalNode(), http.url("127.0.0.1", counter, "/peer"), count=4, keep_alive=True)
    assert len(set(res.bodies())) == 1, res.bodies()


def test_headers_and_duration(counter: int) -> None:
    res = http.get(
        LocalNode(),
        http.url("127.0.0.1", counter),
        duration=0.3,
        interval=0.05,
        headers=["User-Agent: kube-probe/1.31"],
    )
    assert res.summary["ok"] >= 2 and not res.errors(), res.describe()


def test_refused(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    listener.close()
    res = http.get(LocalNode(), http.url("127.0.0.1", port), count=2)
    assert [r.error for r in res.results] == ["refused", "refused"]


def test_reset(listener: socket.socket) -> None:
    def reset(conn: socket.socket) -> None:
        conn.recv(100)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()

    serve(listener, reset)
    res = http.get(LocalNode(), http.url("127.0.0.1", listener.getsockname()[1]))
    assert [r.error for r in res.results] == ["reset"], res.describe()


def test_timeout_and_closed(listener: socket.socket) -> None:
    held: list[socket.socket] = []
    serve(listener, held.append)  # accept, never answer
    res = http.get(LocalNode(), http.url("127.0.0.1", listener.getsockname()[1]), timeout=0.2)
    assert [r.error for r in res.results] == ["timeout"], res.describe()

    serve(listener, lambda conn: (conn.recv(100), conn.close()))
    res = http.get(LocalNode(), http.url("127.0.0.1", listener.getsockname()[1]))
    assert [r.error for r in res.results] == ["closed"], res.describe()
    for conn in held:
        conn.close()


def test_start_runs_in_the_background(counter: int) -> None:
    future = http.start(LocalNode(), http.url("127.0.0.1", counter), count=3)
    assert future.result(timeout=30).bodies() == ["count=1\n", "count=2\n", "count=3\n"]


def test_url_brackets_ipv6() -> None:
    assert http.url("fd00::5", 8080, "/x") == "http://[fd00::5]:8080/x"
    assert http.url("10.0.0.1", 80) == "http://10.0.0.1:80/"


def test_parse_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="unexpected httpload output"):
        http.parse("Traceback ...")
