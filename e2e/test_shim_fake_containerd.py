"""The real containerd-shim-zeropod-v2 against the real containerd-shim-runc-v2, with a fake
containerd: our own ttrpc events server, bundle directories with a busybox rootfs, and a
ttrpc client driving start/Create/Start/Wait/Kill/Delete/Shutdown like containerd does.

Needs root, runc, busybox-static and a containerd-shim-runc-v2 of each version under test:
found in $ZEROPOD_RUNC_SHIMS (``version=dir`` pairs, comma separated) or extracted from the
containerd debs cached in /var/cache/zeropod/debs. Marked ``root``; run with
``.venv/bin/python -m pytest -m root e2e/test_shim_fake_containerd.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from zeropod._gen.containerd.api.events import task_pb2 as events_task
from zeropod._gen.containerd.api.services.ttrpc.events.v1 import events_pb2
from zeropod.shim import bootstrap, templateclient
from zeropod.shim.taskapi import V2, V3, TaskAPI
from zeropod.ttrpc import Call, Client, ConnectionClosed, Server, TtrpcError
from zeropod.ttrpc.status import Code

REPO = Path(__file__).resolve().parent.parent
DEBS = Path("/var/cache/zeropod/debs")
SANDBOX_ANNOTATION = "io.kubernetes.cri.sandbox-id"

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (runc)"),
    pytest.mark.skipif(shutil.which("runc") is None, reason="needs runc on PATH"),
    pytest.mark.skipif(not Path("/bin/busybox").exists(), reason="needs busybox-static"),
]


def runc_shim_sources() -> dict[str, str]:
    """Version -> a directory with containerd-shim-runc-v2, or the containerd deb holding it."""
    env = os.environ.get("ZEROPOD_RUNC_SHIMS")
    if env:
        return dict(p.split("=", 1) for p in env.split(",") if p)
    return {
        Path(deb).name.split("_")[1].split("~")[0].split("+")[0]: deb
        for deb in sorted(glob.glob(str(DEBS / "containerd_*.deb")))
    }


def runc_shim_dir(source: str) -> Path:
    if not source.endswith(".deb"):
        return Path(source)
    out = Path("/tmp/zeropod-e2e-runc-shims") / Path(source).stem
    if not (out / "usr/bin/containerd-shim-runc-v2").exists():
        out.mkdir(parents=True, exist_ok=True)
        subprocess.run(["dpkg-deb", "-x", source, str(out)], check=True)
    return out / "usr/bin"


SHIM_SOURCES = runc_shim_sources()
# The interpreter that runs the shim; the node uses Debian's /usr/bin/python3.
SHIM_PYTHON = os.environ.get("ZEROPOD_E2E_PYTHON", sys.executable)


class FakeContainerd:
    """The events side of containerd: records every published envelope."""

    def __init__(self) -> None:
        self.topics: list[str] = []
        self.envelopes: list = []
        self.changed = asyncio.Condition()
        self.server = Server(
            {("containerd.services.events.ttrpc.v1.Events", "Forward"): self.forward}
        )

    async def forward(self, call: Call) -> bytes:
        req = events_pb2.ForwardRequest.FromString(call.payload)
        async with self.changed:
            self.envelopes.append(req.envelope)
            self.topics.append(req.envelope.topic)
            self.changed.notify_all()
        return b""

    async def wait_topic(self, topic: str, count: int = 1, timeout: float = 10) -> None:
        async with self.changed:
            await asyncio.wait_for(
                self.changed.wait_for(lambda: self.topics.count(topic) >= count), timeout
            )


@dataclass
class Env:
    tmp: Path
    shim_dir: Path
    runc_dir: Path
    version: str
    events_sock: Path
    namespace: str
    containerd: FakeContainerd
    logs: dict[str, int] = field(default_factory=dict)

    def bundle(self, cid: str, sandbox: str | None = None, cmd: str = "sleep 1000") -> Path:
        b = self.tmp / "bundles" / cid
        (b / "rootfs/bin").mkdir(parents=True)
        shutil.copy("/bin/busybox", b / "rootfs/bin/busybox")
        subprocess.run(["runc", "spec"], cwd=b, check=True)
        spec = json.loads((b / "config.json").read_text())
        spec["process"]["args"] = ["/bin/busybox", "sh", "-c", cmd]
        spec["process"]["terminal"] = False
        spec["linux"]["namespaces"] = [
            n for n in spec["linux"]["namespaces"] if n["type"] != "network"
        ]
        if sandbox:
            spec["annotations"] = {SANDBOX_ANNOTATION: sandbox}
        (b / "config.json").write_text(json.dumps(spec))
        # containerd hands every shim a log FIFO in the bundle; the runc shim needs it
        os.mkfifo(b / "log")
        self.logs[cid] = os.open(b / "log", os.O_RDONLY | os.O_NONBLOCK)
        return b

    def shim_log(self) -> str:
        """What the runc shims wrote to their log FIFOs so far."""
        out = []
        for cid, fd in self.logs.items():
            try:
                out.append(f"[{cid}] " + os.read(fd, 1 << 20).decode(errors="replace"))
            except BlockingIOError:
                continue
        return "\n".join(out)

    def shim(self, cid: str, bundle: Path, action: str) -> subprocess.CompletedProcess:
        env = dict(
            os.environ,
            TTRPC_ADDRESS=str(self.events_sock),
            GRPC_ADDRESS="/run/zeropod-e2e-none.sock",
            NAMESPACE=self.namespace,
            ZEROPOD_SHIM_DIR=str(self.shim_dir),
            PATH=f"{self.runc_dir}:{os.environ['PATH']}",
            PYTHONPATH=str(REPO),
        )
        argv = [
            SHIM_PYTHON,
            "-c",
            "from zeropod.shim.main import main; main()",
            "-namespace", self.namespace,
            "-address", "/run/zeropod-e2e-none.sock",
            "-publish-binary", "/bin/false",
            "-id", cid,
        ]  # fmt: skip
        if action == "delete":
            argv += ["-bundle", str(bundle)]
        return subprocess.run(
            [*argv, action], cwd=bundle, env=env, capture_output=True, timeout=60, check=False
        )


@pytest.fixture(params=sorted(SHIM_SOURCES) or ["none"])
async def env(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Env]:
    if request.param == "none":
        pytest.skip("no containerd-shim-runc-v2 available")
    fake = FakeContainerd()
    sock = tmp_path / "containerd-ttrpc.sock"
    await fake.server.listen(str(sock))
    shim_dir = Path("/run/zeropod-e2e") / uuid.uuid4().hex[:8]
    e = Env(
        tmp=tmp_path,
        shim_dir=shim_dir,
        runc_dir=runc_shim_dir(SHIM_SOURCES[request.param]),
        events_sock=sock,
        version=request.param,
        namespace=f"zeropod-e2e-{uuid.uuid4().hex[:6]}",
        containerd=fake,
    )
    yield e
    print(e.shim_log())
    for fd in e.logs.values():
        os.close(fd)
    await fake.server.close()
    cleanup(e)


def cleanup(e: Env) -> None:
    """Remove whatever a failed test left: containers, shims, interposers, sockets."""
    root = f"/run/containerd/runc/{e.namespace}"
    if Path(root).exists():
        for c in (
            json.loads(
                subprocess.run(
                    ["runc", "--root", root, "list", "-f", "json"], capture_output=True, check=False
                ).stdout
                or b"null"
            )
            or []
        ):
            subprocess.run(["runc", "--root", root, "delete", "-f", c["id"]], check=False)
        shutil.rmtree(root, ignore_errors=True)
    for pid in processes_mentioning(e.namespace):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    templateclient.stop_template(e.shim_dir / "template.sock")
    shutil.rmtree(e.shim_dir, ignore_errors=True)


def api_of(answer: bootstrap.Bootstrap) -> TaskAPI:
    return V3 if answer.task_api_version == 3 else V2


async def task_call(client: Client, api: TaskAPI, method: str, request: object, resp: str | None):
    payload = await client.call(api.service, method, request.SerializeToString(), timeout=30)
    return api.decode(resp, payload) if resp else None


def processes_mentioning(text: str) -> list[int]:
    """Processes whose command line contains ``text``."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                if text.encode() in (d / "cmdline").read_bytes():
                    pids.append(int(d.name))
            except OSError:
                continue
    return pids


