"""HTTP requests from inside the test node, where the pod IPs are reachable.

Runs e2e/httpload.py in the node through `node.run` (e2e.node.Node: run(args, input=None,
timeout=...) -> CompletedProcess) and parses its JSON. `get` waits for the answers;
`start` runs the load in the background (e.g. across a scale-down and wake) and returns a
future. Import this module as `from e2e import http`: it is not the standard library's http.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import ipaddress
import json
from collections.abc import Sequence
from typing import Any

SCRIPT_IN_NODE = "/opt/zeropod/src/e2e/httpload.py"
ERROR_KINDS = ("reset", "refused", "timeout", "closed", "error")


def url(host: str, port: int, path: str = "/") -> str:
    """http://HOST:PORT/PATH with IPv6 addresses in brackets."""
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass  # a name, not an address
    return f"http://{host}:{port}{path}"


@dataclasses.dataclass(frozen=True)
class Result:
    """One request: status and body, or the error kind (reset/refused/timeout/closed/error)."""

    worker: int
    seq: int
    t: float
    latency_ms: float
    status: int | None
    body: str
    error: str | None
    detail: str = ""


@dataclasses.dataclass(frozen=True)
class Results:
    """All requests of one run, in start order, and the script's summary counts."""

    url: str
    results: tuple[Result, ...]
    summary: dict[str, Any]

    @property
    def ok(self) -> list[Result]:
        return [r for r in self.results if r.error is None]

    def errors(self, kind: str | None = None) -> list[Result]:
        """Failed requests, all or of one KIND."""
        return [r for r in self.results if r.error and (kind is None or r.error == kind)]

    def bodies(self) -> list[str]:
        return [r.body for r in self.ok]

    def describe(self) -> str:
        """A one-line account for assertion messages."""
        kinds = {k: self.summary.get(k, 0) for k in ERROR_KINDS if self.summary.get(k)}
        first = self.errors()[:3]
        return f"{self.url}: {self.summary.get('ok', 0)} ok, errors {kinds}, e.g. {first}"


def parse(output: str | bytes) -> Results:
    """Results from httpload.py's JSON output."""
    try:
        doc = json.loads(output)
        results = tuple(Result(**r) for r in doc["results"])
        return Results(doc["url"], results, doc["summary"])
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"unexpected httpload output {output[:200]!r}") from err


def command(
    target: str,
    count: int = 1,
    concurrency: int = 1,
    interval: float = 0.0,
    timeout: float = 5.0,
    keep_alive: bool = False,
    headers: Sequence[str] = (),
    duration: float | None = None,
    netns: str | None = None,
) -> list[str]:
    """The argv that runs httpload.py in the node (in the node's network namespace NETNS)."""
    argv = ["ip", "netns", "exec", netns] if netns else []
    argv += ["python3", SCRIPT_IN_NODE, target, f"--count={count}"]
    argv += [f"--concurrency={concurrency}", f"--interval={interval}", f"--timeout={timeout}"]
    if keep_alive:
        argv.append("--keep-alive")
    if duration is not None:
        argv.append(f"--duration={duration}")
    argv += [f"--header={h}" for h in headers]
    return argv


def _run_budget(count: int, interval: float, timeout: float, duration: float | None) -> float:
    # Worst case per request: connect, send and read each up to TIMEOUT, plus the interval.
    per_worker = (
        duration + 3 * timeout if duration is not None else count * (3 * timeout + interval)
    )
    return per_worker + 30.0


def get(node: Any, target: str, **options: Any) -> Results:
    """Run the requests (options as for `command`) in NODE and wait for the results."""
    budget = _run_budget(
        options.get("count", 1),
        options.get("interval", 0.0),
        options.get("timeout", 5.0),
        options.get("duration"),
    )
    proc = node.run(command(target, **options), timeout=budget)
    if proc.returncode != 0:
        raise RuntimeError(f"httpload in the node exited {proc.returncode}: {proc.stderr!r}")
    return parse(proc.stdout)


_background = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="http")


def start(node: Any, target: str, **options: Any) -> concurrent.futures.Future[Results]:
    """Like `get`, in the background: call .result(timeout) on the returned future."""
    return _background.submit(get, node, target, **options)
