"""The real ``containerd-shim-zeropod-v2 start`` against a fake runc shim (no root).

The fake ``containerd-shim-runc-v2`` (a Python script put first on PATH) does what the real
one does at the protocol level: ``start`` spawns a detached daemon serving the task API on a
socket and prints its address (plain, or bootstrap JSON with FAKE_FORM=json); the daemon
exits on Shutdown. ``delete`` prints a DeleteResponse.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from zeropod.shim import bootstrap
from zeropod.shim.taskapi import V2, V3

REPO = Path(__file__).resolve().parent.parent

FAKE_RUNC_SHIM = textwrap.dedent(
    """\
    #!{python}
    import asyncio, json, os, subprocess, sys, time
    sys.path.insert(0, {repo!r})
    from zeropod.shim.taskapi import V2, V3
    from zeropod.ttrpc import Server

    action = sys.argv[-1]
    state = os.environ["FAKE_STATE"]
    if action == "start":
        if os.environ.get("FAKE_FAIL"):
            print("runc shim refuses", file=sys.stderr)
            sys.exit(3)
        sock = os.path.join(state, "runc.sock")
        subprocess.Popen([sys.executable, __file__, "serve"], start_new_session=True,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        for _ in range(500):  # listening before its address is printed, as runc's
            if os.path.exists(os.path.join(state, "serve.pid")):
                break
            time.sleep(0.02)
        with open(os.path.join(state, "start-env.json"), "w") as f:
            json.dump(dict(os.environ), f)
        open("address", "w").write("unix://" + sock)
        if os.environ.get("FAKE_FORM") == "json":
            print(json.dumps({{"version": 3, "address": "unix://" + sock, "protocol": "ttrpc"}}))
        else:
            sys.stdout.write("unix://" + sock)
    elif action == "delete":
        resp = V3.messages.DeleteResponse(exit_status=137, pid=9)
        sys.stdout.buffer.write(resp.SerializeToString())
    elif action == "serve":
        async def main():
            done = asyncio.Event()
            async def shutdown(call):
                if not os.environ.get("FAKE_IGNORE_SHUTDOWN"):  # as runc's with containers
                    done.set()
                return b""
            async def state_(call):
                return V3.messages.StateResponse(id="c", pid=os.getpid()).SerializeToString()
            table = {{}}
            for api in (V2, V3):
                table[(api.service, "Shutdown")] = shutdown
                table[(api.service, "State")] = state_
            server = Server(table)
            await server.listen(os.path.join(state, "runc.sock"))
            open(os.path.join(state, "serve.pid.tmp"), "w").write(str(os.getpid()))
            os.rename(os.path.join(state, "serve.pid.tmp"), os.path.join(state, "serve.pid"))
            await asyncio.wait_for(done.wait(), 60)  # never outlive a failed test for long
            await asyncio.sleep(0.05)
            os.unlink(os.path.join(state, "runc.sock"))
        asyncio.run(main())
    """
)


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """A short temporary directory: the shim's unix socket paths must fit in 107 bytes.

    pytest's own (/tmp/pytest-of-root/pytest-N/<test name>/) grows with N and the test name.
    """
    path = Path(tempfile.mkdtemp(prefix="zp-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def shim_env(tmp_path: Path) -> dict[str, str]:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "containerd-shim-runc-v2"
    fake.write_text(FAKE_RUNC_SHIM.format(python=sys.executable, repo=str(REPO)))
    fake.chmod(0o755)
    (tmp_path / "state").mkdir()
    return dict(
        os.environ,
        PATH=f"{bindir}:{os.environ['PATH']}",
        FAKE_STATE=str(tmp_path / "state"),
        ZEROPOD_SHIM_DIR=str(tmp_path / "run"),
        TTRPC_ADDRESS=str(tmp_path / "containerd-ttrpc.sock"),
        PYTHONPATH=str(REPO),
    )


def run_shim(
    env: dict[str, str], bundle: Path, cid: str, action: str
) -> subprocess.CompletedProcess:
    bundle.mkdir(exist_ok=True)
    argv = ["-namespace", "k8s.io", "-address", "/run/c.sock", "-id", cid, action]
    return subprocess.run(
        [sys.executable, "-c", "from zeropod.shim.main import main; main()", *argv],
        cwd=bundle, env=env, capture_output=True, timeout=30, check=False,
    )  # fmt: skip


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.mark.parametrize("form", ["plain", "json"])
async def test_start_interposes_and_exits_with_runc_shim(
    tmp_path: Path, shim_env: dict[str, str], form: str
) -> None:
    from zeropod.ttrpc import Client

    shim_env["FAKE_FORM"] = form
    bundle = tmp_path / "b1"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps({"annotations": {}}))
    res = run_shim(shim_env, bundle, "c1", "start")
    assert res.returncode == 0, res.stderr.decode()
    assert res.stderr == b""  # containerd reads stdout and stderr together
    answer = bootstrap.parse(res.stdout)
    assert (answer.params is not None) == (form == "json")
    ours = Path(bootstrap.unix_path(answer.address))
    assert ours.parent == tmp_path / "run"
    assert (bundle / "address").read_text() == answer.address
    # the runc shim published to our events socket, not to containerd's
    start_env = json.loads((tmp_path / "state/start-env.json").read_text())
    assert start_env["TTRPC_ADDRESS"].startswith(str(tmp_path / "run"))

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
    assert wait_until(lambda: list((tmp_path / "run").iterdir()) == [])
    await client.close()


def test_failed_runc_start_is_reported_and_leaves_nothing(
    tmp_path: Path, shim_env: dict[str, str]
) -> None:
    shim_env["FAKE_FAIL"] = "1"
    res = run_shim(shim_env, tmp_path / "b", "c1", "start")
    assert res.returncode == 1
    assert b"runc shim refuses" in res.stderr
    assert [p.suffix for p in (tmp_path / "run").iterdir()] == [".lock"]


def test_delete_relays_stdout_and_status(tmp_path: Path, shim_env: dict[str, str]) -> None:
    res = run_shim(shim_env, tmp_path / "b", "c1", "delete")
    assert res.returncode == 0, res.stderr.decode()
    assert V3.messages.DeleteResponse.FromString(res.stdout).exit_status == 137


def test_unknown_flags_go_to_runc_shim(tmp_path: Path, shim_env: dict[str, str]) -> None:
    bundle = tmp_path / "b"
    bundle.mkdir()
    res = subprocess.run(
        [sys.executable, "-c", "from zeropod.shim.main import main; main()", "-new-flag", "delete"],
        cwd=bundle, env=shim_env, capture_output=True, timeout=30, check=False,
    )  # fmt: skip
    assert V3.messages.DeleteResponse.FromString(res.stdout).pid == 9


def test_zeropods_criu_comes_first_on_the_runc_shims_path(tmp_path, monkeypatch) -> None:
    from zeropod.shim.launcher import runc_shim_env

    monkeypatch.setenv("PATH", "/usr/sbin:/usr/bin")
    env = runc_shim_env(tmp_path / "events.sock", str(tmp_path))
    assert env["PATH"] == "/usr/sbin:/usr/bin"  # no CRIU of zeropod's here
    (tmp_path / "criu").write_text("")
    env = runc_shim_env(tmp_path / "events.sock", str(tmp_path))
    assert env["PATH"] == f"{tmp_path}:/usr/sbin:/usr/bin"
    assert env["TTRPC_ADDRESS"] == str(tmp_path / "events.sock")


@pytest.mark.parametrize("on_shutdown", ["exits", "ignores it"])
async def test_delete_after_the_interposer_died_shuts_its_runc_shim_down(
    tmp_path: Path, shim_env: dict[str, str], on_shutdown: str
) -> None:
    """containerd only knows the interposer: once it is killed, nothing but our ``delete``
    (containerd's dead-shim cleanup) can end the runc shim, which would outlive its pod.
    containerd's runc shim ignores Shutdown while it counts containers: then it is killed."""
    if on_shutdown == "ignores it":
        shim_env["FAKE_IGNORE_SHUTDOWN"] = "1"
    bundle = tmp_path / "b1"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps({"annotations": {}}))
    res = run_shim(shim_env, bundle, "c1", "start")
    assert res.returncode == 0, res.stderr.decode()
    runc_socket = tmp_path / "state" / "runc.sock"
    assert runc_socket.exists()
    interposer = [
        int(line.split()[0])
        for line in subprocess.run(
            ["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True
        ).stdout.splitlines()
        if "zeropod.shim" in line and str(tmp_path / "run") in line
    ]
    if not interposer:  # found by its socket's owner instead
        ours = Path(bootstrap.unix_path(bootstrap.parse(res.stdout).address))
        out = subprocess.run(["fuser", str(ours)], capture_output=True, text=True)
        interposer = [int(p) for p in out.stdout.split()]
    assert len(interposer) == 1, interposer
    os.kill(interposer[0], 9)

    deleted = run_shim(shim_env, bundle, "c1", "delete")
    assert deleted.returncode == 0, deleted.stderr.decode()
    runc_pid = int((tmp_path / "state" / "serve.pid").read_text())
    assert wait_until(lambda: not os.path.exists(f"/proc/{runc_pid}") or _zombie(runc_pid))
    assert [p.suffix for p in (tmp_path / "run").iterdir() if p.suffix != ".log"] == [".lock"]


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True
