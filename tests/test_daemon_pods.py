"""Pods as units of scale: instance names, grouping of scaled containers, the idle policy."""

from __future__ import annotations

from daemon_fakes import World

from zeropod.config.annotations import CONTAINER_NAMES, PORTS_MAP, SCALEDOWN_DURATION
from zeropod.daemon.lifecycle.idle import scaledown_after, watched_ports
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
