"""A pod's life as state objects: every state's operations, legal and illegal, on fakes."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import socket
import tempfile

import pytest
from daemon_fakes import World

from zeropod.contract.protocol import CONFLICT, ControlError
from zeropod.daemon.lifecycle import states
from zeropod.daemon.lifecycle.interfaces import ShimError
from zeropod.daemon.lifecycle.podlife import PodLife
from zeropod.daemon.lifecycle.states import (
    ASLEEP,
    FAILED,
    GOING_TO_SLEEP,
    RUNNING,
    WAKING,
    IllegalOperation,
    at_rest,
)
from zeropod.daemon.model.phase import Phase
from zeropod.daemon.model.pod import PodKey

KEY = PodKey("shop", "web-1")
# Written out by hand from DESIGN.md's sleep and wake, not read from the table.
MOVES = [
    (RUNNING, GOING_TO_SLEEP),
    (GOING_TO_SLEEP, ASLEEP), (GOING_TO_SLEEP, RUNNING), (GOING_TO_SLEEP, FAILED),
    (ASLEEP, WAKING),
    (WAKING, RUNNING), (WAKING, FAILED),
    (FAILED, WAKING),
]  # fmt: skip
ALL = [RUNNING, GOING_TO_SLEEP, ASLEEP, WAKING, FAILED]


def pod(*names: str) -> tuple[World, PodLife]:
    world = World()
    for name in names or ("app",):
        world.register(name)
    return world, world.life(KEY)


def test_the_moves_are_exactly_the_expected_ones() -> None:
    table = {(a, b) for a, targets in states.MOVES.items() for b in targets}
    assert table == set(MOVES)


@pytest.mark.parametrize(("source", "target"), list(itertools.product(ALL, ALL)))
def test_a_move_outside_the_table_names_both_states(source, target) -> None:
    _, life = pod()
    life.state = source
    if (source, target) in MOVES:
        life._move(target)
        assert life.state is target
        return
    with pytest.raises(IllegalOperation) as info:
        life._move(target)
    assert source.name in info.value.message and target.name in info.value.message
    assert life.state is source


def test_the_state_at_rest_follows_the_containers() -> None:
    R, S, F = Phase.RUNNING, Phase.SCALED_DOWN, Phase.FAILED
    assert at_rest([R, R]) is RUNNING and at_rest([]) is RUNNING
    assert at_rest([S, S]) is ASLEEP
    assert at_rest([S, R]) is FAILED and at_rest([F]) is FAILED and at_rest([S, F]) is FAILED


@pytest.mark.parametrize("state", [GOING_TO_SLEEP, WAKING])
@pytest.mark.parametrize("operation", ["sleep", "wake"])
async def test_sequences_cannot_start_in_a_state_between_two(state, operation) -> None:
    """Under the lock these states are never seen; called anyway, they refuse by name."""
    world, life = pod()
    life.state = state
    with pytest.raises(IllegalOperation) as info:
        if operation == "sleep":
            await state.sleep(life, "test")
        else:
            await state.wake(life, "test", None, None)
    assert info.value.code == CONFLICT
    assert info.value.message == f"pod shop/web-1 is {state.name}: {operation} is not legal there"
    assert world.rec.calls == []


async def test_running_sleeps_through_going_to_sleep_and_a_wake_is_nothing() -> None:
    world, life = pod()
    seen: list[states.PodState] = []
    checkpoint = world.shim.checkpoint

    async def observe(container, image_dir, mode):  # type: ignore[no-untyped-def]
        seen.append(life.state)
        return await checkpoint(container, image_dir, mode)

    world.shim.checkpoint = observe  # type: ignore[method-assign]
    await life.wake("nothing to wake")
    assert world.rec.calls == [] and life.state is RUNNING
    await life.sleep("idle")
    assert seen == [GOING_TO_SLEEP] and life.state is ASLEEP


async def test_asleep_wakes_through_waking_and_a_sleep_is_nothing() -> None:
    world, life = pod()
    await life.sleep("idle")
    world.rec.calls.clear()
    await life.sleep("again")
    assert world.rec.calls == [] and life.state is ASLEEP
    seen: list[states.PodState] = []
    restore = world.shim.restore

    async def observe(container, image_dir, *, lazy=False):  # type: ignore[no-untyped-def]
        seen.append(life.state)
        return await restore(container, image_dir, lazy=lazy)

    world.shim.restore = observe  # type: ignore[method-assign]
    await life.wake("a client")
    assert seen == [WAKING] and life.state is RUNNING


async def test_failed_may_only_wake() -> None:
    world, life = pod("app", "side")
    await life.sleep("idle")
    world.shim.restore_reply["side"] = ShimError("unavailable", "shim gone")
    with pytest.raises(ControlError):
        await life.wake("a client")
    assert life.state is FAILED
    with pytest.raises(IllegalOperation) as info:
        await life.sleep("idle")
    assert "is failed: sleep is not legal" in info.value.message
    world.shim.restore_reply.clear()
    await life.wake("again")
    assert life.state is RUNNING and [c.phase.phase for c in life.containers()] == [
        Phase.RUNNING,
        Phase.RUNNING,
    ]


async def test_the_copies_are_taken_once_the_unit_listens_and_closed_after_it_stopped() -> None:
    world, life = pod()
    await life.sleep("idle")
    copies = life.ports.copies
    assert copies is not None and not copies.closed
    names = world.rec.names()
    assert names.index("copies") == names.index("unit_start") + 1
    assert names.index("copies") < names.index("checkpoint")  # watched before the dump
    await life.wake("a client")
    assert copies.closed and life.ports.copies is None
    names = world.rec.names()
    assert names.index("unit_stop") > names.index("restore")


async def test_copies_that_cannot_be_taken_fail_the_sleep_and_the_app_keeps_running() -> None:
    world, life = pod()
    world.network.fail_copies = OSError("pid 1 listens on 0 of the 1 held addresses")
    with pytest.raises(ControlError) as info:
        await life.sleep("idle")
    assert "0 of the 1 held addresses" in info.value.message
    assert life.state is RUNNING and not life.ports.held and life.ports.copies is None
    assert "checkpoint" not in world.rec.names()
    assert world.rec.names()[-1] == "unit_stop"


async def test_forget_waits_for_the_running_sequence_and_drops_an_empty_pod() -> None:
    world, life = pod()
    gate = asyncio.Event()
    checkpoint = world.shim.checkpoint

    async def slow(container, image_dir, mode):  # type: ignore[no-untyped-def]
        await gate.wait()
        return await checkpoint(container, image_dir, mode)

    world.shim.checkpoint = slow  # type: ignore[method-assign]
    sleeping = asyncio.create_task(life.sleep("idle"))
    await asyncio.sleep(0)
    while not life.lock.locked():
        await asyncio.sleep(0)
    app = life.containers()[0]
    forgetting = asyncio.create_task(
        world.service.unregister_async(app.identity.container_id, "deleted")
    )
    await asyncio.sleep(0.01)
    assert not forgetting.done() and world.pods.find(KEY) is life  # the lock is the sleep's
    gate.set()
    await asyncio.gather(sleeping, forgetting, return_exceptions=True)
    assert world.pods.find(KEY) is None and world.net.closed == 1
    assert world.rec.names()[-1] == "unit_stop"


async def test_an_interrupted_wake_leaves_no_container_restoring() -> None:
    """A wake cancelled mid-restore (the daemon stopping, a client gone) must not strand a
    container in RESTORING, where no later wake would pick it up: it is FAILED, and the next
    wake brings it back."""
    world, life = pod()
    await life.sleep("idle")
    gate = asyncio.Event()
    restore = world.shim.restore

    async def hang(container, image_dir, *, lazy=False):  # type: ignore[no-untyped-def]
        await gate.wait()
        return await restore(container, image_dir, lazy=lazy)

    world.shim.restore = hang  # type: ignore[method-assign]
    waking = asyncio.create_task(life.wake("a client"))
    while not life.lock.locked():
        await asyncio.sleep(0)
    await asyncio.sleep(0.01)
    waking.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waking
    assert [c.phase.phase for c in life.containers()] == [Phase.FAILED]
    assert life.state is FAILED and not life.lock.locked()
    gate.set()
    await life.wake("the next client")
    assert [c.phase.phase for c in life.containers()] == [Phase.RUNNING]
    assert life.state is RUNNING


async def test_an_interrupted_sleep_leaves_no_container_checkpointing() -> None:
    world, life = pod()
    gate = asyncio.Event()

    async def hang(container, image_dir, mode):  # type: ignore[no-untyped-def]
        await gate.wait()

    world.shim.checkpoint = hang  # type: ignore[method-assign]
    sleeping = asyncio.create_task(life.sleep("idle"))
    while not life.lock.locked():
        await asyncio.sleep(0)
    await asyncio.sleep(0.01)
    sleeping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sleeping
    # The shim may or may not have dumped it: FAILED, so that a wake asks the shim (which
    # answers at once for a task that still runs).
    assert [c.phase.phase for c in life.containers()] == [Phase.FAILED]
    assert life.state is FAILED


async def test_the_idle_loop_wakes_a_failed_pod_again_with_back_off() -> None:
    """A restore that timed out left the pod FAILED; nothing else may come for it (its ports
    are released), so the idle loop retries the wake, backing off, until it runs."""
    from zeropod.daemon.lifecycle.idle import IdleLoops

    world, life = pod()
    await life.sleep("idle")
    world.shim.restore_reply["app"] = ShimError("unavailable", "no answer in 55 s")
    with pytest.raises(ControlError):
        await life.wake("a client")
    assert life.state is FAILED
    loops = IdleLoops(world.pods, world.journal, tuple, interval=0.01)
    loops.ensure(KEY)
    try:
        async with asyncio.timeout(5):
            while life.wake_retry.failures == 0:
                await asyncio.sleep(0.01)
        assert life.state is FAILED and not life.wake_retry.ready()  # backing off
        world.shim.restore_reply.clear()
        life.wake_retry.next_try = None  # the back-off has passed
        async with asyncio.timeout(5):
            while life.state is not RUNNING:
                await asyncio.sleep(0.01)
        assert life.wake_retry.failures == 0
        assert [c.phase.phase for c in life.containers()] == [Phase.RUNNING]
    finally:
        await loops.close()


async def test_the_idle_loop_does_not_poll_a_sleeping_pod() -> None:
    """Asleep, the loop waits for the pod's state to change (or its shims' check, every
    SHIM_CHECK_POLLS intervals); a wake ends that wait at once."""
    from zeropod.daemon.lifecycle.idle import IdleLoops

    world, life = pod()
    running = IdleLoops(world.pods, world.journal, tuple, interval=0)
    await running._rest(life)  # running: one interval, here none
    await life.sleep("idle")
    loops = IdleLoops(world.pods, world.journal, tuple, interval=100)
    # The fake shim socket has no process behind it: the first rest returns at once (its
    # check is due), later ones wait (test_daemon_shimexit: a real shim is waited on).
    await asyncio.wait_for(loops._rest(life), 1)
    rest = asyncio.create_task(loops._rest(life))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not rest.done()  # asleep: no poll for 100 s x SHIM_CHECK_POLLS
    await life.wake("a client")
    async with asyncio.timeout(1):
        await rest  # the wake moved the state: the loop polls again at once


async def test_an_unregister_during_a_wake_waits_for_it() -> None:
    """The shim says the task ended while the pod wakes: the wake ends first (no illegal
    transition from STOPPED), then the container is STOPPED and the pod forgotten."""
    world, life = pod()
    await life.sleep("idle")
    gate = asyncio.Event()
    restore = world.shim.restore

    async def slow(container, image_dir, *, lazy=False):  # type: ignore[no-untyped-def]
        await gate.wait()
        return await restore(container, image_dir, lazy=lazy)

    world.shim.restore = slow  # type: ignore[method-assign]
    app = life.containers()[0]
    waking = asyncio.create_task(life.wake("a client"))
    while not life.lock.locked():
        await asyncio.sleep(0)
    leaving = asyncio.create_task(
        world.service.unregister_async(app.identity.container_id, "exited")
    )
    await asyncio.sleep(0.01)
    assert app.phase.phase is Phase.RESTORING and not leaving.done()
    gate.set()
    await asyncio.gather(waking, leaving)
    assert app.phase.phase is Phase.STOPPED and world.pods.find(KEY) is None
    assert not [m for m in world.captured.messages() if "illegal" in m]


async def test_a_container_whose_shim_died_is_forgotten_with_its_unit_and_image(
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    """An interposer killed (SIGKILL leaves its socket file): containerd drops the task and
    tells nobody. The idle loop finds nothing listening on the shim's socket and forgets the
    container: its image, socket unit and held ports do not outlive it. A live shim's
    container is kept."""
    from zeropod.daemon.lifecycle import idle

    short = tempfile.mkdtemp(prefix="zp-", dir="/tmp")
    dead_path, live_path = os.path.join(short, "dead.sock"), os.path.join(short, "live.sock")
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(dead_path)  # bound, never listening: what a killed shim leaves
    live = socket.socket(socket.AF_UNIX)
    live.bind(live_path)
    live.listen()
    world = World()
    orphan = world.register("app", pod="orphan", shim_socket=dead_path)
    kept = world.register("app", pod="kept", shim_socket=live_path)
    await world.sleep(PodKey.of(orphan), "idle")
    world.rec.calls.clear()
    loops = idle.IdleLoops(
        world.pods, world.journal, tuple, interval=0.01, on_gone=world.service.unregister_async
    )
    loops.ensure(PodKey.of(orphan))
    loops.ensure(PodKey.of(kept))
    try:
        async with asyncio.timeout(5):
            while world.registry.get(orphan.identity.container_id) is not None:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # more checks: the live one stays
    finally:
        await loops.close()
        dead.close()
        live.close()
        shutil.rmtree(short, ignore_errors=True)
    assert ("unit_stop", PodKey.of(orphan).socket) in world.rec.calls
    assert ("image_remove", orphan.identity.container_id) in world.rec.calls
    assert world.pods.find(PodKey.of(orphan)) is None
    assert world.registry.get(kept.identity.container_id) is kept


async def test_a_pods_containers_turn_running_together() -> None:
    """Status must never show one container woken and its sibling still restoring: every
    container is RUNNING before the wake's first await after the restores (its images go
    after)."""
    world, life = pod("app", "side")
    await life.sleep("idle")
    seen: list[list[Phase]] = []
    remove = world.images.remove

    def observe(container_id: str) -> None:
        seen.append([c.phase.phase for c in life.containers()])
        remove(container_id)

    world.images.remove = observe  # type: ignore[method-assign]
    await life.wake("a client")
    assert seen == [[Phase.RUNNING, Phase.RUNNING]] * 2
