"""``python3 -m zeropod.activator UNIT``: pass the sockets systemd activated us with to the daemon.

systemd starts ``zeropod@<instance>.service`` when a connection reaches a sleeping pod's
socket unit (Accept=no), with the listening sockets as fds 3.. (``LISTEN_FDS``,
``LISTEN_PID``). This sends ``{"v": 1, "op": "activated", "unit": UNIT}`` and the fds in one
message (SCM_RIGHTS) to the daemon's activation socket, then blocks until the daemon closes
the connection: while this service runs, systemd does not re-trigger the socket.

When the daemon is not up, connecting is retried for as long as it takes (a line on stderr,
so in the unit's journal, every ``NOTICE_EVERY`` seconds): giving up would leave the socket
readable with no service, systemd would re-trigger until the socket unit's trigger limit
failed it, and the pod could never wake again. (While the daemon *restarts*, its socket in
systemd's fd store queues the connection anyway.) Exit status: 0 when the daemon ended the
hand-off, 1 when the hand-off could not be sent, 2 for a bad invocation. Standard library
only, started with the real interpreter: this is on the wake path.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time

SD_LISTEN_FDS_START = 3
RETRY_PAUSE = 0.2
MAX_PAUSE = 1.0
NOTICE_EVERY = 60.0
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


def connect(path: str, unit: str, notice_every: float = NOTICE_EVERY) -> socket.socket:
    """A connection to the daemon, retried until it answers (pauses growing to MAX_PAUSE);
    raises OSError only for errors other than "not there" and "refused"."""
    pause = RETRY_PAUSE
    started = last_notice = time.monotonic()
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(path)
            return sock
        except (FileNotFoundError, ConnectionRefusedError) as err:
            sock.close()
            now = time.monotonic()
            if now - last_notice >= notice_every:
                last_notice = now
                print(
                    f"{unit}: still waiting for the zeropod daemon at {path} "
                    f"({now - started:.0f} s): {err.strerror}",
                    file=sys.stderr,
                    flush=True,
                )
            time.sleep(pause)
            pause = min(pause * 2, MAX_PAUSE)


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
        sock = connect(path, unit)
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
