"""The daemon's adapters: its shim client (against a fake shim server), images, listeners."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
from daemon_fakes import World

from zeropod.daemon.adapters.images import ImageStore
from zeropod.daemon.adapters.shim import ShimClient
from zeropod.daemon.lifecycle.interfaces import ShimError
from zeropod.daemon.model.registry import Container


@pytest.fixture
def tmp_short() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="zp-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def serve(path: str, answer: dict[str, Any] | bytes, seen: list[dict[str, Any]]) -> Any:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(json.loads(await reader.readline()))
        writer.write(answer if isinstance(answer, bytes) else json.dumps(answer).encode() + b"\n")
        await writer.drain()
        writer.close()

    return await asyncio.start_unix_server(handle, path=path)


def container_at(path: str) -> Container:
    world = World()
    app = world.register()
    app.identity = dataclasses.replace(app.identity, shim_socket=path)
    return app


async def test_checkpoint_and_restore_messages_and_replies(tmp_short: str) -> None:
    path = os.path.join(tmp_short, "shim.sock")
    seen: list[dict[str, Any]] = []
    server = await serve(path, {"ok": True, "pid": 42, "duration_ms": 12.5}, seen)
    app = container_at(path)
    reply = await ShimClient().checkpoint(app, "/images/x", "checkpoint")
    assert reply.pid == 42 and reply.duration_ms == 12.5 and not reply.cold
    assert seen[-1] == {
        "v": 2,
        "op": "checkpoint",
        "container_id": app.identity.container_id,
        "image_dir": "/images/x",
        "mode": "checkpoint",
    }
    server.close()
    await server.wait_closed()

    answer = {"ok": True, "pid": 43, "cold": True, "duration_ms": 3, "error": "criu"}
    server = await serve(path, answer, seen)
    reply = await ShimClient().restore(app, None)
    assert seen[-1]["op"] == "restore" and seen[-1]["image_dir"] is None
    assert seen[-1]["fallback"] is False  # the daemon decides cold starts
    assert reply.cold and reply.error == "criu" and reply.pid == 43
    server.close()
    await server.wait_closed()


async def test_lazy_is_asked_only_when_wanted_and_dropped_for_an_older_shim(
    tmp_short: str,
) -> None:
    """An interposer started before lazy restores existed refuses the field by name: the
    restore is asked again without it (eager), not failed."""
    path = os.path.join(tmp_short, "shim.sock")
    seen: list[dict[str, Any]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        message = json.loads(await reader.readline())
        seen.append(message)
        if "lazy" in message:
            error = {"code": "bad_request", "message": "unknown field 'lazy' for op 'restore'"}
            writer.write(json.dumps({"ok": False, "error": error}).encode() + b"\n")
        else:
            writer.write(json.dumps({"ok": True, "pid": 7, "duration_ms": 1}).encode() + b"\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_unix_server(handle, path=path)
    reply = await ShimClient().restore(container_at(path), "/i")
    assert reply.pid == 7 and "lazy" not in seen[-1] and len(seen) == 1
    reply = await ShimClient().restore(container_at(path), "/i", lazy=True)
    assert reply.pid == 7 and not reply.lazy
    assert [m.get("lazy") for m in seen[1:]] == [True, None]
    server.close()
    await server.wait_closed()


async def test_errors_carry_the_shims_code(tmp_short: str) -> None:
    path = os.path.join(tmp_short, "shim.sock")
    app = container_at(path)
    with pytest.raises(ShimError) as info:
        await ShimClient().checkpoint(app, "/i", "checkpoint")
    assert info.value.code == "unavailable"

    failed = {"ok": False, "error": {"code": "checkpoint_failed", "message": "see criu.log"}}
    server = await serve(path, failed, [])
    with pytest.raises(ShimError) as info:
        await ShimClient().checkpoint(app, "/i", "checkpoint")
    assert info.value.code == "checkpoint_failed" and info.value.message == "see criu.log"
    server.close()
    await server.wait_closed()

    server = await serve(path, b"not json\n", [])
    with pytest.raises(ShimError) as info:
        await ShimClient().restore(app, "/i")
    assert info.value.code == "bad_json"
    server.close()
    await server.wait_closed()


async def test_a_shim_of_an_older_contract_version_gets_that_version(tmp_short: str) -> None:
    """Compatibility is the version number: a v1 shim refuses v2 by code, the daemon sends
    the op again as v1, once."""
    path = os.path.join(tmp_short, "shim.sock")
    seen: list[dict[str, Any]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        message = json.loads(await reader.readline())
        seen.append(message)
        if message["v"] != 1:
            error = {"code": "unsupported_version", "message": "speaks 1"}
            writer.write(json.dumps({"ok": False, "error": error}).encode() + b"\n")
        else:
            writer.write(json.dumps({"ok": True, "pid": 7, "duration_ms": 1}).encode() + b"\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_unix_server(handle, path=path)
    reply = await ShimClient().restore(container_at(path), "/i")
    assert reply.pid == 7 and [m["v"] for m in seen] == [2, 1]
    server.close()
    await server.wait_closed()


def test_image_store(tmp_short: str) -> None:
    store = ImageStore(tmp_short)
    assert store.path("c1") is None
    path = store.prepare("c1")
    assert store.path("c1") is None  # empty: nothing to restore from
    open(os.path.join(path, "pages-1.img"), "w").close()
    assert store.path("c1") == path
    assert store.prepare("c1") == path and os.listdir(path) == []  # fresh for a new dump
    store.remove("c1")
    store.remove("c1")
    assert not os.path.exists(path)


def test_a_non_root_listener_is_shared_not_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server running as its own user owns its listener: the daemon makes root its owner
    (so systemd's holder can join the group) instead of refusing to hold the port."""
    import socket

    from zeropod.daemon.adapters import network
    from zeropod.daemon.model.pod import HeldPort
    from zeropod.sockets.listeners import Listener

    shared: list[tuple[int, int]] = []
    found = [
        Listener(socket.AF_INET, "0.0.0.0", 6379, 11, 6, False, uid=100, pid=42),
        Listener(socket.AF_INET6, "::", 6379, 12, 7, True, uid=100, pid=42),
        Listener(socket.AF_INET, "0.0.0.0", 9121, 13, 8, False, uid=100, pid=43),
    ]
    monkeypatch.setattr("zeropod.sockets.listeners.tree_listeners", lambda pid: found)
    monkeypatch.setattr(
        "zeropod.sockets.reuseport.share_with_root_holder",
        lambda pid, fd: shared.append((pid, fd)) or 100,
    )
    held = network._share_listeners(41, (6379,))
    assert held == [
        HeldPort(socket.AF_INET, "0.0.0.0", 6379, False),
        HeldPort(socket.AF_INET6, "::", 6379, True),
    ]
    assert shared == [(42, 6), (42, 7)]  # each listener of the mapped port, in its process


