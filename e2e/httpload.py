#!/usr/bin/env python3
"""HTTP GETs against one URL, printing every result as JSON (run inside the test node).

Pod IPs are reachable only in the node's private network, so e2e tests run this script in
the node (`node.run(["python3", "/opt/zeropod/src/e2e/httpload.py", URL, ...])`, see
e2e/http.py). Python 3.11 standard library only, and plain sockets rather than http.client:
the failure kinds matter (a reset, a refused connect and a timeout mean different things
for a wake) and this directory also holds e2e/http.py, which would shadow the stdlib's http.

Each of CONCURRENCY workers sends COUNT requests (or keeps going for DURATION seconds), one
connection per request unless --keep-alive. Output: {"url", "results": [...], "summary"}.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import socket
import statistics
import sys
import threading
import time
import urllib.parse

ERROR_KINDS = ("reset", "refused", "timeout", "closed", "error")


class Closed(Exception):
    """The server closed the connection before a whole response arrived."""


def parse_url(url: str) -> tuple[str, int, str]:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"{url}: only http://HOST[:PORT]/PATH URLs are supported")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return parts.hostname, parts.port or 80, path


def classify(err: BaseException) -> str:
    if isinstance(err, ConnectionRefusedError):
        return "refused"
    if isinstance(err, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return "reset"
    if isinstance(err, TimeoutError):  # socket.timeout is TimeoutError on 3.10+
        return "timeout"
    if isinstance(err, Closed):
        return "closed"
    return "error"


class Reader:
    """Reads HTTP/1.1 responses off one socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise Closed("connection closed mid-response" if self.buf else "closed before reply")
        self.buf += chunk

    def response(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            self._more()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            length = int(headers["content-length"])
            while len(self.buf) < length:
                self._more()
            body, self.buf = self.buf[:length], self.buf[length:]
        else:
            try:
                while True:
                    self._more()
            except Closed:
                pass
            body, self.buf = self.buf, b""
        return status, headers, body


def request_bytes(host: str, path: str, keep_alive: bool, headers: list[str]) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}"]
    lines.append("Connection: keep-alive" if keep_alive else "Connection: close")
    lines.extend(headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def worker(args: argparse.Namespace, index: int, start: float, out: list, lock) -> None:
    host, port, path = parse_url(args.url)
    req = request_bytes(host, path, args.keep_alive, args.header)
    sock: socket.socket | None = None
    reader: Reader | None = None
    seq = 0
    while True:
        now = time.monotonic()
        if args.duration is not None:
            if now - start >= args.duration:
                break
        elif seq >= args.count:
            break
        result = {"worker": index, "seq": seq, "t": round(now - start, 4)}
        try:
            if sock is None:
                sock = socket.create_connection((host, port), timeout=args.timeout)
                reader = Reader(sock)
            sock.sendall(req)
            assert reader is not None
            status, headers, body = reader.response()
            result.update(status=status, body=body.decode("utf-8", "replace"), error=None)
            if not args.keep_alive or headers.get("connection", "").lower() == "close":
                sock.close()
                sock = None
        except (OSError, Closed, ValueError) as err:
            result.update(status=None, body="", error=classify(err), detail=repr(err))
            if sock is not None:
                sock.close()
                sock = None
        result["latency_ms"] = round((time.monotonic() - now) * 1000, 3)
        with lock:
            out.append(result)
        seq += 1
        if args.interval:
            time.sleep(args.interval)
    if sock is not None:
        sock.close()


def summarize(results: list[dict]) -> dict:
    summary: dict = {"total": len(results), "ok": 0, "statuses": {}}
    summary.update(dict.fromkeys(ERROR_KINDS, 0))
    latencies = []
    for r in results:
        if r["error"]:
            summary[r["error"]] += 1
            continue
        summary["ok"] += 1
        key = str(r["status"])
        summary["statuses"][key] = summary["statuses"].get(key, 0) + 1
        latencies.append(r["latency_ms"])
    if latencies:
        summary["latency_ms"] = {
            "min": min(latencies),
            "median": statistics.median(latencies),
            "max": max(latencies),
        }
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="http://HOST:PORT/PATH (IPv6 hosts in brackets)")
    parser.add_argument("--count", type=int, default=1, help="requests per worker")
    parser.add_argument("--duration", type=float, help="send for this many seconds instead")
    parser.add_argument("--concurrency", type=int, default=1, help="parallel workers")
    parser.add_argument("--interval", type=float, default=0.0, help="pause between requests")
    parser.add_argument("--timeout", type=float, default=5.0, help="per socket operation")
    parser.add_argument("--keep-alive", action="store_true", help="reuse one connection")
    parser.add_argument("--header", action="append", default=[], help='"Name: value"')
    args = parser.parse_args(argv)
    try:
        parse_url(args.url)
    except ValueError as err:
        parser.error(str(err))
    results: list[dict] = []
    lock = threading.Lock()
    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool:
        futures = [
            pool.submit(worker, args, i, start, results, lock) for i in range(args.concurrency)
        ]
        for f in futures:
            f.result()
    results.sort(key=lambda r: (r["t"], r["worker"], r["seq"]))
    json.dump({"url": args.url, "results": results, "summary": summarize(results)}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
