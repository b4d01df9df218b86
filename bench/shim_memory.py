#!/usr/bin/env python3
"""Memory per pod of the zeropod runtime: PSS of the interposer and of the runc shim behind it.

Runs PODS pods (default 3) of the counter image under the `zeropod` handler on the test node,
reads each pod's shim processes' PSS from /proc/PID/smaps_rollup inside the node, prints a table
and writes bench/results/shim_memory.json. For the record, not a pass/fail gate.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from e2e.cri import ContainerSpec, Cri  # noqa: E402
from e2e.node import Node  # noqa: E402

# How each kind of shim process shows in `ps` (the interposer runs as a python3 module).
SHIMS = {"interposer": "zeropod.shim", "runc shim": "containerd-shim-runc-v2"}


def pss_kib(node: Node, pid: int) -> int:
    text = node.run(["cat", f"/proc/{pid}/smaps_rollup"], check=True).stdout
    return next(int(line.split()[1]) for line in text.splitlines() if line.startswith("Pss:"))


def shim_pids(node: Node, pod_id: str) -> dict[str, list[int]]:
    """The pids of each kind of shim process serving POD_ID."""
    ps = node.run(["ps", "-eo", "pid,args", "--no-headers"], check=True).stdout
    found: dict[str, list[int]] = {kind: [] for kind in SHIMS}
    for line in ps.splitlines():
        pid, _, args = line.strip().partition(" ")
        for kind, binary in SHIMS.items():
            if binary in args and pod_id in args:
                found[kind].append(int(pid))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=3, help="pods to measure (default 3)")
    parser.add_argument("--containerd", default="2.1", choices=["2.1", "1.7"])
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/shim_memory.json")
    args = parser.parse_args()

    node = Node.ensure_started(containerd=args.containerd)
    samples: dict[str, list[int]] = {kind: [] for kind in SHIMS}
    with Cri.for_node(node) as cri, contextlib.ExitStack() as stack:
        for i in range(args.pods):
            running = stack.enter_context(
                cri.pod(f"bench-mem-{i}", [ContainerSpec("app", "counter")])
            )
            pids = shim_pids(node, running.pod.id)
            for kind, kind_pids in pids.items():
                if len(kind_pids) != 1:
                    raise SystemExit(
                        f"pod {running.pod.id}: expected one {kind}, found {kind_pids}"
                    )
                samples[kind].append(pss_kib(node, kind_pids[0]))
            print(
                f"  pod {i + 1}/{args.pods}: "
                + ", ".join(f"{kind} {samples[kind][-1] / 1024:.1f} MiB" for kind in SHIMS),
                flush=True,
            )

    rows = []
    print(
        f"\n{'process':<12} {'min MiB':>8} {'median':>8} {'max':>8}  (PSS per pod, n={args.pods})"
    )
    for kind, values in samples.items():
        mib = [v / 1024 for v in values]
        row = {
            "name": f"pss_{kind.replace(' ', '_')}",
            "unit": "MiB",
            "n": len(mib),
            "min": min(mib),
            "median": statistics.median(mib),
            "max": max(mib),
        }
        rows.append(row)
        print(f"{kind:<12} {row['min']:8.1f} {row['median']:8.1f} {row['max']:8.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "containerd": node.containerd,
                "pods": args.pods,
                "measures": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nwrote {args.out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
