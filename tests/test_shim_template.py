"""The interposer template: ``start`` has it fork each pod's interposer (no root; the fake
runc shim and the fixtures are in ``fake_runc.py``)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from fake_runc import REPO, gone, run_shim, stop_template, wait_until

from zeropod.shim import bootstrap, template
from zeropod.shim.taskapi import V2
from zeropod.sockets.peercred import peer_credentials


def cmdlines() -> dict[int, str]:
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
    return {pid: raw.decode(errors="replace").strip() for pid, raw in found.items()}


def interposers(run_dir: Path) -> list[tuple[int, str]]:
    return [(p, c) for p, c in cmdlines().items() if "zeropod.shim" in c and str(run_dir) in c]


def ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])


def template_pid(run_dir: Path) -> int:
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as conn:
        conn.connect(str(run_dir / "template.sock"))
        return peer_credentials(conn)[0]


def start(env: dict[str, str], tmp: Path, cid: str) -> Path:
    bundle = tmp / cid
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps({"annotations": {}}))
    res = run_shim(env, bundle, cid, "start")
    assert res.returncode == 0, res.stderr.decode()
    return Path(bootstrap.unix_path(bootstrap.parse(res.stdout).address))


async def state_pid(sock: Path) -> int:
    from zeropod.ttrpc import Client

    client = await Client.connect(str(sock))
    try:
        reply = await client.call(V2.service, "State", b"", timeout=5)
        return V2.messages.StateResponse.FromString(reply).pid
    finally:
        await client.close()


async def shutdown(sock: Path) -> None:
    from zeropod.ttrpc import Client

    client = await Client.connect(str(sock))
    await client.call(V2.service, "Shutdown", b"", timeout=5)
    await client.close()


async def test_the_template_forks_each_pods_interposer_and_a_crash_stays_there(
    short_tmp: Path, shim_env: dict[str, str]
) -> None:
    run_dir = short_tmp / "run"
    first = start(shim_env, short_tmp, "web-1")
    ((pid, title),) = interposers(run_dir)
    assert title.startswith("zeropod.shim.interposer id=web-1 namespace=k8s.io group=web-1")
    assert Path(f"/proc/{pid}/comm").read_text().strip() == "zeropod-shim"
    # forked twice: not the template's child, a session of its own
    forker = template_pid(run_dir)
    assert "zeropod.shim.template" in cmdlines()[forker]
    assert ppid(pid) != forker and os.getsid(pid) == pid
    assert await state_pid(first) > 0

    # The template dies: the pod's interposer serves on; the next pod gets a new template.
    os.kill(forker, signal.SIGKILL)
    assert await state_pid(first) > 0
    second = start(shim_env, short_tmp, "web-2")
    assert await state_pid(second) > 0
    assert len(interposers(run_dir)) == 2
    assert stop_template(run_dir) not in (None, forker)

    # A forked interposer crashes alone.
    os.kill(pid, signal.SIGKILL)
    assert await state_pid(second) > 0
    await shutdown(second)
    assert wait_until(lambda: interposers(run_dir) == [])


async def test_off_spawns_a_fresh_interposer(short_tmp: Path, shim_env: dict[str, str]) -> None:
    shim_env["ZEROPOD_SHIM_TEMPLATE"] = "off"
    sock = start(shim_env, short_tmp, "db-0")
    assert not (short_tmp / "run" / "template.sock").exists()
    ((_, title),) = interposers(short_tmp / "run")
    assert "from zeropod.shim.interposer import main" in title
    await shutdown(sock)
    assert wait_until(lambda: interposers(short_tmp / "run") == [])


def test_a_template_whose_code_changed_is_stale(tmp_path: Path, monkeypatch) -> None:
    pkg = tmp_path / "zeropod"
    pkg.mkdir()
    module = pkg / "moved_here.py"
    module.write_text("X = 1\n")
    monkeypatch.setitem(sys.modules, "zeropod_moved_here", type(sys)("zeropod_moved_here"))
    sys.modules["zeropod_moved_here"].__file__ = str(module)
    code = template.LoadedCode(str(tmp_path))
    same = template.Request("{}", {}, str(tmp_path), sys.executable)
    assert code.stale_for(same) is None
    other = template.Request("{}", {}, "/opt/zeropod/venv/lib", sys.executable)
    assert "package at /opt/zeropod/venv/lib" in (code.stale_for(other) or "")
    python = template.Request("{}", {}, str(tmp_path), "/usr/bin/python9")
    assert "interpreter /usr/bin/python9" in (code.stale_for(python) or "")
    module.write_text("X = 2  # upgraded\n")
    assert code.stale_for(same) == f"{module} changed since the template loaded it"


def test_the_template_leaves_when_its_last_interposer_has(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No interposer of its own for LINGER seconds: the template exits (it was waiting on a
    pidfd per interposer, and on its socket; nothing else)."""
    monkeypatch.setattr(template, "LINGER", 0.2)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(str(tmp_path / "t.sock"))
    listener.listen(1)
    child = subprocess.Popen(["sleep", "0.5"])
    served = template.Template(listener, template.LoadedCode(str(tmp_path)))
    served.children[os.pidfd_open(child.pid)] = child.pid
    ended = threading.Event()
    runner = threading.Thread(target=lambda: (served.serve(), ended.set()), daemon=True)
    runner.start()
    assert not ended.wait(0.3)  # its child lives
    child.wait()
    assert ended.wait(5)
    listener.close()


