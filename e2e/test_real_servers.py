"""Unmodified Debian servers scale to zero and wake with their state, through their own clients.

Each test puts state in through the server's own protocol from a client pod, lets the pod go
idle and sleep on its own, wakes it with the same client, and checks what that client sees:
the state is back, the process (tree) is the same one (a restore, not a cold start), and no
client failed. Names are realistic: hyphens and digits, namespaces other than ``default``.
"""

from __future__ import annotations

import concurrent.futures
import re
import uuid

import pytest

from e2e.cri import ContainerSpec, Cri
from e2e.node import Node
from e2e.scaling import Daemon, annotations
from e2e.servers import (
    HEAPSERVER,
    MEMCACHED,
    NGINX,
    POSTGRES,
    REDIS,
    Toolbox,
    restored,
    server_pod,
    toolbox,
    wait_asleep,
)

IDLE = annotations(scaledown_duration="2s")
NEVER = annotations(scaledown_duration="10m")


@pytest.fixture(scope="module")
def tools(cri: Cri) -> Toolbox:
    with toolbox(cri) as box:
        yield box


def suffix() -> str:
    return uuid.uuid4().hex[:5]


def listener_uids(node: Node, pid: int, port: int) -> set[int]:
    """Owners of the sockets listening on PORT in PID's netns (/proc/PID/net/tcp{,6})."""
    script = f"cat /proc/{pid}/net/tcp /proc/{pid}/net/tcp6"
    uids = set()
    for line in node.run(["sh", "-c", script], check=True).stdout.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 7 and fields[3] == "0A" and fields[1].endswith(f":{port:04X}"):
            uids.add(int(fields[7]))
    return uids


def tree(node: Node, pid: int) -> list[tuple[int, int, str]]:
    """(pid in the container's PID namespace, uid, name) of PID and its children.

    The in-namespace pid is what CRIU restores; the node sees new pids after a restore.
    """
    script = (
        f"for p in {pid} $(pgrep -P {pid}); do "
        "awk '/^NSpid:/ {n=$NF} /^Uid:/ {u=$2} /^Name:/ {c=$2} END {print n, u, c}' "
        "/proc/$p/status; done"
    )
    out = node.run(["sh", "-c", script], check=True).stdout
    return sorted((int(n), int(u), c) for n, u, c in (line.split() for line in out.splitlines()))


def test_postgres_as_its_own_user_keeps_rows_and_postmaster(
    node: Node, cri: Cri, daemon: Daemon, tools: Toolbox
) -> None:
    name = f"orders-db-{suffix()}"
    with server_pod(cri, daemon, tools, POSTGRES, name, "orders", IDLE) as (_, cid, ip):
        psql = f"psql -h {ip} -U postgres -v ON_ERROR_STOP=1 -Atc"
        tools.sh(f"{psql} 'CREATE TABLE orders (id serial PRIMARY KEY, item text)'")
        rows = "SELECT 'widget-' || g FROM generate_series(1, 100) g"
        tools.sh(f'{psql} "INSERT INTO orders (item) {rows}"')
        started = tools.sh(f"{psql} 'SELECT pg_postmaster_start_time()'").strip()
        before = daemon.container(cid)
        processes = tree(node, before["pid"])
        assert len(processes) >= 5
        assert {uid for _, uid, _ in processes} == {tools.uid("postgres")}
        for cycle in range(2):
            asleep = wait_asleep(daemon, cid)
            assert node.run(["test", "-d", f"/proc/{asleep['pid']}"]).returncode != 0
            # The first client wakes it: the rows and the same postmaster are there.
            out = tools.sh(f"{psql} 'SELECT count(*), pg_postmaster_start_time() FROM orders'")
            assert out.strip() == f"{100 + cycle}|{started}"
            info = restored(daemon, cid, 0)
            assert tree(node, info["pid"]) == processes
            tools.sh(f"{psql} \"INSERT INTO orders (item) VALUES ('after-wake-{cycle}')\"")


def test_redis_as_its_own_user_sleeps_with_clients_arriving_and_none_fails(
    node: Node, cri: Cri, daemon: Daemon, tools: Toolbox
) -> None:
    """runAsUser for the whole container: the listener is redis's, not root's. Every sleep,
    the first included, happens while clients keep arriving; none may fail."""
    name = f"session-cache-{suffix()}"
    with server_pod(cri, daemon, tools, REDIS, name, "cache-tier", NEVER) as (running, cid, ip):
        cli = f"redis-cli -h {ip}"
        pid = daemon.container(cid)["pid"]
        assert listener_uids(node, pid, REDIS.port) == {tools.uid("redis")}
        fill = "for i = 1, 50000 do redis.call('SET', 'key:' .. i, string.rep('x', 64)) end"
        tools.sh(f'{cli} EVAL "{fill}" 0 && {cli} SET greeting hello')
        assert tools.sh(f"{cli} DBSIZE").strip() == "50001"
        clients = 300
        loop = (
            f"fails=0; for i in $(seq 1 {clients}); do "
            f"{cli} INCR hits > /dev/null || fails=$((fails+1)); sleep 0.02; done; echo $fails"
        )
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            load = pool.submit(tools.sh, loop, 120)
            sleeps = 0
            while sleeps < 3 and not load.done():
                try:
                    daemon.sleep(running.pod.name, "cache-tier")
                except Exception as err:  # a dump refused mid-request: try again
                    assert "sleep_failed" in str(err) or "cannot sleep now" in str(err), err
                    continue
                sleeps += 1
                daemon.wait_state(cid, "RUNNING", timeout=30)
            failures = int(load.result(timeout=180).strip())
        assert sleeps >= 2, "the load ended before the pod slept twice"
        assert failures == 0
        assert tools.sh(f"{cli} GET hits").strip() == str(clients)
        assert tools.sh(f"{cli} GET greeting").strip() == "hello"
        assert tools.sh(f"{cli} DBSIZE").strip() == "50002"
        info = restored(daemon, cid, 0)
        assert info["checkpoint_errors"] <= 2 * sleeps  # refusals mid-request, retried


