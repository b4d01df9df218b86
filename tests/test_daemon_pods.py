"""Pods as units of scale: instance names, grouping of scaled containers, the idle policy."""

from __future__ import annotations

import asyncio

import pytest
from daemon_fakes import World

from zeropod.config.annotations import CONTAINER_NAMES, PORTS_MAP, SCALEDOWN_DURATION
from zeropod.daemon.lifecycle.idle import scaledown_after
from zeropod.daemon.lifecycle.portwatch import PortWatch, watched_ports
from zeropod.daemon.model.pod import PodKey


def test_unit_names_of_a_pod() -> None:
    key = PodKey("default", "web-1")
    assert key.instance == "default_web\\x2d1"
    assert key.service == "zeropod@default_web\\x2d1.service"
    assert key.socket == "zeropod@default_web\\x2d1.socket"
    assert PodKey("kube-system", "a.b").instance == "kube\\x2dsystem_a.b"


def test_only_managed_containers_of_the_same_pod_are_grouped() -> None:
    world = World()
    names = {CONTAINER_NAMES: "app,worker"}
    app = world.register("app", annotations=names)
    worker = world.register("worker", annotations=names)
    world.register("side", annotations=names)  # not named: runs unscaled
    other = world.register("app", pod="db")
    world.register("app", pod="bad", annotations={SCALEDOWN_DURATION: "soon"})
    key = PodKey("shop", "web-1")
    assert world.life(key).containers() == [app, worker]
    assert world.life(PodKey.of(other)).containers() == [other]
    assert [life.key for life in world.pods.lives()] == [PodKey("shop", "db"), key]
    assert app.unit == "zeropod@shop_web\\x2d1.service"
    assert world.registry.get("id-web-1-side").unit is None


def test_scaledown_after_takes_the_longest_and_zero_means_never() -> None:
    world = World()
    a = world.register("a", annotations={SCALEDOWN_DURATION: "30s"})
    b = world.register("b", annotations={SCALEDOWN_DURATION: "2m"})
    assert scaledown_after([a, b]) == 120.0
    c = world.register("c", pod="p2", annotations={SCALEDOWN_DURATION: "0"})
    d = world.register("d", pod="p2")
    assert scaledown_after([c, d]) is None
    assert scaledown_after([d]) == 60.0


def test_watched_ports_use_the_ports_map_else_detection() -> None:
    world = World()
    mapped = {PORTS_MAP: "app=80,81"}
    app = world.register("app", annotations=mapped)
    side = world.register("side", annotations=mapped)
    ports, detected = watched_ports([app, side], lambda pid: [9000] if pid == side.pid else [1])
    assert ports == [80, 81, 9000]
    assert detected == {side.identity.container_id: (9000,)}  # recorded by the loop
    side.listen_ports = detected[side.identity.container_id]
    assert side.ports == (9000,)
    assert app.ports == (80, 81)


class Listening:
    """A netns view whose listening sockets are ``inodes``."""

    def __init__(self) -> None:
        self.inodes: frozenset[int] = frozenset({7})
        self.reads = 0

    async def listening(self) -> frozenset[int]:
        self.reads += 1
        return self.inodes


def test_port_watch_detects_again_only_when_listeners_or_processes_change() -> None:
    world = World()
    app = world.register("app")
    answers = {app.pid: [8080]}
    watch = PortWatch(lambda pid: answers[pid])
    net = Listening()

    def poll() -> tuple[list[int], dict[str, tuple[int, ...]]]:
        return asyncio.run(watch.ports(net, [app]))

    assert poll() == ([8080], {app.identity.container_id: (8080,)})
    answers[app.pid] = [9090]  # not looked at: nothing in the netns changed
    assert poll()[0] == [8080] and watch.detections == 1
    net.inodes = frozenset({7, 8})  # a new listener
    assert poll()[0] == [9090] and watch.detections == 2
    app.pid += 1  # the container's process was replaced (a restore)
    answers[app.pid] = [9091]
    assert poll()[0] == [9091] and watch.detections == 3
    assert poll()[0] == [9091] and watch.detections == 3
    assert net.reads == 5


def test_port_watch_needs_no_detection_when_every_port_is_mapped() -> None:
    world = World()
    app = world.register("app", annotations={PORTS_MAP: "app=80"})
    watch = PortWatch(lambda pid: pytest.fail("detected a mapped container's ports"))
    net = Listening()
    assert asyncio.run(watch.ports(net, [app])) == ([80], {})
    assert net.reads == 0 and watch.detections == 0
