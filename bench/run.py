#!/usr/bin/env python3
"""zeropod side by side with raw CRIU, a cold start and plain runc, on the node test-bed.

`make bench` (full: 5, 100 and 500 MB, N=7 interleaved repetitions) or `make bench-quick`
(5 MB, N=2: keeps the suite from rotting; no number ever fails it). Prints one progress line
per step and writes bench/results/latest.json, latest.md and latest.png.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import probes, report, wakesteps  # noqa: E402
from bench.density import density  # noqa: E402
from bench.soak import soak  # noqa: E402
from bench.wakes import wake_and_checkpoint  # noqa: E402
from e2e import http, servers  # noqa: E402
from e2e.cri import ContainerSpec, Cri, RunningPod, wait_for  # noqa: E402
from e2e.images import APP_PORT  # noqa: E402
from e2e.node import Node  # noqa: E402
from e2e.scaling import (  # noqa: E402
    CLIENT_NETNS,
    Daemon,
    annotations,
    client_get,
    client_start,
    ensure_client_netns,
)
from zeropod.contract.protocol import ControlError  # noqa: E402

SECTIONS = ("wake", "cold", "resets", "throughput", "storm", "density", "servers", "soak")
ASLEEP_UNTIL_FORCED = annotations(scaledown_duration="10m")


class Bench:
    def __init__(self, node: Node, cri: Cri, reps: int, quick: bool) -> None:
        self.node, self.cri, self.reps, self.quick = node, cri, reps, quick
        self.daemon = Daemon(node, timeout=120)
        self.measures: list[dict[str, Any]] = []
        self.started = time.monotonic()

    def step(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {text}", flush=True)

    @contextlib.contextmanager
    def pod(
        self,
        image: str,
        env: dict[str, str] | None = None,
        handler: str = "zeropod",
        pod_ann: dict[str, str] | None = None,
    ) -> Iterator[tuple[RunningPod, str, str]]:
        """A pod of IMAGE; yields (pod, container id, URL) once it answers a real client."""
        name = f"bench-{image}-{uuid.uuid4().hex[:6]}"
        spec = ContainerSpec("app", image, env=env or {})
        if handler == "zeropod":
            pod_ann = pod_ann or ASLEEP_UNTIL_FORCED
        with self.cri.pod(name, [spec], runtime_handler=handler, annotations=pod_ann) as running:
            ensure_client_netns(self.node)
            cid = running.containers["app"]
            if handler == "zeropod":
                self.daemon.wait_state(cid, "RUNNING", timeout=120)
            url = http.url(self.cri.pod_ip(running.pod), APP_PORT)
            wait_for(
                lambda: client_get(self.node, url, timeout=30).ok,
                120,
                interval=0.2,
                what=f"{name} answering",
            )
            yield running, cid, url

    def sleep(self, running: RunningPod, cid: str) -> dict[str, Any]:
        """Sleep the pod and wait until it is settled asleep: the shim's clean-up after the
        dump (the runc task delete, which frees the app's memory) is done, as it is for a
        pod asleep since its scale-down. A wake right after a sleep would wait for it (the
        breakdown's restoring->shim_restoring), which raw runc restore never does: its
        checkpoint returns after the delete."""
        probes.quiet_disk(self.node, cid)
        cursor = probes.journal_cursor(self.node)
        self.daemon.sleep(running.pod.name, running.pod.namespace)
        info = self.daemon.wait_state(cid, "SCALED_DOWN", timeout=120)
        settled = f"container {cid}: asleep, clean-up after the dump"
        wait_for(
            lambda: any(
                settled in str(e.get("MESSAGE", ""))
                for e in probes.journal_after(self.node, cursor)
            ),
            60,
            interval=0.05,
            what=f"{running.pod.name} settled asleep",
        )
        return info

    def wake(self, cid: str, url: str, steps: list[dict[str, float]] | None = None) -> float:
        """The first request to a sleeping pod: connect to first response byte, in ms. With
        STEPS, the wake's steps from the node's journal are appended there (bench.wakesteps)."""
        cursor = probes.journal_cursor(self.node) if steps is not None else ""
        res = client_get(self.node, url, timeout=60)
        if not res.ok:
            raise RuntimeError(f"wake failed: {res.describe()}")
        described = self.daemon.wait_state(cid, "RUNNING", timeout=120)
        if steps is not None:
            entries = probes.journal_after(self.node, cursor)
            pod = described["pod"]
            found = wakesteps.steps(wakesteps.marks(entries, pod, cid))
            found.update(wakesteps.daemon_steps(entries, pod, cid))
            found["outside_journal"] = round(res.results[0].latency_ms - found.get("total", 0), 1)
            steps.append(found)
        return res.results[0].latency_ms

    # --- measures ----------------------------------------------------------------------

    def cold_start(self) -> None:
        z_wake, cold = [], []
        with self.pod("warmup") as (running, cid, url):
            for rep in range(1, self.reps + 1):
                self.sleep(running, cid)
                z_wake.append(self.wake(cid, url))
                cold.append(self.fresh_pod_answer_ms())
                self.step(
                    f"cold start rep {rep}/{self.reps}: wake {z_wake[-1]:.0f} ms vs "
                    f"fresh pod {cold[-1]:.0f} ms"
                )
        self.add(
            "wake_vs_cold_start",
            "ms",
            z_wake,
            cold,
            None,
            baseline_is="delete the pod, run a fresh one (runc handler) until it answers",
            app="warmup: ~2 s to build its in-memory state",
        )

    def fresh_pod_answer_ms(self) -> float:
        t0 = time.time()
        name = f"bench-cold-{uuid.uuid4().hex[:6]}"
        pod = self.cri.run_pod(name, "default", "runc", None)
        cid = None
        try:
            url = http.url(self.cri.pod_ip(pod), APP_PORT)
            poll = http._background.submit(
                probes.rawcr, self.node, "poll", url, "--netns", CLIENT_NETNS, timeout=120
            )
            cid = self.cri.create_container(pod, "app", "warmup")
            self.cri.start_container(cid)
            answered = poll.result(120)["answered_at"]
            if answered is None:
                raise RuntimeError(f"{name} never answered")
            return (answered - t0) * 1000
        finally:
            self.cri.cleanup(pod, [cid] if cid else [])

    def resets(self) -> None:
        asleep, dumping, raw = [], [], []
        counts = {"asleep": {}, "dumping": {}, "baseline": {}}
        with self.pod("counter") as (running, cid, url):
            for rep in range(1, self.reps + 1):
                self.sleep(running, cid)
                res = client_get(self.node, url, concurrency=50, timeout=30)
                asleep.append(failed(res, counts["asleep"]))
                self.daemon.wait_state(cid, "RUNNING", timeout=120)
                log = self.node.host_path(self.cri.log_file(cid))
                served = served_lines(log)
                load = http.start(
                    self.node,
                    url,
                    netns=CLIENT_NETNS,
                    concurrency=50,
                    duration=1.5,
                    interval=0.02,
                    timeout=30,
                )
                # Force the dump once the clients' requests reach the app.
                wait_for(lambda: served_lines(log) > served + 50, 60, 0.02)  # noqa: B023
                try:
                    self.daemon.sleep(running.pod.name)
                    counts["dumping"]["dumps"] = counts["dumping"].get("dumps", 0) + 1
                except ControlError:
                    counts["dumping"]["dump_refused"] = counts["dumping"].get("dump_refused", 0) + 1
                dumping.append(failed(load.result(300), counts["dumping"]))
                self.daemon.wait_state(cid, "RUNNING", timeout=120)
                r = probes.rawcr(self.node, "clients", "--image", "counter", "--clients", "50")
                raw.append(r["reset"] + r["refused"] + r["error"])
                for k, v in r.items():
                    counts["baseline"][k] = counts["baseline"].get(k, 0) + v
                self.step(
                    f"resets rep {rep}/{self.reps}: asleep {asleep[-1]} failed of 50, "
                    f"dump under load {dumping[-1]} failed, runc restore {raw[-1]} failed"
                )
        self.add(
            "resets_sleeping",
            "failed of 50",
            asleep,
            raw,
            None,
            baseline_is="50 clients during runc restore",
            totals=counts["asleep"],
            totals_baseline=counts["baseline"],
        )
        self.add(
            "resets_during_dump",
            "failed requests",
            dumping,
            (),
            None,
            baseline_is="none",
            totals=counts["dumping"],
            load="50 clients for 1.5 s, dump forced once 50 requests were served",
        )

    def throughput_and_footprint(self) -> None:
        """Paired runs, at the same time: in each slice identical clients load the zeropod
        pod and the runc pod together (the one started first alternating), so the machine's
        drift, which made 2 s slices one after the other differ by ±15 %, hits both alike.
        Both servers share the two cores fairly, so each one's req/s is what its share of
        the machine serves, and their ratio is what each request costs one against the
        other. Each rep sleeps and wakes the zeropod pod: its app is a restored one.

        The apps run with ACCESS_LOG=off. With a log line per request, each pod's runc shim
        and containerd, copying the lines to the CRI log, used more CPU than the app
        itself, and the slices measured how the scheduler shared the cores among them: one
        3 s slice's ratio varied by 9.5 % (standard deviation), against 2.9 % without.
        The daemon's CPU during the slices (its idle loop polls the loaded pod every
        second) is reported with the row."""
        seconds, slices = (1.0, 2) if self.quick else (3.0, 6)
        zp, plain, foot, foot_base, pairs, daemon_cpu = [], [], [], [], [], []
        quiet = {"ACCESS_LOG": "off"}
        with (
            self.pod("counter", quiet) as (zrun, zcid, zurl),
            self.pod("counter", quiet, handler="runc") as (rrun, _, rurl),
        ):
            daemon = probes.daemon_pid(self.node)
            for rep in range(1, self.reps + 1):
                served = {zurl: 0, rurl: 0}
                used, began = probes.cpu_seconds(self.node, daemon), time.monotonic()
                for part in range(slices):
                    order = (zurl, rurl) if (rep + part) % 2 else (rurl, zurl)
                    loads = {
                        url: client_start(
                            self.node,
                            url,
                            duration=seconds,
                            concurrency=8,
                            timeout=30,
                            keep_alive=True,
                        )
                        for url in order
                    }
                    for url, load in loads.items():
                        served[url] += len(load.result(timeout=seconds + 120).ok)
                used = probes.cpu_seconds(self.node, daemon) - used
                daemon_cpu.append(100 * used / (time.monotonic() - began))
                zp.append(served[zurl] / (seconds * slices))
                plain.append(served[rurl] / (seconds * slices))
                pairs.append(zp[-1] / plain[-1])
                foot_base.append(sum(probes.zeropod_pss(self.node, rrun.pod.id).values()))
                self.sleep(zrun, zcid)
                parts = probes.zeropod_pss(self.node, zrun.pod.id)
                foot.append(sum(parts.values()))
                self.wake(zcid, zurl)
                self.step(
                    f"throughput rep {rep}/{self.reps}: zeropod {zp[-1]:.0f} req/s vs "
                    f"runc {plain[-1]:.0f} req/s; daemon {daemon_cpu[-1]:.2f} % of a core; "
                    f"asleep footprint {foot[-1]:.1f} MB "
                    f"({', '.join(f'{k} {v:.1f}' for k, v in parts.items())})"
                )
        self.add(
            "throughput",
            "req/s",
            zp,
            plain,
            None,
            baseline_is="same image, runc handler",
            load=f"8 keep-alive clients per side, both sides at once; per rep {slices} x "
            f"{seconds:g} s",
            pair_ratios=report.summary(pairs, 3),
            pair_spread_pct=report.spread_pct(pairs),
            daemon_cpu_pct=report.summary(daemon_cpu, 2),
            app_env="ACCESS_LOG=off",
        )
        self.add(
            "footprint",
            "MB",
            foot,
            foot_base,
            None,
            baseline_is="runc shim of a running pod (runc handler)",
            daemon_mb=round(probes.daemon_pss(self.node), 1),
            template_mb=round(probes.template_pss(self.node), 1),
            note="PSS of interposer + runc shim; the daemon and the interposer template are "
            "the node's, shared by all pods",
        )

    def storm(self, pods: int = 10) -> None:
        with contextlib.ExitStack() as stack:
            running = [
                stack.enter_context(self.pod("memhog", {"MEM_MB": "5"})) for _ in range(pods)
            ]
            for r, cid, _ in running:
                self.sleep(r, cid)
            lat = self.wake_all([url for _, _, url in running])
            for _, cid, _ in running:
                self.daemon.wait_state(cid, "RUNNING", timeout=120)
        raw = probes.rawcr(
            self.node, "storm", "--image", "memhog", "--env=MEM_MB=5", "--slots", str(pods)
        )["latency_ms"]
        raw_ok = [x for x in raw if x is not None]
        self.step(
            f"storm: {len(lat)}/{pods} pods answered, slowest {max(lat, default=0):.0f} "
            f"ms; raw {len(raw_ok)}/{pods}, slowest {max(raw_ok, default=0):.0f} ms"
        )
        self.add(
            "storm_wake_latency",
            "ms",
            lat,
            raw_ok,
            5,
            pods=pods,
            answered=len(lat),
            answered_baseline=len(raw_ok),
            p99_vs_single=self.p99_vs_single(lat),
            baseline_is=f"{pods} runc restores at once",
        )

    def wake_all(self, urls: list[str]) -> list[float]:
        """One client per URL from the client netns, all in one process and past one barrier,
        so that every wake starts at the same moment (as rawcr ``storm`` starts its restores);
        the latencies (connect to first byte) of those answered."""
        answers = probes.rawcr(self.node, "wakeall", "--netns", CLIENT_NETNS, *urls, timeout=600)
        for error in answers["errors"]:
            self.step(f"a simultaneous wake failed: {error}")
        return [x for x in answers["latency_ms"] if x is not None]

    def p99_vs_single(self, latencies: list[float]) -> float | None:
        """The p99 of LATENCIES over the median wake of one 5 MB pod alone (this run's)."""
        single = next(
            (
                m["zeropod"]
                for m in self.measures
                if m["name"] == "wake_latency" and m.get("size_mb") == 5
            ),
            None,
        )
        worst = report.p99(latencies)
        return round(worst / single["median"], 3) if single and worst is not None else None

    def real_servers(self) -> None:
        """Per Debian server: zeropod's wake against the server's own cold start (a fresh
        pod, runc handler, until it answers) and against raw runc restore of its checkpoint;
        each timed from connect to the first answer of the server's own protocol."""
        for server in servers.ALL:
            uid = servers.image_uid(server.user) if server.user else None
            wake, cold, raw, dump = [], [], [], []
            with self.server_pod(server, uid) as (running, cid, ip):
                for rep in range(1, self.reps + 1):
                    dump.append(self.sleep(running, cid)["last_checkpoint_ms"])
                    wake.append(self.hello(server, ip)["latency_ms"])
                    self.daemon.wait_state(cid, "RUNNING", timeout=120)
                    cold.append(self.fresh_server_answer_ms(server, uid))
                    args = ["cycle", "--image", server.image, "--name", server.container]
                    args += ["--command", json.dumps(server.command), "--uid", str(uid or 0)]
                    raw.append(probes.rawcr(self.node, *args, *hello_args(server)))
                    self.step(
                        f"{server.container} rep {rep}/{self.reps}: wake {wake[-1]:.0f} ms vs "
                        f"cold start {cold[-1]:.0f} ms vs runc restore "
                        f"{raw[-1]['restore_answer_ms']:.0f} ms; checkpoint {dump[-1]:.0f} ms"
                    )
            self.add(
                f"server_{server.container}_wake_vs_cold_start",
                "ms",
                wake,
                cold,
                None,
                baseline_is=f"a fresh {server.container} pod (runc handler) until it answers",
                server=" ".join(server.command),
                user=server.user or "root",
            )
            self.add(
                f"server_{server.container}_wake_vs_runc_restore",
                "ms",
                wake,
                [r["restore_answer_ms"] for r in raw],
                None,
                baseline_is="runc restore (raw CRIU) of the same server, until it answers",
                checkpoint_ms=report.summary(dump),
                runc_checkpoint_ms=report.summary([r["checkpoint_ms"] for r in raw]),
            )

    @contextlib.contextmanager
    def server_pod(
        self, server: servers.Server, uid: int | None
    ) -> Iterator[tuple[RunningPod, str, str]]:
        name = f"bench-{server.container}-{uuid.uuid4().hex[:6]}"
        spec = ContainerSpec(server.container, server.image, command=list(server.command))
        spec = dataclasses.replace(spec, run_as_user=uid)
        with self.cri.pod(name, [spec], "bench", annotations=ASLEEP_UNTIL_FORCED) as running:
            ensure_client_netns(self.node)
            cid = running.containers[server.container]
            ip = self.cri.pod_ip(running.pod)
            self.hello(server, ip, poll=True)
            self.daemon.wait_state(cid, "RUNNING", timeout=120)
            yield running, cid, ip

    def hello(self, server: servers.Server, ip: str, poll: bool = False) -> dict[str, Any]:
        args = ["hello", ip, "--netns", CLIENT_NETNS, *hello_args(server)]
        answer = probes.rawcr(self.node, *args, *(["--poll"] if poll else []))
        if answer.get("answered_at") is None:
            raise RuntimeError(f"{server.container} at {ip}: {answer.get('error')}")
        return answer

    def fresh_server_answer_ms(self, server: servers.Server, uid: int | None) -> float:
        t0 = time.time()
        pod = self.cri.run_pod(
            f"bench-cold-{server.container}-{uuid.uuid4().hex[:6]}", "bench", "runc", None
        )
        cid = None
        try:
            ip = self.cri.pod_ip(pod)
            poll = http._background.submit(self.hello, server, ip, True)
            cid = self.cri.create_container(
                pod, server.container, server.image, command=server.command, run_as_user=uid
            )
            self.cri.start_container(cid)
            return (poll.result(120)["answered_at"] - t0) * 1000
        finally:
            self.cri.cleanup(pod, [cid] if cid else [])

    def add(
        self,
        name: str,
        unit: str,
        zeropod: list[float],
        baseline: list[float] | tuple[()],
        size: int | None,
        **extra: Any,
    ) -> None:
        self.measures.append(report.measure(name, unit, zeropod, baseline, size, **extra))


def hello_args(server: servers.Server) -> list[str]:
    """rawcr's options for a server's own protocol."""
    return [
        f"--port={server.port}",
        f"--send={server.hello.hex()}",
        f"--expect={server.expect.hex()}",
    ]


def served_lines(log: Path) -> int:
    """Requests the app logged as served (its CRI log, read from the host)."""
    return log.read_text().count(" served ")


def failed(res: http.Results, totals: dict[str, int]) -> int:
    totals["answered"] = totals.get("answered", 0) + len(res.ok)
    for kind in http.ERROR_KINDS:
        totals[kind] = totals.get(kind, 0) + len(res.errors(kind))
    return len(res.errors())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 MB, N=2 (what CI runs)")
    parser.add_argument("--reps", type=int, help="repetitions (default 7, quick 2)")
    parser.add_argument("--containerd", default="2.1", choices=["2.1", "1.7"])
    parser.add_argument(
        "--out", type=Path, help="where to write (default bench/results; quick: build/bench-quick)"
    )
    parser.add_argument(
        "--only",
        default="",
        help=f"comma-separated sections to run ({', '.join(SECTIONS)}); the default runs all. "
        "A partial run is for looking, not for the README",
    )
    parser.add_argument(
        "--compare",
        nargs=2,
        type=Path,
        metavar=("BEFORE.json", "AFTER.json"),
        help="print two runs' results side by side (no node needed) and exit",
    )
    args = parser.parse_args()
    if args.compare:
        before, after = (json.loads(p.read_text()) for p in args.compare)
        print(report.compare(before, after))
        return 0
    # A quick run must not overwrite the committed results of the last full run.
    args.out = args.out or REPO / ("build/bench-quick" if args.quick else "bench/results")
    args.out.mkdir(parents=True, exist_ok=True)
    reps = args.reps or (2 if args.quick else 7)
    sizes = (5,) if args.quick else (5, 100, 500)
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    only = [s for s in args.only.split(",") if s]
    if set(only) - set(SECTIONS):
        parser.error(f"--only: unknown {sorted(set(only) - set(SECTIONS))}; known: {SECTIONS}")
    node = Node.ensure_started(containerd=args.containerd)
    with Cri.for_node(node) as cri:
        bench = Bench(node, cri, reps, args.quick)
        bench.step(f"node up (containerd {args.containerd}); N={reps}, sizes {sizes} MB")
        probes.rawcr(node, "cleanup")
        sections = {
            "wake": lambda: [wake_and_checkpoint(bench, size) for size in sizes],
            "cold": bench.cold_start,
            "resets": bench.resets,
            "throughput": bench.throughput_and_footprint,
            "storm": lambda: bench.storm(3 if args.quick else 10),
            "density": lambda: density(bench, *((3, 2) if args.quick else (40, 6))),
            "servers": bench.real_servers,
            "soak": lambda: soak(bench, *((2, 10) if args.quick else (5, 200))),
        }
        try:
            for name, run in sections.items():
                if not only or name in only:
                    run()
        finally:
            probes.rawcr(node, "cleanup")
        doc = report.document(bench.measures, probes.machine(node, date, args.quick))
    report.write_json(args.out / "latest.json", doc)
    (args.out / "latest.md").write_text(report.table(doc) + "\n" + report.wake_steps(doc))
    report.chart(doc, args.out / "latest.png")
    bench.step(f"wrote {args.out}/latest.json, latest.md, latest.png")
    print(report.table(doc))
    print(report.wake_steps(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