def _memcached(tools: Toolbox, ip: str, commands: str) -> str:
    """memcached's text protocol over bash's /dev/tcp (what its clients speak)."""
    script = f"exec 3<>/dev/tcp/{ip}/11211; printf '{commands}quit\\r\\n' >&3; timeout 5 cat <&3"
    return tools.sh(script)


def test_memcached_dropping_root_before_bind_keeps_its_items(
    node: Node, cri: Cri, daemon: Daemon, tools: Toolbox
) -> None:
    name = f"memcached-{suffix()}"
    with server_pod(cri, daemon, tools, MEMCACHED, name, "cache-tier", IDLE) as (_, cid, ip):
        pid = daemon.container(cid)["pid"]
        # It binds after dropping root: its listener belongs to memcache, not root.
        assert listener_uids(node, pid, MEMCACHED.port) == {tools.uid("memcache")}
        sets = "".join(f"set user:{i} 0 0 6\\r\\nvalue{i % 10}\\r\\n" for i in range(50))
        assert _memcached(tools, ip, sets).count("STORED") == 50
        first = _stats(_memcached(tools, ip, "stats\\r\\n"))
        for _ in range(2):
            wait_asleep(daemon, cid)
            got = _memcached(tools, ip, "get user:7\\r\\nstats\\r\\n")
            assert "VALUE user:7 0 6\r\nvalue7\r\n" in got
            stats = _stats(got)
            assert stats["pid"] == first["pid"] and stats["curr_items"] == "50"
            assert int(stats["uptime"]) >= int(first["uptime"])  # the same process lives on
            restored(daemon, cid, 0)


def _stats(text: str) -> dict[str, str]:
    return dict(re.findall(r"STAT (\S+) (\S+)", text))


def test_nginx_master_and_workers_beside_an_unscaled_sidecar(
    node: Node, cri: Cri, daemon: Daemon, tools: Toolbox
) -> None:
    """A master (root) with workers (www-data); a second container that does not scale
    keeps running while nginx sleeps. The pod name is 63 characters long."""
    name = f"storefront-web-frontend-deployment-5d8b7c9f4-{suffix()}".ljust(63, "x")[:63]
    sidecar = ContainerSpec("metrics-exporter-2", "counter", env={"PORT": "9100"})
    pod_annotations = {**IDLE, **annotations(container_names="nginx")}
    with server_pod(cri, daemon, tools, NGINX, name, "storefront", pod_annotations, [sidecar]) as (
        running,
        cid,
        ip,
    ):
        master = daemon.container(cid)["pid"]
        processes = tree(node, master)
        uids = sorted({uid for _, uid, _ in processes})
        assert uids == [0, tools.uid("www-data")] and len(processes) >= 2
        status = f"curl -fsS http://{ip}/status"
        accepts = int(tools.sh(status).splitlines()[2].split()[0])
        side = running.containers["metrics-exporter-2"]
        assert daemon.container(side)["managed"] is False
        for _ in range(2):
            wait_asleep(daemon, cid)
            assert cri.container_state(cid) == "CONTAINER_RUNNING"
            assert "count=" in tools.sh(f"curl -fsS http://{ip}:9100/")  # the sidecar
            page = tools.sh(f"curl -fsS http://{ip}/index.nginx-debian.html")
            assert "nginx" in page
            now = int(tools.sh(status).splitlines()[2].split()[0])
            assert now > accepts  # nginx's own counters went on: its memory came back
            accepts = now
            info = restored(daemon, cid, 0)
            assert tree(node, info["pid"]) == processes


def test_a_jvm_service_as_nobody_wakes_with_its_large_heap(
    node: Node, cri: Cri, daemon: Daemon, tools: Toolbox
) -> None:
    """HeapServer holds ~390 MB of live objects built at start; after a sleep its checksum
    over every entry is the same and its request count goes on: the heap came back whole."""
    name = f"catalogue-{suffix()}"
    with server_pod(cri, daemon, tools, HEAPSERVER, name, "catalogue", IDLE) as (_, cid, ip):
        pid = daemon.container(cid)["pid"]
        assert listener_uids(node, pid, HEAPSERVER.port) == {tools.uid("nobody")}
        first = _heap(tools, ip)
        assert int(first["entries"]) > 1_000_000 and first["count"] == "1"
        info = wait_asleep(daemon, cid, timeout=60)
        assert info["last_checkpoint_ms"] > 0
        woken = _heap(tools, ip)
        assert woken["checksum"] == first["checksum"] and woken["entries"] == first["entries"]
        assert woken["count"] == "2"  # the same JVM, its counter kept
        restored(daemon, cid, 0)


def _heap(tools: Toolbox, ip: str) -> dict[str, str]:
    text = tools.sh(f"curl -sS --max-time 60 http://{ip}:{HEAPSERVER.port}/", timeout=90)
    return dict(pair.split("=", 1) for pair in text.split())
