#!/usr/bin/env python3
"""The demo: a pod under zeropod on a local node goes to sleep when idle and wakes on demand.

Run by `make demo` (after setup). Everything it does is what a user would do on a node: CRI
calls as kubelet makes them, HTTP to the pod IP from a client on the pod network, and the
daemon's own view (`zeropodctl status` reads the same control socket). Prints timings.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from e2e import http
from e2e.cri import ContainerSpec, Cri, wait_for
from e2e.images import APP_PORT
from e2e.node import Node
from e2e.scaling import Daemon, annotations, client_get, ensure_client_netns

IDLE = "3s"


def main() -> int:
    def step(what: str, t0: float) -> float:
        now = time.monotonic()
        print(f"  {what:<58} {(now - t0) * 1000:9.1f} ms", flush=True)
        return now

    print(f"zeropod demo: a pod that scales to zero after {IDLE} idle and wakes on demand")
    t = time.monotonic()
    node = Node.ensure_started(containerd="2.1")
    t = step(f"node up (containerd {node.containerd})", t)
    daemon = Daemon(node)
    pod_annotations = annotations(scaledown_duration=IDLE)
    spec = [ContainerSpec("app", "counter")]
    with Cri.for_node(node) as cri, cri.pod("demo", spec, annotations=pod_annotations) as running:
        cid = running.containers["app"]
        t = step("RunPodSandbox + CreateContainer + StartContainer", t)
        ensure_client_netns(node)
        url = http.url(cri.pod_ip(running.pod), APP_PORT)
        first = wait_for(lambda: client_get(node, url).ok, 30, interval=0.02, what="first answer")
        t = step(f"first answer: {first[0].body.strip()}", t)
        for _ in range(2):
            body = client_get(node, url).bodies()
        print(f"  GET {url} -> {body[0].strip()}")

        pid = daemon.container(cid)["pid"]
        asleep = daemon.wait_state(cid, "SCALED_DOWN", timeout=60)
        t = step(f"idle {IDLE}, then checkpointed ({asleep['last_checkpoint_ms']:.0f} ms)", t)
        gone = node.run(["test", "-d", f"/proc/{pid}"]).returncode != 0
        print(
            f"  app process {pid} {'gone: memory freed' if gone else 'still there!'};"
            f" CRI says {cri.container_state(cid)}; systemd holds port {APP_PORT}"
        )

        res = client_get(node, url, timeout=10)
        woke = daemon.wait_state(cid, "RUNNING", timeout=10)
        wake_ms = res.results[0].latency_ms
        t = step(f"wake on first request: {res.bodies()[0].strip()} (memory kept)", t)
        restore_ms = woke["last_restore_ms"]
        print(f"  {'wake as the client saw it (connect -> answer)':<58} {wake_ms:9.1f} ms")
        print(f"  {'restore (CRIU via the runc shim)':<58} {restore_ms:9.1f} ms")
        code, out, _ = cri.exec_sync(cid, ["echo", "hello from the container"])
        t = step(f"ExecSync -> {out.decode().strip()!r} (exit {code})", t)
    step("stop + remove", t)
    return 0


if __name__ == "__main__":
    sys.exit(main())
