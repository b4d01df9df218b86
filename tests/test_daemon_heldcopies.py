"""The daemon's copies of the held sockets: taken from systemd by inode, watched while the
pod sleeps; probes are answered asleep and anything else wakes the pod."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import subprocess
import sys

import pytest
from daemon_fakes import World, exchange, queued_from, wait_until

from zeropod.activity.sources import LOOPBACK, may_be_local
from zeropod.daemon.adapters.heldcopies import HeldSockets, accept_nowait
from zeropod.daemon.lifecycle.probes import OK_RESPONSE
from zeropod.daemon.model.phase import Phase
from zeropod.daemon.model.pod import PodKey
from zeropod.daemon.restart import watch_held
from zeropod.sockets.listeners import sockets_by_inode
from zeropod.sockets.pidfd import ProcessGoneError


def test_a_process_s_sockets_are_found_by_inode() -> None:
    with socket.socket() as held, socket.socket() as other:
        held.bind(("127.0.0.1", 0))
        held.listen(4)
        other.bind(("127.0.0.1", 0))
        other.listen(4)
        inode = os.fstat(held.fileno()).st_ino
        copies = sockets_by_inode(os.getpid(), {inode, 2**40})  # one never existed
        try:
            assert [c.getsockname() for c in copies] == [held.getsockname()]
        finally:
            for sock in copies:
                sock.close()
        held.getsockname()  # the original is untouched by closing the copy
    with pytest.raises(ProcessGoneError):
        sockets_by_inode(2**22 + 7, {1})


async def asleep_with_copies() -> tuple[World, PodKey, socket.socket]:
    world = World()
    world.watch.node_networks = lambda: LOOPBACK
    app = world.register()
    key = PodKey.of(app)
    await world.sleep(key, "forced")
    return world, key, world.network.listeners[-1]


async def test_probes_are_answered_asleep_and_a_real_client_wakes() -> None:
    world, key, held = await asleep_with_copies()
    app = world.life(key).containers()[0]
    port = held.getsockname()[1]
    world.life(key).ports.ports = ()  # probes are checked on the listener's own port
    world.net.queue = [queued_from("127.0.0.1", port)]

    probe = b"GET /healthz HTTP/1.1\r\nUser-Agent: kube-probe/1.30\r\n\r\n"
    for _ in range(3):
        assert await asyncio.to_thread(exchange, port, probe) == OK_RESPONSE
    assert app.phase.phase is Phase.SCALED_DOWN
    assert "restore" not in world.rec.names()
    assert sum("answered a http probe" in m for m in world.captured.messages()) == 3

    world.net.queue = [queued_from("10.88.255.254", port)]
    copies = world.life(key).ports.copies
    real = socket.create_connection(("127.0.0.1", port))
    await wait_until(lambda: app.phase.phase is Phase.RUNNING, "the wake")
    assert copies is not None and copies.closed and world.life(key).ports.copies is None
    # The held socket no longer listens (for systemd's fd either): its queue went to the
    # app's listener (the kernel's tcp_migrate_req, in the node; there is none here).
    assert held.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 0
    real.close()
    world.network.close()


async def test_a_client_during_the_dump_wakes_the_pod_right_after_it() -> None:
    world = World()
    world.watch.node_networks = lambda: LOOPBACK
    app = world.register()
    key = PodKey.of(app)
    gate = asyncio.Event()
    checkpoint = world.shim.checkpoint

    async def slow(container, image_dir, mode):  # type: ignore[no-untyped-def]
        await gate.wait()
        return await checkpoint(container, image_dir, mode)

    world.shim.checkpoint = slow  # type: ignore[method-assign]
    sleeping = asyncio.create_task(world.sleep(key, "forced"))
    await wait_until(lambda: bool(world.network.listeners), "the copies")
    port = world.network.listeners[-1].getsockname()[1]
    world.net.queue = [queued_from("10.88.255.254", world.life(key).ports.ports[0].port)]
    real = socket.create_connection(("127.0.0.1", port))
    await asyncio.sleep(0.05)  # the watch saw it and waits for the pod's lock
    assert "restore" not in world.rec.names()
    gate.set()
    await sleeping
    await wait_until(lambda: app.phase.phase is Phase.RUNNING, "the wake after the sleep")
    names = world.rec.names()
    assert names.index("restore") > names.index("checkpoint")
    real.close()
    world.network.close()


async def test_nothing_is_watched_once_the_ports_are_released() -> None:
    world, key, _ = await asleep_with_copies()
    assert len(world.watch._tasks) == 1
    await world.wake(key, "forced")
    await wait_until(lambda: not world.watch._tasks, "the watch to end")
    world.network.close()


async def test_a_restarted_daemon_watches_the_held_ports_again() -> None:
    world, key, _ = await asleep_with_copies()
    life = world.life(key)
    old = life.ports.copies
    await world.watch.close()
    await watch_held(world.service, world.watch, world.journal)
    assert old is not None and old.closed  # the old daemon's copies went with it
    assert life.ports.copies is not None and life.ports.copies is not old
    assert len(world.watch._tasks) == 1
    port = world.network.listeners[-1].getsockname()[1]
    world.net.queue = [queued_from("10.88.255.254", life.ports.ports[0].port)]
    real = socket.create_connection(("127.0.0.1", port))
    app = life.containers()[0]
    await wait_until(lambda: app.phase.phase is Phase.RUNNING, "the wake")
    real.close()
    world.network.close()


async def test_a_restarted_daemon_that_cannot_watch_a_pod_wakes_it() -> None:
    world, key, _ = await asleep_with_copies()
    world.network.fail_copies = OSError("no such process")
    await watch_held(world.service, world.watch, world.journal)
    app = world.life(key).containers()[0]
    assert app.phase.phase is Phase.RUNNING
    assert any("cannot watch its held ports" in m for m in world.captured.messages())
    world.network.close()


def test_closed_copies_are_not_readable() -> None:
    async def scenario() -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            sock.listen(1)
            copies = HeldSockets([sock.dup()])
            waiting = asyncio.create_task(copies.readable())
            await asyncio.sleep(0)
            copies.close()
            assert await waiting is None
            assert await copies.readable() is None

    asyncio.run(scenario())


async def test_the_cold_path_takes_the_clients_that_come_while_the_unit_stops() -> None:
    world, key, held = await asleep_with_copies()
    life = world.life(key)
    early = socket.create_connection(held.getsockname())
    stop = world.units.stop
    late: list[socket.socket] = []

    async def stop_meanwhile(k: PodKey) -> None:
        late.append(socket.create_connection(held.getsockname()))
        await stop(k)

    world.units.stop = stop_meanwhile  # type: ignore[method-assign]
    errors, accepted = await life.ports.release_taking_queue()
    assert errors == [] and len(accepted) == 2  # the early client and the late one
    assert life.ports.copies is None and not life.ports.held
    for sock in (early, *late, *accepted):
        sock.close()
    world.network.close()


def test_an_accept_never_blocks_when_systemd_cleared_o_nonblock() -> None:
    """The copy shares its open file with systemd's socket: when systemd clears O_NONBLOCK
    (it does when it triggers a service without NonBlocking=yes), the daemon's accept must
    still return at once."""
    import threading

    with socket.socket() as systemds:
        systemds.bind(("127.0.0.1", 0))
        systemds.listen(4)
        copy = HeldSockets([systemds.dup()]).sockets[0]
        systemds.setblocking(True)  # clears O_NONBLOCK on the shared open file
        results: list[object] = []
        worker = threading.Thread(target=lambda: results.append(accept_nowait(copy)), daemon=True)
        worker.start()
        worker.join(2)
        assert not worker.is_alive() and results == [None], "accept blocked"
        client = socket.create_connection(systemds.getsockname())
        taken = accept_nowait(copy)
        assert taken is not None
        taken[0].close()
        client.close()
        copy.close()


def test_the_hand_over_moves_the_queue_to_the_app_s_listener() -> None:
    """shutdown() on the held socket stops it listening for every fd and, with
    tcp_migrate_req=1, moves its accept queue to the app's listener (root: a netns of its
    own, where the sysctl is set)."""
    if os.geteuid() != 0:
        pytest.skip("needs root for a network namespace of its own")
    script = (
        "import os, socket, sys\n"
        "os.system('ip link set lo up')\n"
        "open('/proc/sys/net/ipv4/tcp_migrate_req', 'w').write('1')\n"
        "from zeropod.daemon.adapters.heldcopies import HeldSockets\n"
        "def listener():\n"
        "    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)\n"
        "    s.bind(('127.0.0.1', 9000)); s.listen(16); return s\n"
        "systemds = listener()\n"
        "clients = [socket.create_connection(('127.0.0.1', 9000)) for _ in range(3)]\n"
        "app = listener()\n"
        "HeldSockets([systemds.dup()]).hand_over()\n"
        "app.settimeout(1)\n"
        "print(len([app.accept() for _ in clients]))\n"
    )
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run(
        ["unshare", "-n", sys.executable, "-c", script],
        env={**os.environ, "PYTHONPATH": repo},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0 and done.stdout.strip() == "3", done.stderr


class NewBridgeSources:
    """The node's addresses: the cache has no bridge yet, a read finds it."""

    bridge = ipaddress.ip_network("10.1.2.0/24")

    def __init__(self) -> None:
        self.reads = 0

    def __call__(self) -> tuple:
        return LOOPBACK

    def cached(self) -> tuple:
        return LOOPBACK

    def refresh(self) -> tuple:
        self.reads += 1
        return (*LOOPBACK, self.bridge)


