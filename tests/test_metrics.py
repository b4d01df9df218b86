"""The daemon's Prometheus metrics: fed by the event hub and the registry, served over HTTP."""

from __future__ import annotations

import asyncio
import os
import socket
import time
import urllib.request
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.daemon_fakes import World
from zeropod.config.annotations import CONTAINER_NAMES
from zeropod.contract.protocol import ControlError
from zeropod.daemon.adapters import footprint
from zeropod.daemon.api.metrics import Metrics
from zeropod.daemon.api.metricsserver import AddressError, parse_address, serve
from zeropod.daemon.lifecycle.interfaces import ShimError
from zeropod.daemon.model.pod import PodKey

POD = PodKey("shop", "web-1")
SCALED = {"zeropod.ctrox.dev/scaledown-duration": "10s"}
LABELS = {"container": "app", "pod": "web-1", "namespace": "shop"}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, keyed by name and sorted labels."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict, name: str, **labels: str) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


async def followed_world() -> tuple[World, Metrics, asyncio.Task[None]]:
    world = World()
    metrics = Metrics(world.registry)
    follower = asyncio.create_task(metrics.follow(world.service.hub))
    await until(lambda: world.service.hub.subscriber_count == 1)
    return world, metrics, follower


async def test_sleep_and_wake_show_in_every_metric() -> None:
    world, metrics, follower = await followed_world()
    try:
        app = world.register("app", annotations={**SCALED, CONTAINER_NAMES: "app"})
        world.register("side", annotations={**SCALED, CONTAINER_NAMES: "app"})  # unmanaged
        before = samples(metrics.exposition().decode())
        assert value(before, "zeropod_running", **LABELS) == 1.0
        assert value(before, "zeropod_sleeping_containers") == 0.0
        assert value(before, "zeropod_last_checkpoint_time", **LABELS) is None
        assert not any(dict(key[1]).get("container") == "side" for key in before)

        started = time.time()
        await world.sleep(POD, "test")
        app.measured.probes_answered += 2  # as the scaler counts answered probes
        await until(lambda: metrics.checkpoint.labels("app", "web-1", "shop")._sum.get() > 0)
        asleep = samples(metrics.exposition().decode())
        assert value(asleep, "zeropod_running", **LABELS) == 0.0
        assert value(asleep, "zeropod_sleeping_containers") == 1.0
        assert value(asleep, "zeropod_checkpoint_duration_seconds_count", **LABELS) == 1.0
        assert value(asleep, "zeropod_checkpoint_duration_seconds_sum", **LABELS) == 0.12
        bucket = {**LABELS, "le": "0.25"}
        assert value(asleep, "zeropod_checkpoint_duration_seconds_bucket", **bucket) == 1.0
        assert (
            value(asleep, "zeropod_checkpoint_duration_seconds_bucket", **{**LABELS, "le": "0.1"})
            == 0.0
        )
        checkpointed = value(asleep, "zeropod_last_checkpoint_time", **LABELS)
        assert checkpointed is not None and started <= checkpointed <= time.time()
        assert value(asleep, "zeropod_probes_answered_total", **LABELS) == 2.0

        await world.wake(POD, "a client", client_since=time.time() - 0.3)
        await until(lambda: metrics.restore.labels("app", "web-1", "shop")._sum.get() > 0)
        awake = samples(metrics.exposition().decode())
        assert value(awake, "zeropod_running", **LABELS) == 1.0
        assert value(awake, "zeropod_restore_duration_seconds_count", **LABELS) == 1.0
        assert value(awake, "zeropod_restore_duration_seconds_sum", **LABELS) == 0.09
        assert value(awake, "zeropod_wake_latency_seconds_count", **LABELS) == 1.0
        latency = value(awake, "zeropod_wake_latency_seconds_sum", **LABELS)
        assert latency is not None and 0.29 <= latency < 5
        assert value(awake, "zeropod_last_restore_time", **LABELS) >= checkpointed
        assert value(awake, "zeropod_checkpoint_errors_total", **LABELS) == 0.0
        assert value(awake, "zeropod_restore_errors_total", **LABELS) == 0.0
        assert app.measured.client_waiting_since is None  # only set while the wake runs
    finally:
        follower.cancel()


async def test_a_wake_without_a_client_has_no_latency() -> None:
    world, metrics, follower = await followed_world()
    try:
        world.register("app", annotations=SCALED)
        await world.sleep(POD, "test")
        await world.wake(POD, "zeropodctl wake")
        await until(lambda: metrics.restore.labels("app", "web-1", "shop")._sum.get() > 0)
        found = samples(metrics.exposition().decode())
        assert value(found, "zeropod_wake_latency_seconds_count", **LABELS) is None
    finally:
        follower.cancel()


async def test_memory_and_image_size_of_the_last_checkpoint() -> None:
    world, metrics, follower = await followed_world()
    try:
        app = world.register("app", annotations=SCALED)
        app.pid = os.getpid()  # a real process: its memory is read before the dump
        await world.sleep(POD, "test")
        found = samples(metrics.exposition().decode())
        rss = value(found, "zeropod_memory_rss_bytes", **LABELS)
        pss = value(found, "zeropod_memory_pss_bytes", **LABELS)
        assert rss is not None and pss is not None and 0 < pss <= rss
        # The fake image store's directory does not exist: no size rather than zero.
        assert value(found, "zeropod_checkpoint_image_bytes", **LABELS) is None
        app.measured.last_image_bytes = 4096
        found = samples(metrics.exposition().decode())
        assert value(found, "zeropod_checkpoint_image_bytes", **LABELS) == 4096.0
    finally:
        follower.cancel()


