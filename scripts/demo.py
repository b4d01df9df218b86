#!/usr/bin/env python3
"""The demo: boot the local node, run a pod under the zeropod runtime, serve HTTP, print timings.

Run by `make demo` (after setup). Everything it does is what a user would do on a node: CRI calls
as kubelet makes them, HTTP from the node to the pod IP, then stop and remove.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from e2e.cri import ContainerSpec, Cri, wait_for
from e2e.images import APP_PORT
from e2e.node import Node


def main() -> int:
    timings: list[tuple[str, float]] = []

    def step(what: str, t0: float) -> float:
        now = time.monotonic()
        timings.append((what, (now - t0) * 1000))
        print(f"  {what:<44} {(now - t0) * 1000:9.1f} ms", flush=True)
        return now

    print("zeropod demo: a pod under the zeropod runtime on a local node")
    t = time.monotonic()
    node = Node.ensure_started(containerd="2.1")
    t = step(f"node up (containerd {node.containerd})", t)
    with (
        Cri.for_node(node) as cri,
        cri.pod("demo", [ContainerSpec("app", "counter")], start=False) as running,
    ):
        t = step("RunPodSandbox + CreateContainer (zeropod)", t)
        cid = running.containers["app"]
        cri.start_container(cid)
        t = step("StartContainer", t)
        url = f"http://{cri.pod_ip(running.pod)}:{APP_PORT}/"

        def served() -> str:
            res = node.run(["curl", "-sS", "--max-time", "2", url])
            return res.stdout if res.returncode == 0 else ""

        body = wait_for(served, 30, interval=0.02, what=f"HTTP answer from {url}")
        t = step("first HTTP answer", t)
        for _ in range(2):
            body = served()
        print(f"  GET {url} -> {body.strip()}")
        code, out, _ = cri.exec_sync(cid, ["echo", "hello from the container"])
        t = step(f"ExecSync -> {out.decode().strip()!r} (exit {code})", t)
    step("stop + remove", t)
    total = sum(ms for _, ms in timings)
    print(f"  {'total':<44} {total:9.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