def group_files(shim_dir: Path) -> list[Path]:
    """The pods' files in SHIM_DIR (the interposer template's are the node's)."""
    return [p for p in shim_dir.iterdir() if not p.name.startswith("template.")]


def interposer_pids(sock: Path) -> list[int]:
    """Interposer processes (their command line carries their socket path)."""
    return processes_mentioning(str(sock))


async def poll(predicate, timeout: float = 10.0) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def test_pod_lifecycle_through_interposer(env: Env) -> None:
    pod = "sandbox1"
    b1 = env.bundle(pod, sandbox=pod)
    b2 = env.bundle("app1", sandbox=pod, cmd="exit 3")

    # start: our address, in the runc shim's form, also in the bundle's address file
    out = env.shim(pod, b1, "start")
    assert out.returncode == 0, out.stderr.decode()
    answer = bootstrap.parse(out.stdout)
    sock = Path(bootstrap.unix_path(answer.address))
    assert sock.parent == env.shim_dir
    assert (b1 / "address").read_text() == answer.address
    assert (answer.params is not None) == env.version.startswith("2."), out.stdout
    api = api_of(answer)

    # a second container of the same pod gets the same interposer
    out2 = env.shim("app1", b2, "start")
    assert out2.returncode == 0, out2.stderr.decode()
    assert out2.stdout == out.stdout
    assert (b2 / "address").read_text() == answer.address
    assert len(interposer_pids(sock)) == 1

    client = await Client.connect(str(sock))
    m = api.messages
    created = await task_call(
        client, api, "Create", m.CreateTaskRequest(id=pod, bundle=str(b1)), "CreateTaskResponse"
    )
    assert created.pid > 0
    await env.containerd.wait_topic("/tasks/create")
    started = await task_call(client, api, "Start", m.StartRequest(id=pod), "StartResponse")
    assert started.pid == created.pid
    await env.containerd.wait_topic("/tasks/start")

    # Wait stays pending while other calls go through
    wait = asyncio.create_task(
        task_call(client, api, "Wait", m.WaitRequest(id=pod), "WaitResponse")
    )
    state = await task_call(client, api, "State", m.StateRequest(id=pod), "StateResponse")
    assert state.pid == created.pid and state.status == 2  # RUNNING
    assert not wait.done()

    # a malformed frame from some peer closes that connection only
    reader, writer = await asyncio.open_unix_connection(str(sock))
    writer.write(b"\xff" * 10)
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()

    # errors from the runc shim are relayed unchanged
    with pytest.raises(TtrpcError) as info:
        await task_call(client, api, "State", m.StateRequest(id="nope"), "StateResponse")
    assert info.value.code == Code.NOT_FOUND
    assert "not found" in info.value.message

    # the second container runs and exits on its own with status 3
    await task_call(client, api, "Create", m.CreateTaskRequest(id="app1", bundle=str(b2)), None)
    await task_call(client, api, "Start", m.StartRequest(id="app1"), None)
    w2 = await task_call(client, api, "Wait", m.WaitRequest(id="app1"), "WaitResponse")
    assert w2.exit_status == 3
    deleted = await task_call(client, api, "Delete", m.DeleteRequest(id="app1"), "DeleteResponse")
    assert deleted.exit_status == 3

    await task_call(client, api, "Kill", m.KillRequest(id=pod, signal=9), None)
    waited = await asyncio.wait_for(wait, 10)
    assert waited.exit_status == 137
    await env.containerd.wait_topic("/tasks/exit", count=2)
    exit_ev = next(
        events_task.TaskExit.FromString(e.event.value)
        for e in env.containerd.envelopes
        if e.topic == "/tasks/exit" and events_task.TaskExit.FromString(e.event.value).id == pod
    )
    assert exit_ev.exit_status == 137 and exit_ev.pid == created.pid
    await task_call(client, api, "Delete", m.DeleteRequest(id=pod), None)
    await env.containerd.wait_topic("/tasks/delete", count=2)
    assert all(e.namespace == env.namespace for e in env.containerd.envelopes)

    # Shutdown: the runc shim exits, the interposer follows and leaves nothing behind
    with contextlib.suppress(ConnectionClosed):  # containerd tolerates "ttrpc: closed" here
        await task_call(client, api, "Shutdown", m.ShutdownRequest(id=pod), None)
    assert await poll(lambda: not interposer_pids(sock)), "interposer still running"
    assert await client.wait_closed()
    assert group_files(env.shim_dir) == []
    await client.close()