async def test_a_failed_sleep_counts_an_error_and_no_duration() -> None:
    world, metrics, follower = await followed_world()
    try:
        world.register("app", annotations=SCALED)
        world.shim.refusals["app"] = [ShimError("unavailable", "shim gone")]
        with pytest.raises(ControlError):
            await world.sleep(POD, "test")
        found = samples(metrics.exposition().decode())
        assert value(found, "zeropod_checkpoint_errors_total", **LABELS) == 1.0
        assert value(found, "zeropod_running", **LABELS) == 1.0
        assert value(found, "zeropod_checkpoint_duration_seconds_count", **LABELS) is None
        assert value(found, "zeropod_last_checkpoint_time", **LABELS) is None
    finally:
        follower.cancel()


async def test_errors_are_counted() -> None:
    world, metrics, follower = await followed_world()
    try:
        app = world.register("app", annotations=SCALED)
        app.measured.checkpoint_errors = 3
        app.measured.restore_errors = 1
        found = samples(metrics.exposition().decode())
        assert value(found, "zeropod_checkpoint_errors_total", **LABELS) == 3.0
        assert value(found, "zeropod_restore_errors_total", **LABELS) == 1.0
    finally:
        follower.cancel()


async def test_a_deleted_container_leaves_no_series() -> None:
    world, metrics, follower = await followed_world()
    try:
        app = world.register("app", annotations=SCALED)
        await world.sleep(POD, "test")
        await world.wake(POD, "test", client_since=time.time())
        await until(lambda: metrics.wake_latency.labels("app", "web-1", "shop")._sum.get() >= 0)
        await world.service.unregister_async(app.identity.container_id, "deleted")

        def gone() -> bool:
            text = metrics.exposition().decode()
            return 'container="app"' not in text

        await until(gone)
        assert value(samples(metrics.exposition().decode()), "zeropod_sleeping_containers") == 0
    finally:
        follower.cancel()


async def test_served_over_http_from_another_thread() -> None:
    world, metrics, follower = await followed_world()
    server = serve(metrics, "127.0.0.1", 0)
    try:
        world.register("app", annotations=SCALED)
        host, port = server.address

        def fetch() -> tuple[str, str]:
            with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as reply:
                return reply.headers["Content-Type"], reply.read().decode()

        # The scrape reads the registry on this loop, so the loop must keep running meanwhile.
        content_type, text = await asyncio.to_thread(fetch)
        assert content_type.startswith("text/plain")
        assert value(samples(text), "zeropod_running", **LABELS) == 1.0
    finally:
        await asyncio.to_thread(server.close)
        follower.cancel()


def test_a_silent_metrics_connection_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each open connection holds a thread of the daemon: a silent one must not stay."""

    from zeropod.daemon.api import metricsserver

    monkeypatch.setattr(metricsserver, "IDLE_TIMEOUT", 0.2)

    async def scenario() -> None:
        server = serve(Metrics(World().registry), "127.0.0.1", 0)
        try:
            with socket.create_connection(server.address, timeout=5) as s:
                assert await asyncio.to_thread(s.recv, 1) == b""  # closed by the server
        finally:
            await asyncio.to_thread(server.close)

    asyncio.run(scenario())


def test_an_address_in_use_raises() -> None:
    async def scenario() -> None:
        metrics = Metrics(World().registry)
        first = serve(metrics, "127.0.0.1", 0)
        try:
            with pytest.raises(OSError):
                serve(metrics, *first.address)
        finally:
            first.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("127.0.0.1:9925", ("127.0.0.1", 9925)),
        ("0.0.0.0:80", ("0.0.0.0", 80)),
        ("[::1]:9925", ("::1", 9925)),
        ("localhost:9925", ("localhost", 9925)),
        ("off", None),
        ("", None),
    ],
)
def test_parse_address(text: str, parsed: tuple[str, int] | None) -> None:
    assert parse_address(text) == parsed


@pytest.mark.parametrize("text", ["9925", ":9925", "host:", "host:x", "host:0", "host:70000"])
def test_bad_addresses_name_the_key(text: str) -> None:
    with pytest.raises(
        AddressError, match=rf"ZEROPOD_METRICS_ADDRESS={text!r}: expected HOST:PORT"
    ):
        parse_address(text)


def test_memory_of_a_process_tree() -> None:
    memory = footprint.memory(os.getpid())
    assert memory is not None and memory.rss > 1_000_000 and 0 < memory.pss <= memory.rss
    assert footprint.memory(2**22 + 7) is None  # no such process
    assert footprint.process_tree(os.getpid())[0] == os.getpid()


def test_directory_bytes(tmp_path) -> None:
    (tmp_path / "a").write_bytes(b"x" * 1000)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b").write_bytes(b"y" * 24)
    assert footprint.directory_bytes(str(tmp_path)) == 1024
    assert footprint.directory_bytes(str(tmp_path / "missing")) is None