async def test_an_upgrade_replaces_the_template(short_tmp: Path, shim_env: dict[str, str]) -> None:
    """A module the template loaded changed on disk: it says so and exits, and the start
    that found out starts a new template, which forks the interposer."""
    copy = short_tmp / "pkg"
    shutil.copytree(REPO / "zeropod", copy / "zeropod", ignore=shutil.ignore_patterns("*.pyc"))
    shim_env["PYTHONPATH"] = str(copy)
    run_dir = short_tmp / "run"
    first = start(shim_env, short_tmp, "web-1")
    old = template_pid(run_dir)
    os.utime(copy / "zeropod/shim/tasks.py", ns=(1, 1))  # an upgrade
    second = start(shim_env, short_tmp, "web-2")
    assert template_pid(run_dir) != old
    assert wait_until(lambda: not Path(f"/proc/{old}").exists())
    titles = [title for _, title in interposers(run_dir)]
    assert sorted(t.split()[1] for t in titles) == ["id=web-1", "id=web-2"], titles
    for sock in (first, second):
        await shutdown(sock)


async def test_a_template_that_drops_the_request_leaves_one_fresh_interposer(
    short_tmp: Path, shim_env: dict[str, str]
) -> None:
    """Whatever the template did, start knows from the ready pipe whether a forked
    interposer runs: here none does, and exactly one fresh interposer serves."""
    run_dir = short_tmp / "run"
    run_dir.mkdir(mode=0o711)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(str(run_dir / "template.sock"))
    listener.listen(4)

    def drop() -> None:
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.close()  # received fds are closed with the message

    dropper = threading.Thread(target=drop, daemon=True)
    dropper.start()
    sock = start(shim_env, short_tmp, "queue-0")
    dropper.join(5)
    ((_, title),) = interposers(run_dir)
    assert "from zeropod.shim.interposer import main" in title
    assert await state_pid(sock) > 0
    await shutdown(sock)
    listener.close()


async def test_a_hung_template_is_ended_and_the_pod_starts_anyway(
    short_tmp: Path, shim_env: dict[str, str]
) -> None:
    """A stopped template holds the request (and its fds) without answering: start kills
    it after ANSWER_TIMEOUT, spawns a fresh interposer, and the next start forks again."""
    run_dir = short_tmp / "run"
    first = start(shim_env, short_tmp, "web-1")
    hung = template_pid(run_dir)
    os.kill(hung, signal.SIGSTOP)
    second = start(shim_env, short_tmp, "web-2")
    assert wait_until(lambda: gone(hung))
    fresh = [title for _, title in interposers(run_dir) if "web-2" in title]
    assert len(fresh) == 1 and "from zeropod.shim.interposer import main" in fresh[0]
    third = start(shim_env, short_tmp, "web-3")
    assert template_pid(run_dir) != hung
    assert any(t.startswith("zeropod.shim.interposer id=web-3") for _, t in interposers(run_dir))
    for sock in (first, second, third):
        await shutdown(sock)
