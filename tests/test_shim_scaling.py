"""The interposer's scale-to-zero behaviour against a fake runc shim and a fake containerd.

containerd's side is a ttrpc client on the interposer's task socket; the runc shim is a fake
that dumps, kills and restores in memory; the daemon is absent (registration is best effort).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from shim_rig import CID, FAKE_SHIM_PID, RUNNING, STOPPED, Rig

from zeropod._gen.containerd.api.events import task_pb2 as ev
from zeropod._gen.containerd.runc.options import oci_pb2
from zeropod.shim import restorebound
from zeropod.shim.taskphase import TaskPhase


async def test_create_annotates_and_remembers(rig: Rig) -> None:
    pid = await rig.run_container()
    spec = json.loads((rig.tmp / "config.json").read_text())
    own = rig.tmp / "criu.d" / f"{CID}.conf"  # the container's own CRIU config, not lazy
    assert spec["annotations"]["org.criu.config"] == str(own)
    lines = own.read_text().splitlines()[1:]  # plus zeropod's options if this host's criu has them
    assert lines[:2] == ["skip-in-flight", "network-lock skip"] and "lazy-pages" not in lines
    c = rig.ctx.tracker.get(CID)
    assert c is not None and (c.phase, c.pid, c.api) == (TaskPhase.RUNNING, pid, rig.api)


async def test_wait_pending_and_state_running_across_cycles(rig: Rig) -> None:
    pid = await rig.run_container()
    stats = await rig.call("Stats", "StatsResponse", id=CID)  # remembers the metrics type
    wait = asyncio.create_task(rig.call("Wait", "WaitResponse", id=CID))
    image = str(rig.tmp / "img")
    for _cycle in range(3):
        slept = await rig.checkpoint(image_dir=image)
        assert slept["pid"] == pid
        state = await rig.call("State", "StateResponse", id=CID)
        assert (state.status, state.pid, state.bundle) == (RUNNING, pid, str(rig.tmp))
        pids = await rig.call("Pids", "PidsResponse", id=CID)
        assert [p.pid for p in pids.processes] == [pid]
        zero = await rig.call("Stats", "StatsResponse", id=CID)
        assert (zero.stats.type_url, zero.stats.value) == (stats.stats.type_url, b"")
        connect = await rig.call("Connect", "ConnectResponse", id=CID)
        assert connect.task_pid == pid and connect.shim_pid == FAKE_SHIM_PID
        woke = await rig.control.handle(rig.op("restore", image_dir=image, fallback=True))
        assert woke["cold"] is False and woke["pid"] != pid
        pid = woke["pid"]
        assert not wait.done()
    restored = rig.runc.created[-1]
    assert restored.checkpoint == image
    opts = oci_pb2.Options.FromString(restored.options.split(b"\x12", 1)[1][1:])
    assert opts.criu_work_path == image
    # the real end of the restored task reaches the pending Wait and containerd
    await rig.call("Kill", id=CID, signal=15)
    assert (await asyncio.wait_for(wait, 5)).exit_status == 143
    status = await rig.control.handle({"op": "status"})
    assert status["containers"][0]["phase"] == "exited"


async def test_kill_and_delete_while_asleep(rig: Rig) -> None:
    pid = await rig.run_container()
    wait = asyncio.create_task(rig.call("Wait", "WaitResponse", id=CID))
    image = rig.tmp / "img"
    await rig.checkpoint(image_dir=str(image))
    calls = len(rig.runc.calls)
    await rig.call("Kill", id=CID, signal=15)
    assert (await asyncio.wait_for(wait, 5)).exit_status == 143
    state = await rig.call("State", "StateResponse", id=CID)
    assert (state.status, state.exit_status) == (STOPPED, 143)
    deleted = await rig.call("Delete", "DeleteResponse", id=CID)
    assert (deleted.pid, deleted.exit_status) == (pid, 143)
    assert deleted.exited_at.seconds > 0
    assert await rig.events(2) == ["/tasks/exit", "/tasks/delete"]  # the fake runc sends none
    exit_env = next(e for e in rig.containerd.envelopes if e.topic == "/tasks/exit")
    exit_event = ev.TaskExit.FromString(exit_env.event.value)
    assert (exit_event.pid, exit_event.exit_status) == (pid, 143)
    assert rig.runc.calls[calls:] == []  # nothing restored, nothing asked of runc
    assert rig.ctx.tracker.get(CID) is None
    assert not image.exists()


async def test_failed_restore_starts_cold(rig: Rig) -> None:
    await rig.run_container()
    image = str(rig.tmp / "img")
    await rig.checkpoint(image_dir=image)
    rig.runc.fail_restore = True
    calls = len(rig.runc.calls)
    woke = await rig.control.handle(rig.op("restore", image_dir=image, fallback=True))
    assert woke["cold"] is True and "criu failed" in woke["error"] and image in woke["error"]
    assert rig.runc.calls[calls:] == ["Create", "Start", "Delete", "Create", "Start"]
    assert rig.runc.created[-1].checkpoint == ""
    assert rig.ctx.tracker.get(CID).phase is TaskPhase.RUNNING


async def test_failed_restore_without_fallback_stays_asleep(rig: Rig) -> None:
    await rig.run_container()
    image = str(rig.tmp / "img")
    await rig.checkpoint(image_dir=image)
    rig.runc.fail_restore = True
    calls = len(rig.runc.calls)
    answer = await rig.control.answer(
        json.dumps(rig.op("restore", image_dir=image, fallback=False)).encode()
    )
    assert answer["ok"] is False and answer["error"]["code"] == "restore_failed"
    assert "criu failed" in answer["error"]["message"]
    assert f"{image}/restore.log" in answer["error"]["message"]
    assert rig.runc.calls[calls:] == ["Create", "Start", "Delete"]  # no cold start
    assert rig.ctx.tracker.get(CID).phase is TaskPhase.SCALED_DOWN
    state = await rig.call("State", "StateResponse", id=CID)
    assert state.status == RUNNING  # containerd still sees it running
    woke = await rig.control.handle(rig.op("restore", image_dir=None))  # the daemon's cold start
    assert woke["cold"] is True and "error" not in woke
    assert rig.runc.created[-1].checkpoint == ""
    assert rig.ctx.tracker.get(CID).phase is TaskPhase.RUNNING


async def test_hanging_restore_is_killed_at_its_bound(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    await rig.run_container()
    image = rig.tmp / "img"
    await rig.checkpoint(image_dir=str(image))
    image.mkdir(exist_ok=True)
    (image / "restore.log").write_bytes(b"x" * (restorebound.LOG_KEEP + 10))
    killed = rig.runc.hang_restore = asyncio.Event()
    monkeypatch.setattr(restorebound, "bound_for", lambda image_dir: 0.05)

    def kill(container_id: str) -> list[int]:
        killed.set()
        return [4242]

    monkeypatch.setattr(restorebound, "kill_restore_criu", kill)
    calls = len(rig.runc.calls)
    answer = await rig.control.answer(
        json.dumps(rig.op("restore", image_dir=str(image), fallback=False)).encode()
    )
    assert answer["ok"] is False and answer["error"]["code"] == "restore_failed"
    message = answer["error"]["message"]
    assert "timeout" in message and "[4242]" in message and f"{image}/restore.log" in message
    assert rig.runc.calls[calls:] == ["Create", "Start", "Delete"]
    assert rig.ctx.tracker.get(CID).phase is TaskPhase.SCALED_DOWN
    assert (image / "restore.log").stat().st_size == restorebound.LOG_KEEP


async def test_a_restore_that_failed_from_an_intact_image_is_tried_once_more(rig: Rig) -> None:
    """CRIU killed or stuck for a moment must not cost the app its memory."""
    rig.runc.writes_image = True
    await rig.run_container()
    image = str(rig.tmp / "img")
    await rig.checkpoint(image_dir=image)
    rig.runc.restore_failures_left = 1
    calls = len(rig.runc.calls)
    woke = await rig.control.handle(rig.op("restore", image_dir=image, fallback=False))
    assert woke["cold"] is False
    assert rig.runc.calls[calls:] == ["Create", "Start", "Delete", "Create", "Start"]
    assert rig.ctx.tracker.get(CID).phase is TaskPhase.RUNNING


async def test_a_damaged_image_is_not_tried_again(rig: Rig) -> None:
    rig.runc.writes_image = True
    await rig.run_container()
    image = rig.tmp / "img"
    await rig.checkpoint(image_dir=str(image))
    (image / "pages-1.img").write_bytes(b"")  # truncated
    rig.runc.restore_failures_left = 1
    calls = len(rig.runc.calls)
    answer = await rig.control.answer(
        json.dumps(rig.op("restore", image_dir=str(image), fallback=False)).encode()
    )
    assert answer["ok"] is False and answer["error"]["code"] == "restore_failed"
    assert rig.runc.calls[calls:] == ["Create", "Start", "Delete"]
    assert rig.ctx.tracker.get(CID).phase is TaskPhase.SCALED_DOWN


async def test_the_checkpoint_replies_before_the_runc_task_is_deleted(rig: Rig) -> None:
    """Deleting the dumped runc task is clean-up, off the sleep's critical path (issue 14);
    a restore still waits for it."""
    rig.runc.writes_image = True
    await rig.run_container()
    deleted = rig.runc.hang_delete = asyncio.Event()
    image = str(rig.tmp / "img")
    async with asyncio.timeout(5):
        slept = await rig.control.handle(rig.op("checkpoint", image_dir=image))
    assert slept["pid"] and rig.ctx.tracker.get(CID).phase is TaskPhase.SCALED_DOWN
    while rig.runc.calls[-1] != "Delete":  # under way after the reply
        await asyncio.sleep(0.01)
    waking = asyncio.create_task(rig.control.handle(rig.op("restore", image_dir=image)))
    await asyncio.sleep(0.05)
    assert not waking.done() and rig.runc.calls[-1] == "Delete"  # the restore waits
    deleted.set()
    async with asyncio.timeout(5):
        woke = await waking
    assert woke["cold"] is False
    assert rig.runc.calls[-3:] == ["Delete", "Create", "Start"]
    assert rig.ctx.tracker.get(CID).image_files == {"pages-1.img": 4}


async def test_restore_clears_a_task_left_by_the_checkpoint(rig: Rig) -> None:
    await rig.run_container()
    image = str(rig.tmp / "img")
    await rig.checkpoint(image_dir=image)
    rig.runc.tasks[CID] = rig.runc.created[-1]  # as if the checkpoint's Delete had failed
    calls = len(rig.runc.calls)
    woke = await rig.control.handle(rig.op("restore", image_dir=image, fallback=True))
    assert woke["cold"] is False
    assert rig.runc.calls[calls:] == ["Create", "Delete", "Create", "Start"]


async def test_failed_checkpoint_keeps_running(rig: Rig) -> None:
    pid = await rig.run_container()
    rig.runc.fail_checkpoint = True
    answer = await rig.control.answer(
        json.dumps(rig.op("checkpoint", image_dir=str(rig.tmp / "img"))).encode()
    )
    assert answer["ok"] is False
    assert answer["error"]["code"] == "checkpoint_failed"
    assert str(rig.tmp / "img" / "dump.log") in answer["error"]["message"]
    assert "image disk" not in answer["error"]["message"]  # tmp is not nearly full
    state = await rig.call("State", "StateResponse", id=CID)
    assert (state.status, state.pid) == (RUNNING, pid)
    assert rig.ctx.tracker.get(CID).phase is TaskPhase.RUNNING


def test_a_failed_dump_on_a_nearly_full_disk_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from zeropod.shim import checkpoint

    class Full:
        f_bavail, f_frsize = 3, 4096

    monkeypatch.setattr(checkpoint.os, "statvfs", lambda path: Full())
    assert checkpoint.disk_note(str(tmp_path)) == "; the image disk has 12 KiB free"


async def test_exec_while_asleep_restores_without_daemon(rig: Rig) -> None:
    await rig.run_container()
    image = str(rig.tmp / "img")
    await rig.checkpoint(image_dir=image)
    await rig.call("Exec", id=CID, exec_id="e1")
    assert rig.runc.calls[-3:] == ["Create", "Start", "Exec"]
    assert rig.runc.created[-1].checkpoint == image
    assert rig.ctx.tracker.get(CID).phase is TaskPhase.RUNNING


async def test_stop_mode_and_cold_restore(rig: Rig) -> None:
    await rig.run_container()
    slept = await rig.checkpoint(mode="stop")
    assert slept["pid"] and "Checkpoint" not in rig.runc.calls
    woke = await rig.control.handle(rig.op("restore", image_dir=None))
    assert woke["cold"] is True and "error" not in woke


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        ({"op": "nope"}, "unknown_op"),
        ({"op": "checkpoint", "container_id": "ghost", "image_dir": "/x"}, "not_found"),
        ({"op": "checkpoint", "container_id": CID, "image_dir": "relative"}, "bad_request"),
        ({"op": "checkpoint", "container_id": CID, "image_dir": "/x", "mode": "x"}, "bad_request"),
        ({"v": 3, "op": "status"}, "unsupported_version"),
        ({"op": "restore", "container_id": CID, "fallback": "no"}, "bad_request"),
    ],
)
async def test_control_errors(rig: Rig, request_: dict, code: str) -> None:
    await rig.run_container()
    answer = await rig.control.answer(json.dumps(request_).encode())
    assert answer["ok"] is False and answer["error"]["code"] == code, answer


async def test_control_ops_at_the_wrong_time(rig: Rig) -> None:
    pid = await rig.run_container()
    assert await rig.control.handle(rig.op("restore")) == {
        "pid": pid,
        "cold": False,
        "lazy": False,
        "duration_ms": 0,
    }
    await rig.checkpoint(image_dir=str(rig.tmp / "img"))
    again = await rig.control.answer(json.dumps(rig.op("checkpoint", image_dir="/x")).encode())
    assert again["error"]["code"] == "bad_phase"
    assert "scaled_down" in again["error"]["message"]


async def test_control_socket_speaks_json_lines(rig: Rig) -> None:
    await rig.run_container()
    await rig.control.start()
    try:
        reader, writer = await asyncio.open_unix_connection(rig.control.path)
        writer.write(b'{"v": 1, "op": "status"}\nnot json\n')
        first = json.loads(await reader.readline())
        second = json.loads(await reader.readline())
        writer.close()
    finally:
        await rig.control.close()
    assert first["ok"] and first["containers"][0]["phase"] == "running"
    assert second["error"]["code"] == "bad_json"
    assert not Path(rig.control.path).exists()


async def test_only_root_may_use_the_shim_socket(rig: Rig) -> None:
    """Trust is checked with SO_PEERCRED, not left to the socket's file mode: a non-root
    peer (here as SO_PEERCRED would report it) is refused before any op."""
    await rig.run_container()
    rig.control._peer = lambda sock: (4242, 1000, 1000)
    await rig.control.start()
    try:
        reader, writer = await asyncio.open_unix_connection(rig.control.path)
        async with asyncio.timeout(5):  # refused on connect, before any request
            answer = json.loads(await reader.readline())
            assert await reader.read() == b""  # and the connection is closed
        writer.close()
    finally:
        await rig.control.close()
    assert answer["error"]["code"] == "permission_denied"


async def test_a_dump_stuck_past_its_bound_thaws_the_app(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CRIU hung mid-dump leaves the app frozen; past the bound the shim kills that CRIU,
    resumes (thaws) the task and answers checkpoint_failed: the app runs on."""
    from zeropod.contract import timeouts

    await rig.run_container()
    rig.runc.hang_checkpoint = True
    monkeypatch.setattr(timeouts, "scaled", lambda size: 0.2)
    image = str(rig.tmp / "img")
    answer = await rig.control.answer(json.dumps(rig.op("checkpoint", image_dir=image)).encode())
    assert answer["error"]["code"] == "checkpoint_failed"
    assert "Resume" in rig.runc.calls  # thawed
    assert rig.ctx.tracker.get(CID).phase is TaskPhase.RUNNING


async def test_silent_connections_to_the_shim_socket_are_closed(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """200 idle clients must not be held open: a silent one is closed after the idle
    timeout, and past the cap a connection is answered busy."""
    from zeropod.shim import control

    monkeypatch.setattr(control, "IDLE_TIMEOUT", 0.2)
    monkeypatch.setattr(control, "MAX_CONNECTIONS", 4)
    await rig.control.start()
    try:
        held = [await asyncio.open_unix_connection(rig.control.path) for _ in range(4)]
        reader, writer = await asyncio.open_unix_connection(rig.control.path)
        async with asyncio.timeout(5):
            busy = json.loads(await reader.readline())
            assert busy["error"]["code"] == "busy"
            for silent, _ in held:  # closed by the server, not by us
                assert await silent.read() == b""
        writer.close()
        for _, w in held:
            w.close()
    finally:
        await rig.control.close()
