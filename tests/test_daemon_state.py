"""State files: the round trip, recovery of interrupted transitions, and the reload at start."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from pathlib import Path

from daemon_fakes import World

from zeropod.config.annotations import PORTS_MAP
from zeropod.daemon.adapters.statefiles import (
    StateStore,
    from_json,
    pid_alive,
    recovered_phase,
    to_json,
)
from zeropod.daemon.model.phase import Phase
from zeropod.daemon.model.pod import HeldPort, PodKey

HELD = (HeldPort(socket.AF_INET6, "::", 8080, True), HeldPort(socket.AF_INET, "0.0.0.0", 81, False))


def test_round_trip(tmp_path: Path) -> None:
    world = World()
    app = world.register(annotations={PORTS_MAP: "app=8080"})
    app.phase.transition(Phase.CHECKPOINTING, "idle")
    app.phase.transition(Phase.SCALED_DOWN, "checkpointed")
    app.measured.last_checkpoint_ms = 123.4
    saved = from_json(json.loads(json.dumps(to_json(app, HELD))))
    assert saved.identity == app.identity
    assert saved.identity.shim_socket == "/run/zeropod/shim/x.sock"
    assert saved.phase is Phase.SCALED_DOWN and saved.pid == app.pid
    assert saved.annotations == {PORTS_MAP: "app=8080"}
    assert saved.held_ports == HELD and saved.last_checkpoint_ms == 123.4


def test_recovered_phase() -> None:
    assert recovered_phase(Phase.SCALED_DOWN, alive=False) is Phase.SCALED_DOWN
    assert recovered_phase(Phase.RUNNING, alive=True) is Phase.RUNNING
    assert recovered_phase(Phase.CHECKPOINTING, alive=True) is Phase.RUNNING
    assert recovered_phase(Phase.CHECKPOINTING, alive=False) is Phase.SCALED_DOWN
    assert recovered_phase(Phase.RESTORING, alive=False) is Phase.SCALED_DOWN
    assert pid_alive(os.getpid()) and not pid_alive(2**22 + 1)


async def test_service_saves_on_every_transition_and_a_new_daemon_reloads(tmp_path: Path) -> None:
    world = World()
    world.service.store = StateStore(str(tmp_path))
    app = world.register()
    path = tmp_path / f"{app.identity.container_id}.json"
    assert json.loads(path.read_text())["phase"] == "RUNNING"
    await world.sleep(PodKey.of(app), "forced")
    assert json.loads(path.read_text())["phase"] == "SCALED_DOWN"
    assert json.loads(path.read_text())["held_ports"][0]["port"] == 8080
    (tmp_path / "garbage.json").write_text("{")

    errors: list[str] = []
    again = World()
    for saved in StateStore(str(tmp_path)).load(errors.append):
        again.service.restore_container(saved.identity, saved.pid, saved.annotations, saved.phase)
    assert len(errors) == 1 and "garbage.json" in errors[0]
    assert not (tmp_path / "garbage.json").exists()
    reloaded = again.registry.get(app.identity.container_id)
    assert reloaded is not None and reloaded.phase.phase is Phase.SCALED_DOWN
    assert reloaded.managed and reloaded.unit == app.unit
    await again.wake(PodKey.of(reloaded), "traffic after a restart")
    assert reloaded.phase.phase is Phase.RUNNING

    await world.service.unregister_async(app.identity.container_id)
    assert not path.exists()


class ShimTruth:
    """The shims' answers to ``status`` after a restart, by container name."""

    def __init__(self, answers: dict[str, object]) -> None:
        self.answers = answers

    async def task_status(self, identity):  # type: ignore[no-untyped-def]
        answer = self.answers[identity.container]
        if isinstance(answer, Exception):
            raise answer
        return answer


