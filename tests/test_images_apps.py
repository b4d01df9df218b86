"""The test apps behave as the e2e tests assume: run straight from the image, on loopback."""

from __future__ import annotations

import http.client
import queue
import re
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e import images

TIMEOUT = 10.0


class App:
    """A test app process with its stdout lines collected by a reader thread."""

    def __init__(self, binary: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [str(binary)],
            env={"PORT": "0", "LISTEN": "127.0.0.1", **env},
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        listening = self.wait_line(r"listening on \[(.*)\]:(\d+)$")
        self.port = int(listening.group(2))

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_line(self, pattern: str, timeout: float = TIMEOUT) -> re.Match[str]:
        """The first stdout line (from now on) matching PATTERN."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line matching {pattern!r}; saw {self.seen}")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            self.seen.append(line)
            match = re.search(pattern, line)
            if match:
                return match

    def get(self, path: str, host: str = "127.0.0.1") -> tuple[int, str]:
        conn = http.client.HTTPConnection(host, self.port, timeout=TIMEOUT)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read().decode()
        finally:
            conn.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(TIMEOUT)


@pytest.fixture(scope="module")
def binaries(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each app's binary, taken out of its built image (so the tests run what ships)."""
    out = tmp_path_factory.mktemp("bin")
    images.ensure_built()
    return {name: images.extract_app(name, out) for name in images.NAMES}


@pytest.fixture
def run(binaries: dict[str, Path]) -> Iterator:
    started: list[App] = []

    def start(name: str, **env: str) -> App:
        app = App(binaries[name], env)
        started.append(app)
        return app

    yield start
    for app in started:
        app.stop()


def test_counter_counts_every_request(run) -> None:
    app = run("counter")
    assert [app.get("/") for _ in range(3)] == [(200, f"count={n}\n") for n in (1, 2, 3)]
    for n in (1, 2, 3):
        app.wait_line(rf"^served {n} from 127\.0\.0\.1$")


def test_keep_alive_serves_several_requests_on_one_connection(run) -> None:
    app = run("counter")
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=TIMEOUT)
    conn.connect()
    local = conn.sock.getsockname()
    for n in (1, 2, 3):
        conn.request("GET", "/", headers={"Connection": "keep-alive"})
        resp = conn.getresponse()
        assert (resp.status, resp.read(), resp.getheader("Connection")) == (
            200,
            f"count={n}\n".encode(),
            "keep-alive",
        )
        assert conn.sock.getsockname() == local
    conn.request("GET", "/peer", headers={"Connection": "close"})
    resp = conn.getresponse()
    assert resp.getheader("Connection") == "close"
    assert resp.read().decode() == f"peer=127.0.0.1 port={local[1]}\n"
    conn.close()


def test_pipelined_requests_are_answered_in_order(run) -> None:
    app = run("counter")
    with socket.create_connection(("127.0.0.1", app.port), timeout=TIMEOUT) as s:
        req = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n"
        s.sendall(req * 2 + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    bodies = re.findall(rb"\r\n\r\n(count=\d+\n)", data)
    assert bodies == [b"count=1\n", b"count=2\n", b"count=3\n"]
    assert data.count(b"Content-Length: 8\r\n") == 3


def test_access_log_off_logs_only_what_the_app_asks(run) -> None:
    app = run("counter", ACCESS_LOG="off")
    assert app.get("/") == (200, "count=1\n")
    assert app.get("/log?msg=marker") == (200, "logged\n")
    app.wait_line(r"^marker$")  # stdout is in order: a "served 1" line would have come first
    assert not [line for line in app.seen if line.startswith("served")]


def test_access_log_rejects_other_values(binaries: dict[str, Path]) -> None:
    proc = subprocess.run(
        [str(binaries["counter"])],
        env={"PORT": "0", "ACCESS_LOG": "quiet"},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert proc.returncode == 1
    assert "ACCESS_LOG=quiet: expected on or off" in proc.stderr


def test_exit_answers_then_exits_with_the_code(run) -> None:
    app = run("counter")
    assert app.get("/exit?code=7") == (200, "exiting code=7\n")
    assert app.proc.wait(TIMEOUT) == 7


def test_log_prints_the_message(run) -> None:
    app = run("counter")
    assert app.get("/log?msg=hello+wide%20world") == (200, "logged\n")
    app.wait_line(r"^hello wide world$")
    app.wait_line(r"^served 1 from ")


def test_sigterm_exits_zero(run) -> None:
    app = run("counter")
    app.proc.send_signal(signal.SIGTERM)
    assert app.proc.wait(TIMEOUT) == 0


def test_client_reset_and_slow_client_do_not_hurt(run) -> None:
    app = run("counter")
    slow = socket.create_connection(("127.0.0.1", app.port), timeout=TIMEOUT)
    slow.sendall(b"GET / HTTP/1.1\r\n")  # and never finish the request
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", app.port), timeout=TIMEOUT) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
            # SO_LINGER 0: close sends a reset instead of a FIN.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    assert app.get("/") == (200, "count=1\n")
    slow.close()
    assert app.proc.poll() is None


def test_unknown_path_and_method(run) -> None:
    app = run("counter")
    assert app.get("/nope") == (404, "not found\n")
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=TIMEOUT)
    conn.request("POST", "/", body=b"abc")
    assert conn.getresponse().status == 405
    conn.close()


def test_listens_dual_stack_by_default(run) -> None:
    if not socket.has_ipv6 or not Path("/proc/net/if_inet6").exists():
        pytest.skip("no IPv6 on this host")
    app = run("counter", LISTEN="")
    assert app.seen[0] == f"counter listening on [::]:{app.port}"
    assert app.get("/peer", host="::1")[1].startswith("peer=::1 port=")
    assert app.get("/peer", host="127.0.0.1")[1].startswith("peer=::ffff:127.0.0.1 port=")


def test_memhog_checksum_is_stable(run) -> None:
    app = run("memhog", MEM_MB="8")
    first = app.get("/")
    assert re.fullmatch(r"size_mb=8 checksum=[0-9a-f]{16}\n", first[1])
    assert app.get("/") == first
    assert f"memhog {first[1].strip()}" in app.seen


def test_memhog_memory_is_resident(run) -> None:
    app = run("memhog", MEM_MB="16")
    status = Path(f"/proc/{app.proc.pid}/status").read_text()
    rss_kb = int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]
    assert rss_kb >= 16 * 1024


def wait_for_handlers(pid: int, *signals: signal.Signals) -> None:
    """Poll /proc until PID catches SIGNALS (before that, a signal would kill it)."""
    want = sum(1 << (sig - 1) for sig in signals)
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        status = Path(f"/proc/{pid}/status").read_text()
        caught = int(re.search(r"SigCgt:\s+([0-9a-f]+)", status).group(1), 16)  # type: ignore[union-attr]
        if caught & want == want:
            return
        time.sleep(0.01)
    raise AssertionError(f"pid {pid} never caught {signals}")


def test_pause_exits_zero_on_sigterm_and_sigint(binaries: dict[str, Path]) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        proc = subprocess.Popen([str(binaries["pause"])])
        try:
            wait_for_handlers(proc.pid, signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)
            assert proc.poll() is None
            proc.send_signal(sig)
            assert proc.wait(TIMEOUT) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(TIMEOUT)
