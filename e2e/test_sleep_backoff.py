"""A pod whose dump always fails backs off instead of being frozen every period.

The app is memcached started with a connection to another pod's server already open (as a
worker holding its database connection would be): CRIU refuses to dump a connected TCP
socket, every time. The journal has one line per failure naming CRIU's first error, the
waits double (2 s scale-down: 4 s, 8 s, ...), `zeropodctl status` says why and when the next
try is, and `zeropodctl sleep` tries at once.
"""

from __future__ import annotations

import uuid

from e2e.cri import ContainerSpec, Cri, wait_for
from e2e.node import Node
from e2e.scaling import Daemon, annotations, journal
from e2e.servers import IMAGE, MEMCACHED


def test_a_dump_that_always_fails_backs_off(node: Node, cri: Cri, daemon: Daemon) -> None:
    upstream = ContainerSpec("memcached", IMAGE, command=list(MEMCACHED.command))
    with cri.pod(f"upstream-cache-{uuid.uuid4().hex[:5]}", [upstream], "backend", "runc") as up:
        target = cri.pod_ip(up.pod)
        holds_connection = (
            f"until exec 3<>/dev/tcp/{target}/11211; do sleep 0.2; done 2>/dev/null; "
            "exec memcached -u memcache -l 0.0.0.0 -p 11211"
        )
        worker = ContainerSpec("report-worker-1", IMAGE, command=["bash", "-c", holds_connection])
        name = f"reports-{uuid.uuid4().hex[:5]}"
        pod_annotations = annotations(scaledown_duration="2s")
        with cri.pod(name, [worker], "analytics", annotations=pod_annotations) as running:
            cid = running.containers["report-worker-1"]
            daemon.wait_state(cid, "RUNNING")

            def failures(count: int) -> list[dict]:
                lines = [
                    e
                    for e in journal(node, f"POD={name}", "NAMESPACE=analytics", "PRIORITY=3")
                    if "sleep failed" in e.get("MESSAGE", "")
                ]
                return lines if len(lines) >= count else []

            lines = wait_for(lambda: failures(3), 60, interval=0.5, what="three failed sleeps")
            assert [float(e["NEXT_TRY_S"]) for e in lines[:3]] == [4.0, 8.0, 16.0]
            assert all("Connected TCP socket" in e["MESSAGE"] for e in lines[:3]), lines[0]
            # One line per failure, and the waits between the tries really doubled.
            stamps = [int(e["__REALTIME_TIMESTAMP"]) / 1e6 for e in lines[:3]]
            assert stamps[2] - stamps[1] >= 8.0 and stamps[1] - stamps[0] >= 4.0
            status = daemon.container(cid)
            assert status["state"] == "RUNNING" and status["sleep_backoff"]["failures"] >= 3
            shown = node.run(["zeropodctl", "status"], check=True).stdout
            assert f"analytics/{name}: sleep failed" in shown and "next try in" in shown
            assert "RUNNING (sleep failing)" in shown
            # zeropodctl sleep tries at once, whatever the back-off says.
            before = status["sleep_backoff"]["failures"]
            forced = node.run(["zeropodctl", "sleep", name, "-n", "analytics"])
            assert forced.returncode != 0 and "Connected TCP socket" in forced.stderr
            assert daemon.container(cid)["sleep_backoff"]["failures"] == before + 1