async def test_after_a_restart_the_shims_say_what_is_true(tmp_path: Path) -> None:
    """The state files are a guess; each shim's status wins. A pod woken by its shim alone
    while the daemon was down runs (its held ports are released), a task the shim no longer
    has is forgotten, one mid-dump is FAILED (the next wake asks again), and a shim that does
    not answer leaves the file's guess."""
    from zeropod.contract.shimops import TaskStatus
    from zeropod.daemon.lifecycle.interfaces import ShimError
    from zeropod.daemon.restart import reload

    shim_socket = str(tmp_path / "shim.sock")
    open(shim_socket, "w").close()
    store = StateStore(str(tmp_path / "state"))
    before = World()
    before.service.store = store
    woken = before.register("app", pod="woken", shim_socket=shim_socket)
    gone = before.register("app", pod="gone", shim_socket=shim_socket)
    mid = before.register("mid", pod="mid", shim_socket=shim_socket)
    quiet = before.register("quiet", pod="quiet", shim_socket=shim_socket)
    for container in (woken, gone, quiet):
        await before.sleep(PodKey.of(container), "forced")
    mid.phase.transition(Phase.CHECKPOINTING, "idle")  # the daemon died mid-dump

    after = World()
    after.service.store = store
    truth = ShimTruth(
        {
            "app": None,  # replaced per pod below
            "mid": TaskStatus(mid.identity.container_id, "checkpointing", 0, mid.pid),
            "quiet": ShimError("unavailable", "no answer in 5 s"),
        }
    )

    async def by_pod(identity):  # type: ignore[no-untyped-def]
        if identity.pod == "woken":
            return TaskStatus(identity.container_id, "running", 777, 100)
        if identity.pod == "gone":
            return TaskStatus(identity.container_id, "ended", 0, 101)
        return await ShimTruth.task_status(truth, identity)

    truth.task_status = by_pod  # type: ignore[method-assign]
    await reload(after.service, truth, after.journal, mid_op_wait=0.2)

    running = after.registry.get(woken.identity.container_id)
    assert running is not None and running.phase.phase is Phase.RUNNING and running.pid == 777
    assert ("unit_stop", PodKey.of(woken).socket) in after.rec.calls  # the app listens again
    assert after.registry.get(gone.identity.container_id) is None
    assert not (tmp_path / "state" / f"{gone.identity.container_id}.json").exists()
    failed = after.registry.get(mid.identity.container_id)  # still mid-op after the wait
    assert failed is not None and failed.phase.phase is Phase.FAILED
    guessed = after.registry.get(quiet.identity.container_id)
    assert guessed is not None and guessed.phase.phase is Phase.SCALED_DOWN
    assert after.life(PodKey.of(guessed)).ports.held  # still asleep, its ports still held


async def test_after_a_restart_systemd_holds_the_ports_of_every_sleeping_pod_and_no_other(
    tmp_path: Path,
) -> None:
    """A sleeping pod whose socket unit is gone gets it back (its next client must still wake
    it); the unit of a pod the daemon no longer knows is stopped, its ports with it; the unit
    of a sleeping pod that still listens is left alone."""
    from zeropod.contract.shimops import TaskStatus
    from zeropod.daemon.restart import reconcile_units, reload

    shim_socket = str(tmp_path / "shim.sock")
    open(shim_socket, "w").close()
    store = StateStore(str(tmp_path / "state"))
    before = World()
    before.service.store = store
    lost = before.register("app", pod="lost", shim_socket=shim_socket)
    kept = before.register("app", pod="kept", shim_socket=shim_socket)
    for container in (lost, kept):
        await before.sleep(PodKey.of(container), "forced")

    after = World()
    after.service.store = store
    truth = ShimTruth({})

    async def scaled_down(identity):  # type: ignore[no-untyped-def]
        return TaskStatus(identity.container_id, "scaled_down", 0, 100)

    truth.task_status = scaled_down  # type: ignore[method-assign]
    await reload(after.service, truth, after.journal)
    orphan = "zeropod@default_deleted\\x2dwhile\\x2ddown.socket"
    after.units.active = {PodKey.of(kept).socket, orphan}
    after.rec.calls.clear()
    await reconcile_units(after.service, after.units, after.journal)

    held = [c for c in after.rec.calls if c[0] == "unit_start"]
    ports = after.life(PodKey.of(lost)).ports.ports
    assert ports and [(c[1], c[2]) for c in held] == [(PodKey.of(lost).socket, ports)]
    assert [c for c in after.rec.calls if c[0] == "unit_stop"] == [("unit_stop", orphan)]
    assert after.units.active == {PodKey.of(lost).socket, PodKey.of(kept).socket}


