"""The fake ``containerd-shim-runc-v2`` and the fixtures that run the real shim's
``start``/``delete`` against it (no root).

The fake (a Python script put first on PATH) does what the real one does at the protocol
level: ``start`` spawns a detached daemon serving the task API on a socket and prints its
address (plain, or bootstrap JSON with FAKE_FORM=json); the daemon exits on Shutdown.
``delete`` prints a DeleteResponse. The node's interposer template of each test's run dir
is stopped when the test ends.
"""

from __future__ import annotations

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
def short_tmp() -> Iterator[Path]:
    """A short temporary directory: the shim's unix socket paths must fit in 107 bytes.

    pytest's own (/tmp/pytest-of-root/pytest-N/<test name>/) grows with N and the test name.
    """
    path = Path(tempfile.mkdtemp(prefix="zp-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def shim_env(short_tmp: Path) -> Iterator[dict[str, str]]:
    bindir = short_tmp / "bin"
    bindir.mkdir()
    fake = bindir / "containerd-shim-runc-v2"
    fake.write_text(FAKE_RUNC_SHIM.format(python=sys.executable, repo=str(REPO)))
    fake.chmod(0o755)
    (short_tmp / "state").mkdir()
    yield dict(
        os.environ,
        PATH=f"{bindir}:{os.environ['PATH']}",
        FAKE_STATE=str(short_tmp / "state"),
        ZEROPOD_SHIM_DIR=str(short_tmp / "run"),
        TTRPC_ADDRESS=str(short_tmp / "containerd-ttrpc.sock"),
        PYTHONPATH=str(REPO),
    )
    stop_template(short_tmp / "run")


def stop_template(run_dir: Path) -> int | None:
    """End the template serving RUN_DIR (if any); its pid."""
    from zeropod.shim import templateclient

    return templateclient.stop_template(run_dir / "template.sock")


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


def gone(pid: int) -> bool:
    """PID has exited (gone, or a zombie nobody reaped yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True
