"""Broken images and a full image disk.

A restore that fails still brings the service back: the daemon starts the app cold.

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

import time
import uuid
from collections.abc import Callable

import pytest

from e2e import http
from e2e.cri import ContainerSpec, Cri
from e2e.faults.conftest import Fault
from e2e.faults.record import Row
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
from zeropod.contract.protocol import ControlError
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


COLD = (
    "the restore fails and is not tried again (the image is not as written); all "
    f"{CLIENTS} waiting clients answered by a cold start, counted and logged"
)


def test_failed_restore_starts_cold_and_answers_everyone(
    node: Node, cri: Cri, daemon: Daemon, fault: Fault
) -> None:
    row = fault("corrupt image", "the sleeping pod's pages-*.img removed", COLD)
    check_restore_fails_cold(node, cri, daemon, row, corrupt_image, client_timeout=20)


def test_hanging_restore_is_killed_and_starts_cold(
    node: Node, cri: Cri, daemon: Daemon, fault: Fault
) -> None:
    """Truncated pages: the shim kills CRIU at its bound; restore.log stays small."""
    row = fault(
        "truncated image",
        "the sleeping pod's pages-*.img emptied (CRIU 4.2.1 then loops)",
        "CRIU killed at the restore's bound; " + COLD,
    )
    timeout = timeouts.BASE + 30  # the bound, a cold start, a margin
    journal_says = check_restore_fails_cold(
        node, cri, daemon, row, truncate_pages, client_timeout=timeout
    )
    assert "timeout" in journal_says, journal_says


def check_restore_fails_cold(
    node: Node,
    cri: Cri,
    daemon: Daemon,
    row: Row,
    breaker: Callable[[Node, str], list[str]],
    **kw: float,
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

        started = time.monotonic()
        res = client_get(node, url, concurrency=CLIENTS, timeout=kw["client_timeout"])
        took = time.monotonic() - started
        row.clients(res)
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
        row.seen = (
            f"{len(res.ok)}/{CLIENTS} answered cold in {took:.1f} s; restore_errors 1, "
            "cold_starts 1; the next sleep and wake work"
        )
        row.not_applicable("the image is broken; a cold start")
    return failed[0]


def test_image_disk_full_during_a_dump(node: Node, cri: Cri, daemon: Daemon, fault: Fault) -> None:
    row = fault(
        "image disk full",
        f"{IMAGE_ROOT} a 16 KiB tmpfs: the dump runs out of space",
        "sleep fails; app thawed, RUNNING, serves with its state; ports released; no image",
    )
    name = f"full-{uuid.uuid4().hex[:6]}"
    pod_annotations = annotations(scaledown_duration="10m")
    with cri.pod(name, [ContainerSpec("app", "counter")], annotations=pod_annotations) as running:
        ensure_client_netns(node)
        cid = running.containers["app"]
        daemon.wait_state(cid, "RUNNING")
        url = http.url(cri.pod_ip(running.pod), APP_PORT)
        first = client_get(node, url)
        node.run(["mount", "-t", "tmpfs", "-o", "size=16k", "zeropod-full", IMAGE_ROOT], check=True)
        try:
            with pytest.raises(ControlError) as failed:
                daemon.sleep(name)
            left = node.run(["ls", "-A", IMAGE_ROOT], check=True).stdout.split()
        finally:
            node.run(["umount", IMAGE_ROOT], check=True)
        assert "the image disk has 0 KiB free" in failed.value.message, failed.value.message
        after = client_get(node, url, timeout=5)
        row.clients(first, after)
        assert after.bodies() == ["count=2\n"], after.describe()
        assert daemon.state(cid) == "RUNNING"
        assert left == [], left
        units = node.run(["systemctl", "list-units", "--no-legend", "--plain", "zeropod@*"])
        assert "socket" not in units.stdout, units.stdout
        row.seen = f"sleep failed ({failed.value.code}); RUNNING, next count=2, no image"
        row.kept(True)
