"""``python3 -m zeropod.activator UNIT``: pass the sockets systemd activated us with to the daemon.

systemd starts ``zeropod@<instance>.service`` when a connection reaches a sleeping pod's
socket unit (Accept=no), with the listening sockets as fds 3.. (``LISTEN_FDS``,
``LISTEN_PID``). This sends ``{"v": 1, "op": "activated", "unit": UNIT}`` and the fds in one
message (SCM_RIGHTS) to the daemon's activation socket, then blocks until the daemon closes
the connection: while this service runs, systemd does not re-trigger the socket.

When the daemon is not up (it restarts within a second under systemd), connecting is retried
until ``CONNECT_DEADLINE`` seconds have passed. Exit status: 0 when the daemon ended the
hand-off, 1 when no daemon took the sockets, 2 for a bad invocation. Standard library only,
started with the real interpreter: this is on the wake path.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time

SD_LISTEN_FDS_START = 3
CONNECT_DEADLINE = 60.0
RETRY_PAUSE = 0.2
DEFAULT_SOCKET = "/run/zeropod/activator.sock"
SOCKET_ENV = "ZEROPOD_ACTIVATOR_SOCKET"


def listen_fds(env: dict[str, str] | os._Environ[str]) -> list[int]:
    """The fds systemd passed to this process (empty when they are not for us)."""
    if env.get("LISTEN_PID") != str(os.getpid()):
        return []
    count = env.get("LISTEN_FDS", "")
    if not count.isdigit():
        return []
    return list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(count)))


def connect(path: str, deadline: float) -> socket.socket:
    """A connection to the daemon, retried until ``deadline`` (monotonic); raises OSError."""
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(path)
            return sock
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            if time.monotonic() >= deadline:
                raise
            time.sleep(RETRY_PAUSE)  # the daemon is restarting; systemd brings it back


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[1].endswith(".service"):
        print("usage: python3 -m zeropod.activator UNIT.service", file=sys.stderr)
        return 2
    unit = argv[1]
    fds = listen_fds(os.environ)
    if not fds:
        print(f"{unit}: started without sockets (LISTEN_FDS)", file=sys.stderr)
        return 2
    path = os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET
    message = json.dumps({"v": 1, "op": "activated", "unit": unit}).encode() + b"\n"
    try:
        sock = connect(path, time.monotonic() + CONNECT_DEADLINE)
        socket.send_fds(sock, [message], fds)
    except OSError as err:
        print(f"{unit}: cannot hand the sockets to the daemon at {path}: {err}", file=sys.stderr)
        return 1
    for fd in fds:
        os.close(fd)  # the daemon has its copies; ours must not keep the sockets alive
    try:
        while sock.recv(64):
            pass
    except OSError:
        pass  # the daemon went away: the hand-off is over either way
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
