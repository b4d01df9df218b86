"""The sleep and wake sequences against fakes: the order of the steps and the failure paths
(a failed sleep never loses a container; a failed restore takes the cold path)."""

from __future__ import annotations

import pytest
from daemon_fakes import PORT, World

from zeropod.config.annotations import (
    CONTAINER_NAMES,
    DISABLE_CHECKPOINTING,
    DISABLE_LAZY_RESTORE,
)
from zeropod.contract.protocol import CHECKPOINT_FAILED, ControlError
from zeropod.contract.requests import RestartedColdRequest, WakeRequest
from zeropod.contract.shimops import TaskReply
from zeropod.daemon.lifecycle.interfaces import ShimError
from zeropod.daemon.lifecycle.wake import LAZY_MIN_BYTES
from zeropod.daemon.model.phase import Phase
from zeropod.daemon.model.pod import PodKey

KEY = PodKey("shop", "web-1")
SOCKET = "zeropod@shop_web\\x2d1.socket"


async def test_sleep_holds_the_ports_before_the_dump_then_wake_restores_before_release() -> None:
    world = World()
    app = world.register()
    answer = await world.sleep(KEY, "forced")
    assert world.rec.calls == [
        ("migrate", "/var/run/netns/web-1"),
        ("reuseport", app.pid, ()),
        ("unit_start", SOCKET, (PORT,)),
        ("copies", "/var/run/netns/web-1", (PORT,)),
        ("checkpoint", "app", "checkpoint"),
    ]
    assert answer["pod"]["state"] == "SCALED_DOWN"
    assert answer["pod"]["ports"] == ["0.0.0.0:8080"]
    assert app.phase.phase is Phase.SCALED_DOWN
    assert app.measured.last_checkpoint_ms == 120.0
    line = next(e for e in world.captured.entries if "scaled down in" in e[0])
    assert line[2]["CHECKPOINT_MS"] == "120.0" and "STEP_MIGRATE_MS" in line[2]
    assert line[2]["OBJECT_SYSTEMD_UNIT"] == "zeropod@shop_web\\x2d1.service"

    world.rec.calls.clear()
    old_pid = app.pid
    await world.wake(KEY, "test")
    assert world.rec.calls == [
        ("restore", "app", f"/images/{app.identity.container_id}"),
        ("listening", (8080,), 2),
        ("unit_stop", SOCKET),
        ("image_remove", app.identity.container_id),
    ]
    assert app.phase.phase is Phase.RUNNING and app.pid == old_pid + 1000
    line = next(e for e in world.captured.entries if "woke in" in e[0])
    assert line[2]["RESTORE_MS"] == "90.0" and "WAKE_MS" in line[2]


async def test_sleep_and_wake_are_idempotent() -> None:
    world = World()
    world.register()
    await world.wake(KEY, "already running")
    assert world.rec.calls == []
    await world.sleep(KEY, "forced")
    world.rec.calls.clear()
    await world.sleep(KEY, "again")
    assert world.rec.calls == []


async def test_a_refused_dump_is_retried_a_bounded_number_of_times() -> None:
    world = World()
    app = world.register()
    refused = ShimError(CHECKPOINT_FAILED, "Connected TCP socket")
    world.shim.refusals["app"] = [refused]
    await world.sleep(KEY, "forced")
    assert world.rec.names().count("checkpoint") == 2
    assert app.phase.phase is Phase.SCALED_DOWN

    await world.wake(KEY, "test")
    world.shim.refusals["app"] = [refused] * 3
    world.rec.calls.clear()
    with pytest.raises(ControlError) as info:
        await world.sleep(KEY, "forced")
    assert info.value.code == "sleep_failed" and "Connected TCP socket" in info.value.message
    assert world.rec.names().count("checkpoint") == 2
    assert world.rec.names()[-1] == "unit_stop"
    assert app.phase.phase is Phase.RUNNING
    assert app.measured.checkpoint_errors == 1

    # After a failed sleep the next one dumps once: a refusal that keeps coming is no
    # request in flight (an open connection to something outside the pod).
    world.rec.calls.clear()
    with pytest.raises(ControlError):
        await world.sleep(KEY, "forced")
    assert world.rec.names().count("checkpoint") == 1


async def test_a_failed_unit_start_releases_everything_and_keeps_running() -> None:
    world = World()
    app = world.register()
    world.units.fail_start = RuntimeError("bind: address in use")
    with pytest.raises(ControlError) as info:
        await world.sleep(KEY, "forced")
    assert "address in use" in info.value.message
    assert "checkpoint" not in world.rec.names()
    assert world.rec.names()[-1] == "unit_stop"
    assert app.phase.phase is Phase.RUNNING
    assert [h.phase for h in app.phase.history][-2:] == [Phase.CHECKPOINTING, Phase.RUNNING]


