"""The real ``containerd-shim-zeropod-v2 start`` against a fake runc shim (no root;
the fake and the fixtures are in ``fake_runc.py``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fake_runc import gone, run_shim, wait_until

from zeropod.shim import bootstrap
from zeropod.shim.taskapi import V2, V3


@pytest.mark.parametrize("form", ["plain", "json"])
async def test_start_interposes_and_exits_with_runc_shim(
    short_tmp: Path, shim_env: dict[str, str], form: str
) -> None:
    from zeropod.ttrpc import Client

    shim_env["FAKE_FORM"] = form
    bundle = short_tmp / "b1"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps({"annotations": {}}))
    res = run_shim(shim_env, bundle, "c1", "start")
    assert res.returncode == 0, res.stderr.decode()
    assert res.stderr == b""  # containerd reads stdout and stderr together
    answer = bootstrap.parse(res.stdout)
    assert (answer.params is not None) == (form == "json")
    ours = Path(bootstrap.unix_path(answer.address))
    assert ours.parent == short_tmp / "run"
    assert (bundle / "address").read_text() == answer.address
    # the runc shim published to our events socket, not to containerd's
    start_env = json.loads((short_tmp / "state/start-env.json").read_text())
    assert start_env["TTRPC_ADDRESS"].startswith(str(short_tmp / "run"))

    # a second start of the same group (no sandbox annotation: same id) answers the same
    res2 = run_shim(shim_env, bundle, "c1", "start")
    assert res2.stdout == res.stdout

    api = V3 if form == "json" else V2
    client = await Client.connect(str(ours))
    state = api.messages.StateResponse.FromString(
        await client.call(api.service, "State", b"", timeout=5)
    )
    assert state.pid > 0
    await client.call(api.service, "Shutdown", b"", timeout=5)
    assert wait_until(lambda: group_files(short_tmp / "run") == [])
    await client.close()


def test_failed_runc_start_is_reported_and_leaves_nothing(
    short_tmp: Path, shim_env: dict[str, str]
) -> None:
    shim_env["FAKE_FAIL"] = "1"
    res = run_shim(shim_env, short_tmp / "b", "c1", "start")
    assert res.returncode == 1
    assert b"runc shim refuses" in res.stderr
    assert [p.suffix for p in (short_tmp / "run").iterdir()] == [".lock"]


def test_delete_relays_stdout_and_status(short_tmp: Path, shim_env: dict[str, str]) -> None:
    res = run_shim(shim_env, short_tmp / "b", "c1", "delete")
    assert res.returncode == 0, res.stderr.decode()
    assert V3.messages.DeleteResponse.FromString(res.stdout).exit_status == 137


def test_unknown_flags_go_to_runc_shim(short_tmp: Path, shim_env: dict[str, str]) -> None:
    bundle = short_tmp / "b"
    bundle.mkdir()
    res = subprocess.run(
        [sys.executable, "-c", "from zeropod.shim.main import main; main()", "-new-flag", "delete"],
        cwd=bundle, env=shim_env, capture_output=True, timeout=30, check=False,
    )  # fmt: skip
    assert V3.messages.DeleteResponse.FromString(res.stdout).pid == 9


def test_zeropods_criu_comes_first_on_the_runc_shims_path(short_tmp, monkeypatch) -> None:
    from zeropod.shim.launcher import runc_shim_env

    monkeypatch.setenv("PATH", "/usr/sbin:/usr/bin")
    env = runc_shim_env(short_tmp / "events.sock", str(short_tmp))
    assert env["PATH"] == "/usr/sbin:/usr/bin"  # no CRIU of zeropod's here
    (short_tmp / "criu").write_text("")
    env = runc_shim_env(short_tmp / "events.sock", str(short_tmp))
    assert env["PATH"] == f"{short_tmp}:/usr/sbin:/usr/bin"
    assert env["TTRPC_ADDRESS"] == str(short_tmp / "events.sock")


@pytest.mark.parametrize("on_shutdown", ["exits", "ignores it"])
async def test_delete_after_the_interposer_died_shuts_its_runc_shim_down(
    short_tmp: Path, shim_env: dict[str, str], on_shutdown: str
) -> None:
    """containerd only knows the interposer: once it is killed, nothing but our ``delete``
    (containerd's dead-shim cleanup) can end the runc shim, which would outlive its pod.
    containerd's runc shim ignores Shutdown while it counts containers: then it is killed."""
    if on_shutdown == "ignores it":
        shim_env["FAKE_IGNORE_SHUTDOWN"] = "1"
    bundle = short_tmp / "b1"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps({"annotations": {}}))
    res = run_shim(shim_env, bundle, "c1", "start")
    assert res.returncode == 0, res.stderr.decode()
    runc_socket = short_tmp / "state" / "runc.sock"
    assert runc_socket.exists()
    interposer = [
        int(line.split()[0])
        for line in subprocess.run(
            ["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True
        ).stdout.splitlines()
        if "zeropod.shim" in line and str(short_tmp / "run") in line
    ]
    if not interposer:  # found by its socket's owner instead
        ours = Path(bootstrap.unix_path(bootstrap.parse(res.stdout).address))
        out = subprocess.run(["fuser", str(ours)], capture_output=True, text=True)
        interposer = [int(p) for p in out.stdout.split()]
    assert len(interposer) == 1, interposer
    os.kill(interposer[0], 9)

    deleted = run_shim(shim_env, bundle, "c1", "delete")
    assert deleted.returncode == 0, deleted.stderr.decode()
    runc_pid = int((short_tmp / "state" / "serve.pid").read_text())
    assert wait_until(lambda: gone(runc_pid))
    assert [p.suffix for p in group_files(short_tmp / "run") if p.suffix != ".log"] == [".lock"]


def group_files(run_dir: Path) -> list[Path]:
    """The files of pods' groups in RUN_DIR (the node's template has its own)."""
    return [p for p in run_dir.iterdir() if not p.name.startswith("template.")]