async def test_runc_shim_crash_then_delete_action(env: Env) -> None:
    b = env.bundle("lonely")
    out = env.shim("lonely", b, "start")
    assert out.returncode == 0, out.stderr.decode()
    answer = bootstrap.parse(out.stdout)
    sock = Path(bootstrap.unix_path(answer.address))
    api = api_of(answer)
    m = api.messages
    client = await Client.connect(str(sock))
    await task_call(client, api, "Create", m.CreateTaskRequest(id="lonely", bundle=str(b)), None)
    await task_call(client, api, "Start", m.StartRequest(id="lonely"), None)
    wait = asyncio.create_task(task_call(client, api, "Wait", m.WaitRequest(id="lonely"), None))
    conn = await task_call(client, api, "Connect", m.ConnectRequest(id="lonely"), "ConnectResponse")

    # the runc shim dies: the interposer closes containerd's connection and goes away
    (runc_answer,) = env.shim_dir.glob("*.runc")  # the runc shim's start answer
    upstream = bootstrap.unix_path(bootstrap.parse(runc_answer.read_text()).address)
    os.kill(conn.shim_pid, signal.SIGKILL)
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(wait, 10)
    assert await poll(lambda: not interposer_pids(sock)), "interposer still running"
    assert group_files(env.shim_dir) == []

    # containerd's cleanup for a dead shim: the delete action, whose stdout is a DeleteResponse
    res = env.shim("lonely", b, "delete")
    assert res.returncode == 0, res.stderr.decode()
    resp = api.messages.DeleteResponse.FromString(res.stdout)
    assert resp.exit_status == 137
    await client.close()
    Path(upstream).unlink(missing_ok=True)  # a killed runc shim leaves its socket


@pytest.fixture(autouse=True)
def _no_leftover_runc_shims() -> Iterator[None]:
    yield
