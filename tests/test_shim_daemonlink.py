"""The shim's calls to the daemon: register with its control socket, unregister, wake."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from zeropod.contract.protocol import encode
from zeropod.shim.daemonlink import DaemonLink
from zeropod.shim.taskapi import V3
from zeropod.shim.taskphase import TaskPhase
from zeropod.shim.tasks import TaskRecord

ANNOTATIONS = {
    "io.kubernetes.cri.container-type": "container",
    "io.kubernetes.cri.sandbox-name": "web-1",
    "io.kubernetes.cri.sandbox-namespace": "default",
    "io.kubernetes.cri.container-name": "app",
    "io.kubernetes.cri.sandbox-id": "sandbox1",
    "zeropod.ctrox.dev/scaledown-duration": "10s",
}


class FakeDaemon:
    """Answers every request ok; a daemon speaking only up to ``speaks`` refuses later
    versions by code, as an older daemon does."""

    def __init__(self, speaks: int = 2) -> None:
        self.got: list[dict] = []
        self.speaks = speaks

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            message = json.loads(line)
            self.got.append(message)
            if message["v"] > self.speaks:
                error = {"code": "unsupported_version", "message": f"speaks {self.speaks}"}
                writer.write(encode({"ok": False, "error": error}))
            else:
                writer.write(encode({"ok": True, "managed": True}))
            await writer.drain()
        writer.close()


def container(tmp_path: Path) -> TaskRecord:
    spec = {
        "annotations": ANNOTATIONS,
        "linux": {"namespaces": [{"type": "network", "path": "/n"}]},
    }
    (tmp_path / "config.json").write_text(json.dumps(spec))
    req = V3.messages.CreateTaskRequest(id="c1", bundle=str(tmp_path))
    return TaskRecord("c1", V3, req, [], phase=TaskPhase.RUNNING, pid=42)


async def until(predicate, timeout: float = 5) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_register_unregister_wake(tmp_path: Path) -> None:
    fake = FakeDaemon()
    server = await asyncio.start_unix_server(fake.serve, path=str(tmp_path / "d.sock"))
    link = DaemonLink("/run/zeropod/shim/x.ctl.sock", path=str(tmp_path / "d.sock"))
    c = container(tmp_path)
    link.register(c)
    await until(lambda: c.registered)
    register = fake.got[0]
    assert register["op"] == "register" and register["shim_socket"] == link.shim_socket
    assert (register["pod"], register["pid"], register["netns"]) == ("web-1", 42, "/n")
    assert register["annotations"] == {"zeropod.ctrox.dev/scaledown-duration": "10s"}
    assert await link.wake(c) is True
    assert fake.got[1] == {"v": 2, "op": "wake", "id": "c1"}
    link.unregister(c, "exited")
    await until(lambda: len(fake.got) == 3)
    assert fake.got[2] == {"v": 2, "op": "unregister", "id": "c1", "reason": "exited"}
    await link.close()
    server.close()


async def test_older_daemon_and_no_daemon(tmp_path: Path) -> None:
    fake = FakeDaemon(speaks=1)
    server = await asyncio.start_unix_server(fake.serve, path=str(tmp_path / "d.sock"))
    link = DaemonLink("/s.ctl.sock", path=str(tmp_path / "d.sock"))
    c = container(tmp_path)
    link.register(c)
    await until(lambda: c.registered)
    assert "shim_socket" in fake.got[0] and "shim_socket" not in fake.got[1]
    assert [m["v"] for m in fake.got] == [2, 1]  # by version number, never by error text
    server.close()
    await link.close()
    gone = DaemonLink("/s.ctl.sock", path=str(tmp_path / "none.sock"))
    assert await gone.wake(c) is False  # the caller restores on its own
    await gone.close()


async def test_wake_over_asks_for_a_wake_and_never_fails(tmp_path: Path) -> None:
    """Before a cold restart the shim waits for the daemon's wake of the pod to end: a wake
    request, served after it. No daemon, or an unregistered container: no wait, no error."""
    fake = FakeDaemon()
    server = await asyncio.start_unix_server(fake.serve, path=str(tmp_path / "d.sock"))
    link = DaemonLink("/s.ctl.sock", path=str(tmp_path / "d.sock"))
    c = container(tmp_path)
    await link.wake_over(c)  # not registered yet: nothing sent
    assert fake.got == []
    link.register(c)
    await until(lambda: c.registered)
    await link.wake_over(c)
    assert fake.got[-1] == {"v": 2, "op": "wake", "id": "c1"}
    server.close()
    await link.close()
    gone = DaemonLink("/s.ctl.sock", path=str(tmp_path / "none.sock"))
    await gone.wake_over(c)  # logged, not raised: the cold start goes on
    await gone.close()


async def test_pause_container_is_not_registered(tmp_path: Path) -> None:
    c = container(tmp_path)
    spec = {"annotations": {**ANNOTATIONS, "io.kubernetes.cri.container-type": "sandbox"}}
    (tmp_path / "config.json").write_text(json.dumps(spec))
    link = DaemonLink("/s.ctl.sock", path=str(tmp_path / "none.sock"))
    await link._register(c)  # returns at once: nothing to register, nothing retried
    assert not c.registered


async def test_an_unregister_the_daemon_could_not_take_is_retried(
    tmp_path: Path, monkeypatch
) -> None:
    """A busy or restarting daemon must still hear that the container ended, or it keeps
    the container's image, socket unit and ports."""
    from zeropod.shim import daemonlink

    monkeypatch.setattr(daemonlink, "RETRY_MIN", 0.05)
    link = DaemonLink("/run/zeropod/shim/x.ctl.sock", path=str(tmp_path / "d.sock"))
    c = container(tmp_path)
    c.registered = True
    link.unregister(c, "exited")  # no daemon listening yet
    await asyncio.sleep(0.2)
    fake = FakeDaemon()
    server = await asyncio.start_unix_server(fake.serve, path=str(tmp_path / "d.sock"))
    await until(lambda: any(m["op"] == "unregister" for m in fake.got))
    assert fake.got[-1] == {"v": 2, "op": "unregister", "id": "c1", "reason": "exited"}
    await link.close()
    server.close()