def test_images_of_unknown_containers_are_reclaimed_at_start(tmp_short: str) -> None:
    """After a reboot or a crash: images no registered container can use are removed."""
    from daemon_fakes import World

    from zeropod.daemon.restart import reclaim_images

    images = ImageStore(os.path.join(tmp_short, "images"))
    world = World()
    kept = world.register()
    for cid in (kept.identity.container_id, "gone-after-reboot", "deleted-while-down"):
        os.makedirs(os.path.join(images.root, cid))
        with open(os.path.join(images.root, cid, "pages-1.img"), "w") as f:
            f.write("memory")
    removed = reclaim_images(world.service, images, world.journal)
    assert removed == ["deleted-while-down", "gone-after-reboot"]
    assert images.container_ids() == [kept.identity.container_id]
    assert reclaim_images(world.service, images, world.journal) == []
    assert ImageStore(os.path.join(tmp_short, "none")).container_ids() == []


async def test_a_shim_that_never_answers_is_a_shim_error_in_time(
    tmp_short: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Measured in the soak: a restore whose CRIU hung kept the shim from answering past the
    daemon's wait; the bare TimeoutError escaped the wake as an interruption. It must be a
    ShimError (``unavailable``), which the wake handles like any failed restore."""
    from zeropod.contract import timeouts

    path = os.path.join(tmp_short, "shim.sock")

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(3600)

    server = await asyncio.start_unix_server(silent, path=path)
    monkeypatch.setattr(timeouts, "daemon_wait", lambda bound: 0.2)
    with pytest.raises(ShimError) as info:
        async with asyncio.timeout(5):
            await ShimClient().restore(container_at(path), "/i")
    assert info.value.code == "unavailable" and "no answer" in info.value.message
    server.close()