async def test_a_dump_the_daemon_died_in_is_waited_for_and_its_ports_stay_held(
    tmp_path: Path,
) -> None:
    """The daemon died while the shim dumped: the restarted daemon waits for the shim to end
    the dump, then takes the pod as asleep with the ports saved when they were held (the
    socket unit kept holding them all along: no client is refused)."""
    from zeropod.contract.shimops import TaskStatus
    from zeropod.daemon.restart import reconcile_units, reload

    shim_socket = str(tmp_path / "shim.sock")
    open(shim_socket, "w").close()
    store = StateStore(str(tmp_path / "state"))
    before = World()
    before.service.store = store
    app = before.register("app", pod="dumping", shim_socket=shim_socket)
    before.shim.hang_checkpoint = asyncio.Event()  # the daemon dies inside the dump
    sleeping = asyncio.create_task(before.sleep(PodKey.of(app), "forced"))
    while not before.shim.checkpointing:
        await asyncio.sleep(0.01)
    sleeping.cancel()

    after = World()
    after.service.store = store
    answers = iter(["checkpointing", "checkpointing", "scaled_down"])

    async def finishing(identity):  # type: ignore[no-untyped-def]
        return TaskStatus(identity.container_id, next(answers), 0, app.pid)

    truth = ShimTruth({})
    truth.task_status = finishing  # type: ignore[method-assign]
    await reload(after.service, truth, after.journal, mid_op_wait=5)
    after.units.active = {PodKey.of(app).socket}
    await reconcile_units(after.service, after.units, after.journal)

    reloaded = after.registry.get(app.identity.container_id)
    assert reloaded is not None and reloaded.phase.phase is Phase.SCALED_DOWN
    assert after.life(PodKey.of(app)).ports.held
    assert not [c for c in after.rec.calls if c[0] == "unit_stop"]


async def test_a_unit_that_cannot_be_stopped_does_not_stop_the_daemon_and_failed_pods_keep_theirs(
    tmp_path: Path,
) -> None:
    """A FAILED pod (its shim still mid-op after the wait) keeps its held ports: its wake
    releases them. A unit systemd refuses to stop is logged; the daemon starts anyway."""
    from zeropod.contract.shimops import TaskStatus
    from zeropod.daemon.restart import reconcile_units, reload

    shim_socket = str(tmp_path / "shim.sock")
    open(shim_socket, "w").close()
    store = StateStore(str(tmp_path / "state"))
    before = World()
    before.service.store = store
    stuck = before.register("app", pod="stuck", shim_socket=shim_socket)
    await before.sleep(PodKey.of(stuck), "forced")

    after = World()
    after.service.store = store
    truth = ShimTruth({})

    async def mid_op(identity):  # type: ignore[no-untyped-def]
        return TaskStatus(identity.container_id, "restoring", 0, 100)

    truth.task_status = mid_op  # type: ignore[method-assign]
    await reload(after.service, truth, after.journal, mid_op_wait=0.1)
    assert after.registry.get(stuck.identity.container_id).phase.phase is Phase.FAILED
    orphan = "zeropod@default_gone.socket"
    after.units.active = {PodKey.of(stuck).socket, orphan}
    after.units.fail_stop = RuntimeError("systemd said no")
    await reconcile_units(after.service, after.units, after.journal)
    assert [c for c in after.rec.calls if c[0] == "unit_stop"] == [("unit_stop", orphan)]
    assert any("systemd said no" in line for line in after.captured.messages())