async def test_second_container_failing_brings_the_first_back() -> None:
    world = World()
    app = world.register("app")
    side = world.register("side")
    world.shim.refusals["side"] = [ShimError("internal", "runc said no")]
    with pytest.raises(ControlError):
        await world.sleep(KEY, "forced")
    names = world.rec.names()
    assert names.index("restore") > names.index("checkpoint")
    assert ("restore", "app", f"/images/{app.identity.container_id}") in world.rec.calls
    assert names[-1] == "unit_stop"
    assert app.phase.phase is Phase.RUNNING and side.phase.phase is Phase.RUNNING


async def test_failed_restore_cold_start_is_counted_and_total_failure_is_failed() -> None:
    world = World()
    app = world.register()
    await world.sleep(KEY, "forced")
    world.shim.restore_reply["app"] = TaskReply(pid=5, duration_ms=50, cold=True, error="criu")
    await world.wake(KEY, "test")
    assert app.phase.phase is Phase.RUNNING
    assert app.measured.restore_errors == 1 and app.measured.cold_starts == 1
    assert any("started cold instead: criu" in m for m in world.captured.messages())

    await world.sleep(KEY, "forced")
    world.shim.restore_reply["app"] = ShimError("unavailable", "shim gone")
    with pytest.raises(ControlError) as info:
        await world.wake(KEY, "test")
    assert info.value.code == "wake_failed"
    assert app.phase.phase is Phase.FAILED
    assert world.rec.names()[-1] == "unit_stop"  # ports released: refused, not hanging
    world.shim.restore_reply.pop("app")
    await world.wake(KEY, "retry")
    assert app.phase.phase is Phase.RUNNING


async def test_restores_are_lazy_from_a_size_on_unless_the_pod_opts_out() -> None:
    world = World()
    world.register()
    world.register("eager", pod="db-0", annotations={DISABLE_LAZY_RESTORE: "true"})
    world.register("small", pod="cache-0")
    sizes = {"app": LAZY_MIN_BYTES, "eager": 1 << 30, "small": LAZY_MIN_BYTES - 1}
    for key in (KEY, PodKey("shop", "db-0"), PodKey("shop", "cache-0")):
        await world.sleep(key, "forced")
        for c in world.life(key).containers():
            c.measured.last_image_bytes = sizes[c.identity.container]
        await world.wake(key, "test")
    assert world.shim.lazy == {"app": True, "eager": False, "small": False}


async def test_memory_lost_after_a_lazy_wake_is_counted_and_said() -> None:
    """The shim killed a lazily restored app whose page server failed and started it cold."""
    world = World()
    app = world.register()
    await world.sleep(KEY, "forced")
    await world.wake(KEY, "test")
    request = RestartedColdRequest(app.identity.container_id, 4242, "page server failed: exit 1")
    assert await world.service.handle(request) == {}
    assert app.pid == 4242 and app.phase.phase is Phase.RUNNING
    m = app.measured
    assert (m.page_fetch_failures, m.restore_errors, m.cold_starts) == (1, 1, 1)
    assert any(
        "restored memory lost after the wake" in m and "page server failed" in m
        for m in world.captured.messages()
    )
    with pytest.raises(ControlError) as info:
        await world.service.handle(RestartedColdRequest("nobody", 1, "x"))
    assert info.value.code == "not_found"


async def test_failed_restore_takes_the_cold_path() -> None:
    world = World()
    app = world.register()
    await world.sleep(KEY, "forced")
    world.shim.broken_images["app"] = "criu: pages-1.img truncated (CRIU log: /i/restore.log)"
    world.rec.calls.clear()
    await world.wake(KEY, "test")
    # restore without the shim's fallback while the holder listens; it fails, so the
    # waiting clients are taken, the ports released, and only then the app starts cold
    image = f"/images/{app.identity.container_id}"
    assert world.rec.calls == [
        ("restore", "app", image),
        ("unit_stop", SOCKET),
        ("restore", "app", None),
        ("listening", (8080,), 1),
    ]  # the image stays: it holds CRIU's restore log
    assert app.phase.phase is Phase.RUNNING
    assert app.measured.restore_errors == 1
    line = next(e for e in world.captured.entries if "restore failed, starting it cold" in e[0])
    assert "/i/restore.log" in line[0] and line[2]["IMAGE_DIR"] == image
    assert any("woke in" in m and "cold start" in m for m in world.captured.messages())


async def test_one_failed_restore_of_two_containers() -> None:
    world = World()
    app = world.register("app")
    side = world.register("side")
    await world.sleep(KEY, "forced")
    world.shim.broken_images["side"] = "criu failed"
    world.rec.calls.clear()
    await world.wake(KEY, "test")
    assert world.rec.calls == [
        ("restore", "app", f"/images/{app.identity.container_id}"),
        ("restore", "side", f"/images/{side.identity.container_id}"),
        ("unit_stop", SOCKET),
        ("restore", "side", None),
        ("listening", (8080,), 1),
        ("image_remove", app.identity.container_id),
    ]
    assert app.phase.phase is Phase.RUNNING and side.phase.phase is Phase.RUNNING