async def test_a_node_address_newer_than_the_cache_is_still_a_probe_source() -> None:
    """The CNI bridge appears after the daemon starts: a source the cached addresses do not
    know but that binds on the node makes the check read the addresses again, and a probe
    from the new bridge does not wake the pod."""
    world, key, held = await asleep_with_copies()
    sources = NewBridgeSources()
    world.watch.node_networks = sources
    world.watch.may_be_local = lambda addr: addr in sources.bridge
    world.net.queue = [queued_from("10.1.2.1", world.life(key).ports.ports[0].port)]
    probe = b"GET /healthz HTTP/1.1\r\nUser-Agent: kube-probe/1.30\r\n\r\n"
    assert await asyncio.to_thread(exchange, held.getsockname()[1], probe) == OK_RESPONSE
    assert "restore" not in world.rec.names()
    assert sources.reads >= 1
    world.network.close()


async def test_a_client_from_elsewhere_wakes_without_reading_the_node_addresses() -> None:
    """The wake path's probe check reads no netlink for a source that cannot be the node's
    (it does not bind here): the cached addresses decide."""
    world, key, held = await asleep_with_copies()
    sources = NewBridgeSources()
    world.watch.node_networks = sources
    world.watch.may_be_local = lambda addr: addr in sources.bridge
    app = world.life(key).containers()[0]
    world.net.queue = [queued_from("10.244.7.9", world.life(key).ports.ports[0].port)]
    real = socket.create_connection(("127.0.0.1", held.getsockname()[1]))
    await wait_until(lambda: app.phase.phase is Phase.RUNNING, "the wake")
    assert sources.reads == 0
    real.close()
    world.network.close()


def test_may_be_local_asks_the_kernel() -> None:
    assert may_be_local(ipaddress.ip_address("127.0.0.1"))
    assert may_be_local(ipaddress.ip_address("::ffff:127.0.0.1"))
    assert not may_be_local(ipaddress.ip_address("192.0.2.1"))  # TEST-NET-1: nobody's
