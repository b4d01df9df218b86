"""A restore that fails still brings the service back: the daemon starts the app cold.

The image of a sleeping counter pod is broken (its memory pages removed), then clients
arrive all at once. The shim's restore fails (no fallback of its own while the daemon's
socket unit holds the ports); the daemon takes the waiting clients, releases the ports,
starts the app cold and relays them.
Every client is answered by a fresh counter, none reset or refused, and the journal says
that the restore failed and where CRIU's restore log is.

A second test truncates the pages instead, which makes CRIU 4.2.1's restore loop forever:
the shim kills that CRIU at its bound (zeropod.shim.restorebound), the same cold path
answers everyone, the journal names the timeout and restore.log stays small.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from e2e import http
from e2e.cri import ContainerSpec, Cri
from e2e.images import APP_PORT
from e2e.node import Node
from e2e.scaling import (
    Daemon,
    annotations,
    client_get,
    ensure_client_netns,
    journal,
)
from zeropod.contract import timeouts
from zeropod.daemon.adapters.images import IMAGE_ROOT

CLIENTS = 20
MAX_RESTORE_LOG = 4 << 20


def corrupt_image(node: Node, container_id: str) -> list[str]:
    """Remove the memory pages from the container's checkpoint image; the files removed.

    (A missing file fails the restore at once; for truncated ones see truncate_pages.)
    """
    image = f"{IMAGE_ROOT}/{container_id}"
    script = f"set -e; ls {image}/pages-*.img; rm {image}/pages-*.img"
    return node.run(["sh", "-c", script], check=True).stdout.split()


def truncate_pages(node: Node, container_id: str) -> list[str]:
    """Empty the image's memory pages files (CRIU 4.2.1's restorer then loops); the files."""
    image = f"{IMAGE_ROOT}/{container_id}"
    script = f"set -e; ls {image}/pages-*.img; for f in {image}/pages-*.img; do : > $f; done"
    return node.run(["sh", "-c", script], check=True).stdout.split()


def test_failed_restore_starts_cold_and_answers_everyone(
    node: Node, cri: Cri, daemon: Daemon
) -> None:
    check_restore_fails_cold(node, cri, daemon, corrupt_image, client_timeout=20)


def test_hanging_restore_is_killed_and_starts_cold(node: Node, cri: Cri, daemon: Daemon) -> None:
    """Truncated pages: the shim kills CRIU at its bound; restore.log stays small."""
    timeout = timeouts.BASE + 30  # the bound, a cold start, a margin
    journal_says = check_restore_fails_cold(
        node, cri, daemon, truncate_pages, client_timeout=timeout
    )
    assert "timeout" in journal_says, journal_says


def check_restore_fails_cold(
    node: Node, cri: Cri, daemon: Daemon, breaker: Callable[[Node, str], list[str]], **kw: float
) -> str:
    """Break the sleeping pod's image with ``breaker``; all clients answered cold.

    Returns the journal's "restore failed" message.
    """
    name = f"badimg-{uuid.uuid4().hex[:6]}"
    pod_annotations = annotations(scaledown_duration="10m")  # sleeps only when forced
    with cri.pod(name, [ContainerSpec("app", "counter")], annotations=pod_annotations) as running:
        ensure_client_netns(node)
        cid = running.containers["app"]
        daemon.wait_state(cid, "RUNNING")
        url = http.url(cri.pod_ip(running.pod), APP_PORT)
        assert client_get(node, url).bodies() == ["count=1\n"]
        assert client_get(node, url).bodies() == ["count=2\n"]

        daemon.sleep(name)
        assert daemon.state(cid) == "SCALED_DOWN"
        assert breaker(node, cid), "no pages-*.img in the image"

        res = client_get(node, url, concurrency=CLIENTS, timeout=kw["client_timeout"])
        assert not res.errors("reset") and not res.errors("refused"), res.describe()
        assert len(res.ok) == CLIENTS and not res.errors(), res.describe()
        # A cold start: the memory (count=2) is gone, the fresh counter answers them all.
        counts = sorted(int(body.strip().removeprefix("count=")) for body in res.bodies())
        assert counts == list(range(1, CLIENTS + 1)), res.bodies()

        described = daemon.wait_state(cid, "RUNNING")
        assert described["restore_errors"] == 1 and described["cold_starts"] == 1, described
        assert cri.container_state(cid) == "CONTAINER_RUNNING"
        messages = [e.get("MESSAGE", "") for e in journal(node, f"POD={name}")]
        failed = [m for m in messages if "restore failed, starting it cold" in m]
        assert failed, messages
        log_path = f"{IMAGE_ROOT}/{cid}/restore.log"
        assert log_path in failed[0], failed
        size = int(node.run(["stat", "-c", "%s", log_path], check=True).stdout)
        tail = node.run(["tail", "-c", "1500", log_path]).stdout
        assert size < MAX_RESTORE_LOG, f"{log_path}: {size} bytes, ending: {tail}"

        # Asleep and awake again: the next checkpoint and restore work as usual.
        daemon.sleep(name)
        assert client_get(node, url, timeout=15).bodies() == [f"count={CLIENTS + 1}\n"]
        daemon.wait_state(cid, "RUNNING")
        assert daemon.container(cid)["restore_errors"] == 1
    return failed[0]
