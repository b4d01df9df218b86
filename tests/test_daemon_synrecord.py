"""The probe check's fast way: a recent client SYN in the kernel's record of the held
sockets wakes the pod without reading who is queued; everything else (probes from the
node, old SYNs, a record that cannot be read, a source that may be a new node address)
is judged by the queue, as without a record."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time

from daemon_fakes import World, exchange, queued_from, wait_until

from zeropod.activity.sources import LOOPBACK
from zeropod.daemon.lifecycle import probes
from zeropod.daemon.lifecycle.probes import OK_RESPONSE, Verdict
from zeropod.daemon.model.phase import Phase
from zeropod.daemon.model.pod import PodKey
from zeropod.sockets.synlog import Syn

NODE = LOOPBACK
POD_IP = ipaddress.ip_address("10.88.0.7")
IPAddressLike = ipaddress.IPv4Address | ipaddress.IPv6Address | str


def syn(source: str, age_s: float = 0.0, destination: IPAddressLike = POD_IP) -> Syn:
    at = time.monotonic_ns() - int(age_s * 1e9)
    return Syn(ipaddress.ip_address(source), ipaddress.ip_address(destination), 8080, at)


class FakeSynRecord:
    def __init__(self, syns: list[Syn] | None = None, broken: bool = False) -> None:
        self.recorded = syns or []
        self.broken = broken
        self.reads = 0
        self.closed = False

    def syns(self) -> list[Syn]:
        self.reads += 1
        if self.broken:
            raise OSError(9, "Bad file descriptor")
        return list(self.recorded)

    def close(self) -> None:
        self.closed = True


async def asleep_with(record: FakeSynRecord) -> tuple[World, PodKey, int]:
    world = World()
    world.watch.node_networks = lambda: NODE
    world.watch.may_be_local = lambda addr: False
    world.network.syn_log = record
    app = world.register()
    key = PodKey.of(app)
    await world.sleep(key, "forced")
    world.life(key).ports.ports = ()  # checked on the listener's own port
    return world, key, world.network.listeners[-1].getsockname()[1]


def test_a_recent_syn_from_outside_the_node_is_a_client() -> None:
    decision = probes.recent_client([syn("10.244.3.9")], NODE, time.monotonic_ns())
    assert decision is not None and decision.verdict is Verdict.WAKE
    assert decision.source == ipaddress.ip_address("10.244.3.9")
    assert decision.reason == "a SYN from 10.244.3.9 to port 8080"


def test_the_newest_client_syn_decides_and_old_ones_prove_nothing() -> None:
    now = time.monotonic_ns()
    old = syn("10.244.3.9", age_s=probes.RECENT_SYN_NS / 1e9 + 1)
    assert probes.recent_client([old], NODE, now) is None
    newer = syn("10.244.3.10", age_s=0.1)
    newest = syn("10.244.3.11", age_s=0.01)
    decision = probes.recent_client([old, newer, newest], NODE, now)
    assert decision is not None and decision.source == newest.source


def test_probes_and_the_pod_itself_are_no_proof() -> None:
    now = time.monotonic_ns()
    assert probes.recent_client([syn("127.0.0.1")], NODE, now) is None
    assert probes.recent_client([syn("::1", destination="::1")], NODE, now) is None
    itself = syn(str(POD_IP))  # the pod connecting to its own address
    assert probes.recent_client([itself], NODE, now) is None
    assert probes.recent_client([], NODE, now) is None


async def test_a_client_syn_wakes_without_reading_the_queue() -> None:
    record = FakeSynRecord([syn("127.0.0.1"), syn("10.244.3.9")])
    world, key, port = await asleep_with(record)
    app = world.life(key).containers()[0]
    real = socket.create_connection(("127.0.0.1", port))
    await wait_until(lambda: app.phase.phase is Phase.RUNNING, "the wake")
    assert world.net.dumps == 0
    assert "a SYN from 10.244.3.9 to port 8080" in app.phase.history[-1].reason
    assert record.reads == 1 and record.closed  # closed with the copies at the release
    real.close()
    world.network.close()


async def test_probes_still_go_through_the_queue_and_stay_asleep() -> None:
    record = FakeSynRecord([syn("127.0.0.1")])
    world, key, port = await asleep_with(record)
    world.net.queue = [queued_from("127.0.0.1", port)]
    probe = b"GET /healthz HTTP/1.1\r\nUser-Agent: kube-probe/1.30\r\n\r\n"
    assert await asyncio.to_thread(exchange, port, probe) == OK_RESPONSE
    app = world.life(key).containers()[0]
    assert app.phase.phase is Phase.SCALED_DOWN
    assert world.net.dumps >= 1 and record.reads >= 1
    world.network.close()


async def test_an_unreadable_record_falls_back_to_the_queue() -> None:
    record = FakeSynRecord(broken=True)
    world, key, port = await asleep_with(record)
    world.net.queue = [queued_from("10.244.3.9", port)]
    app = world.life(key).containers()[0]
    real = socket.create_connection(("127.0.0.1", port))
    await wait_until(lambda: app.phase.phase is Phase.RUNNING, "the wake")
    assert world.net.dumps == 1
    assert any("reading the SYN record failed" in m for m in world.captured.messages())
    assert "connection 10.244.3.9:1 -> port" in app.phase.history[-1].reason
    real.close()
    world.network.close()


async def test_a_source_that_may_be_the_node_s_is_judged_by_the_queue() -> None:
    """A SYN from an address that binds here (a node address newer than the cached list)
    proves nothing: the queue and a fresh read of the node's addresses decide."""
    record = FakeSynRecord([syn("10.1.2.1")])
    world, key, port = await asleep_with(record)
    world.watch.may_be_local = lambda addr: addr == ipaddress.ip_address("10.1.2.1")
    world.net.queue = [queued_from("10.244.3.9", port)]
    app = world.life(key).containers()[0]
    real = socket.create_connection(("127.0.0.1", port))
    await wait_until(lambda: app.phase.phase is Phase.RUNNING, "the wake")
    assert world.net.dumps == 1
    assert "connection 10.244.3.9:1" in app.phase.history[-1].reason
    real.close()
    world.network.close()
