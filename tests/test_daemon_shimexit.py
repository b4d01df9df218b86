"""A sleeping pod's shim is watched through a pidfd: its end wakes the idle loop, nothing polls.

The shim is a real process listening on a unix socket (a child python), killed by the test.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import pytest
from daemon_fakes import World

from zeropod.daemon.adapters.shimexit import ShimExits, listener_pidfd
from zeropod.daemon.lifecycle.idle import IdleLoops
from zeropod.daemon.model.pod import PodKey

LISTENER = (
    "import socket, sys, time\n"
    "s = socket.socket(socket.AF_UNIX)\n"
    "s.bind(sys.argv[1]); s.listen()\n"
    "print('listening', flush=True)\n"
    "time.sleep(60)\n"
)


@pytest.fixture
def shim() -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """(socket path, process) of a stand-in shim listening on its control socket."""
    with tempfile.TemporaryDirectory(prefix="zpx") as tmp:
        path = os.path.join(tmp, "ctl.sock")
        proc = subprocess.Popen(
            [sys.executable, "-c", LISTENER, path], stdout=subprocess.PIPE, text=True
        )
        try:
            assert proc.stdout is not None and proc.stdout.readline() == "listening\n"
            yield path, proc
        finally:
            proc.kill()
            proc.wait()


def test_the_listeners_pidfd_or_none(shim: tuple[str, subprocess.Popen[str]]) -> None:
    path, _ = shim
    fd = listener_pidfd(path)
    assert fd is not None
    os.close(fd)
    assert listener_pidfd(path + ".missing") is None


async def test_wait_any_returns_when_the_shim_ends(shim: tuple[str, subprocess.Popen[str]]) -> None:
    path, proc = shim
    exits = ShimExits()
    assert exits.watch([path, path + ".gone"]) == [path + ".gone"]
    waiting = asyncio.create_task(exits.wait_any([path, path + ".gone"]))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # alive: nothing to report, nothing polled
    proc.kill()
    assert await asyncio.wait_for(waiting, 5) == path
    proc.wait()
    assert exits.watch([path]) == [path]  # gone: its pidfd closed, the socket refuses


async def test_a_sleeping_pods_loop_rests_until_its_shim_ends(
    shim: tuple[str, subprocess.Popen[str]],
) -> None:
    path, proc = shim
    world = World()
    world.register(shim_socket=path)
    life = world.life(PodKey("shop", "web-1"))
    await life.sleep("idle")
    loops = IdleLoops(world.pods, world.journal, tuple, interval=0.001)
    rest = asyncio.create_task(loops._rest(life))
    await asyncio.sleep(0.1)  # 100 intervals: a polling loop would have returned
    assert not rest.done()
    proc.kill()
    await asyncio.wait_for(rest, 5)
    await loops.close()


async def test_a_shim_that_ended_before_the_rest_is_checked_at_once_then_not_polled(
    shim: tuple[str, subprocess.Popen[str]],
) -> None:
    """The race the fault suite found: the interposer killed right after the sleep, before
    the loop's first rest could watch it. That rest returns at once (the shim check runs);
    the next one, for the same unwatchable shim, waits for the timed check."""
    path, proc = shim
    world = World()
    world.register(shim_socket=path)
    life = world.life(PodKey("shop", "web-1"))
    await life.sleep("idle")
    proc.kill()
    proc.wait()
    loops = IdleLoops(world.pods, world.journal, tuple, interval=100)
    await asyncio.wait_for(loops._rest(life), 5)
    rest = asyncio.create_task(loops._rest(life))
    await asyncio.sleep(0.1)
    assert not rest.done()
    rest.cancel()
    await loops.close()
