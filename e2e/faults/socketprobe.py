"""Runs inside the node (standard library only): what a socket of zeropod's does with idle
connections, garbage, and a user who is not root. Prints one JSON object.

    python3 socketprobe.py idle COUNT SECONDS TARGET...   COUNT silent connections to each
        TARGET; after SECONDS, how many each peer has closed
    python3 socketprobe.py garbage TARGET...               random bytes and a long line to
        each; what came back
    python3 socketprobe.py try TARGET...                   a well-formed request to each (run
        as another user); refused, closed or answered

TARGET is a unix socket path or HOST:PORT.
"""

from __future__ import annotations

import json
import os
import select
import socket
import sys
import time

GARBAGE = os.urandom(4096) + b"\n" + b"{" * 70000 + b"\n" + b"\x00\x00\x00\x10\x00\x00\x00\x01"


def connect(target: str, timeout: float = 5.0) -> socket.socket:
    if target.startswith("/"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        address: object = target
    else:
        host, _, port = target.rpartition(":")
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        address = (host, int(port))
    s.settimeout(timeout)
    try:
        s.connect(address)
    except OSError:
        s.close()
        raise
    return s


def read_some(s: socket.socket, timeout: float = 5.0) -> tuple[bytes, str]:
    """What the peer sends within TIMEOUT, and how the read ended."""
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([s], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            return data, "open"
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            return data, "reset"
        except OSError as err:
            return data, f"error {err.errno}"
        if not chunk:
            return data, "closed"
        data += chunk
    return data, "open"


def ended(s: socket.socket) -> bool:
    """True once the peer has closed S (what it sent before, e.g. a "busy" error, is read)."""
    while True:
        ready, _, _ = select.select([s], [], [], 0)
        if not ready:
            return False
        try:
            if not s.recv(65536):
                return True
        except OSError:
            return True


def idle(count: int, seconds: float, targets: list[str]) -> dict[str, object]:
    held: dict[str, list[socket.socket]] = {t: [] for t in targets}
    refused: dict[str, int] = {t: 0 for t in targets}
    for target in targets:
        for _ in range(count):
            try:
                held[target].append(connect(target))
            except OSError:
                refused[target] += 1
    deadline = time.monotonic() + seconds
    closed: dict[str, int] = {}
    while True:
        for target, conns in held.items():
            closed[target] = 0
            for s in conns:
                if ended(s):
                    closed[target] += 1
        if all(closed[t] == len(held[t]) for t in targets) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for conns in held.values():
        for s in conns:
            s.close()
    return {"opened": {t: len(c) for t, c in held.items()}, "refused": refused, "closed": closed}


def garbage(targets: list[str]) -> dict[str, object]:
    seen: dict[str, object] = {}
    for target in targets:
        try:
            s = connect(target)
        except OSError as err:
            seen[target] = f"connect: {err}"
            continue
        with s:
            try:
                s.sendall(GARBAGE)
            except OSError as err:
                seen[target] = f"send: {err.__class__.__name__}"
                continue
            data, end = read_some(s)
            seen[target] = {"reply": data[:300].decode(errors="replace"), "end": end}
    return seen


REQUEST = b'{"v": 1, "op": "status"}\n'


def attempt(targets: list[str]) -> dict[str, object]:
    seen: dict[str, object] = {"uid": os.getuid()}
    for target in targets:
        try:
            s = connect(target)
        except PermissionError:
            seen[target] = "refused: permission denied"
            continue
        except OSError as err:
            seen[target] = f"refused: {err}"
            continue
        with s:
            try:
                s.sendall(REQUEST)
            except OSError as err:
                seen[target] = f"closed: {err.__class__.__name__}"
                continue
            data, end = read_some(s, 5)
            seen[target] = f"answered: {data[:300].decode(errors='replace')}" if data else end
    return seen


def main() -> None:
    mode, *args = sys.argv[1:]
    if mode == "idle":
        result = idle(int(args[0]), float(args[1]), args[2:])
    elif mode == "garbage":
        result = garbage(args)
    else:
        result = attempt(args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