async def test_failed_restore_and_failed_cold_start_is_failed() -> None:
    world = World()
    app = world.register()
    await world.sleep(KEY, "forced")
    world.shim.broken_images["app"] = "criu failed"

    async def refuse_cold(container, image_dir, *, lazy=False):  # type: ignore[no-untyped-def]
        world.rec.calls.append(("restore", container.identity.container, image_dir))
        if image_dir is None:
            raise ShimError("restore_failed", "cold start: exec failed")
        raise ShimError("restore_failed", "criu failed")

    world.shim.restore = refuse_cold  # type: ignore[method-assign]
    with pytest.raises(ControlError) as info:
        await world.wake(KEY, "test")
    assert info.value.code == "wake_failed" and "cold start failed" in info.value.message
    assert app.phase.phase is Phase.FAILED
    assert world.rec.names()[-1] == "restore" and "unit_stop" in world.rec.names()


async def test_disable_checkpointing_stops_and_cold_starts() -> None:
    world = World()
    world.register(annotations={DISABLE_CHECKPOINTING: "true"})
    await world.sleep(KEY, "forced")
    assert ("checkpoint", "app", "stop") in world.rec.calls
    world.rec.calls.clear()
    await world.wake(KEY, "test")
    # A cold start cannot take over the queue: release the ports first, then start.
    assert world.rec.calls == [
        ("unit_stop", SOCKET),
        ("restore", "app", None),
        ("listening", (8080,), 1),
        ("image_remove", "id-web-1-app"),
    ]


async def test_only_named_containers_sleep_and_the_pod_wakes_for_an_exec() -> None:
    world = World()
    names = {CONTAINER_NAMES: "app"}
    app = world.register("app", annotations=names)
    side = world.register("side", annotations=names)
    await world.sleep(KEY, "forced")
    assert app.phase.phase is Phase.SCALED_DOWN and side.phase.phase is Phase.RUNNING
    assert [c[1] for c in world.rec.calls if c[0] == "checkpoint"] == ["app"]
    assert await world.service.handle(WakeRequest(side.identity.container_id)) == {}
    assert app.phase.phase is Phase.SCALED_DOWN
    await world.service.handle(WakeRequest(app.identity.container_id))
    assert app.phase.phase is Phase.RUNNING


async def test_sleep_refuses_unknown_pods_and_containers() -> None:
    world = World()
    world.register()
    with pytest.raises(ControlError) as info:
        await world.sleep(PodKey("shop", "nope"), "forced")
    assert info.value.code == "not_found"
    with pytest.raises(ControlError) as info:
        await world.sleep(KEY, "forced", container="nope")
    assert "not a scaled container" in info.value.message


async def test_delete_while_asleep_removes_unit_and_image() -> None:
    world = World()
    app = world.register()
    await world.sleep(KEY, "forced")
    world.rec.calls.clear()
    await world.service.unregister_async(app.identity.container_id, "killed while scaled down")
    assert ("image_remove", app.identity.container_id) in world.rec.calls
    assert ("unit_stop", SOCKET) in world.rec.calls
    assert world.pods.lives() == []


async def test_hyphenated_container_names_never_reach_journal_field_names() -> None:
    """Kubernetes container names are DNS labels (``web-1``): they go in CONTAINER=, and the
    step fields are fixed names, so journald (which refuses ``-`` in a field name) takes every
    line and the pod sleeps and wakes again and again."""
    import re

    world = World()
    strict = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
    refused: list[str] = []

    def journald(message: str, priority: int, fields: dict[str, str]) -> None:
        refused.extend(k for k in fields if not strict.fullmatch(k))
        world.captured(message, priority, fields)

    world.journal._sink = journald
    names = ["web-1", "a" * 63, "sidecar-2"]
    for name in names:
        world.register(container=name)
    for _ in range(3):
        await world.sleep(KEY, "forced")
        await world.wake(KEY, "test")
    assert refused == []
    woke = [f for m, _, f in world.captured.entries if "woke in" in m]
    assert sorted({f["CONTAINER"] for f in woke}) == sorted(names)
    assert all("STEP_RESTORE_MS" in f and "INVALID_FIELDS" not in f for f in woke)
    slept = [f for m, _, f in world.captured.entries if "scaled down in" in m]
    assert all("STEP_CHECKPOINT_MS" in f for f in slept) and len(slept) == 9


async def test_an_image_directory_that_cannot_be_made_fails_the_sleep_cleanly() -> None:
    """A full disk: the pod runs on, its ports are released, the failure is one line."""
    world = World()
    app = world.register()

    def full(container_id: str) -> str:
        raise OSError(28, "No space left on device")

    world.images.prepare = full  # type: ignore[method-assign]
    with pytest.raises(ControlError) as info:
        await world.sleep(KEY, "idle")
    assert "No space left on device" in info.value.message
    assert app.phase.phase is Phase.RUNNING
    assert world.rec.names()[-1] == "unit_stop" and "checkpoint" not in world.rec.names()
    assert world.life(KEY).ports.ports == ()
