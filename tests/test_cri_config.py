"""CRI requests are shaped like kubelet's, and wait_for polls with a deadline."""

from __future__ import annotations

import itertools
import re
import time

import pytest

from e2e import cri
from e2e.cri_config import (
    container_config,
    container_log_path,
    image_ref,
    pod_config,
    pod_log_directory,
)
from zeropod._gen.cri.runtime.v1 import api_pb2 as api


def test_pod_config_like_kubelet() -> None:
    config = pod_config(
        "web",
        "team",
        uid="u-1",
        annotations={"zeropod.ctrox.dev/scaledown-duration": "10s"},
        port_mappings=[(8080, 30080)],
    )
    assert (config.metadata.name, config.metadata.namespace, config.metadata.uid) == (
        "web",
        "team",
        "u-1",
    )
    assert config.hostname == "web"
    assert config.log_directory == "/var/log/pods/team_web_u-1"
    assert dict(config.annotations) == {"zeropod.ctrox.dev/scaledown-duration": "10s"}
    assert config.labels["io.kubernetes.pod.uid"] == "u-1"
    (mapping,) = config.port_mappings
    assert (mapping.protocol, mapping.container_port, mapping.host_port) == (api.TCP, 8080, 30080)
    ns = config.linux.security_context.namespace_options
    assert (ns.network, ns.pid, ns.ipc) == (api.POD, api.CONTAINER, api.POD)


def test_pod_config_generates_a_fresh_uid() -> None:
    a, b = pod_config("p"), pod_config("p")
    assert a.metadata.uid != b.metadata.uid
    assert re.fullmatch(r"/var/log/pods/default_p_[0-9a-f-]{36}", a.log_directory)


def test_container_config() -> None:
    config = container_config(
        "app", "counter", env={"PORT": "9090"}, args=["-x"], annotations={"a": "b"}
    )
    assert config.metadata.name == "app"
    assert config.image.image == "localhost/zeropod-test/counter:1"
    assert [(kv.key, kv.value) for kv in config.envs] == [("PORT", "9090")]
    assert list(config.args) == ["-x"]
    assert dict(config.annotations) == {"a": "b"}
    assert config.log_path == "app/0.log"
    assert config.linux.security_context.namespace_options.network == api.POD
    assert container_config("app", "counter", log_path="x.log").log_path == "x.log"


@pytest.mark.parametrize(
    ("given", "ref"),
    [
        ("counter", "localhost/zeropod-test/counter:1"),
        ("localhost/zeropod-test/pause:1", "localhost/zeropod-test/pause:1"),
        ("busybox:1.36", "busybox:1.36"),
    ],
)
def test_image_ref(given: str, ref: str) -> None:
    assert image_ref(given) == ref


def test_log_paths() -> None:
    assert pod_log_directory("ns", "p", "u") == "/var/log/pods/ns_p_u"
    assert container_log_path("c", 2) == "c/2.log"


def test_wait_for_returns_the_first_truthy_value() -> None:
    calls = itertools.count(1)
    assert cri.wait_for(lambda: next(calls) >= 3 and "done", timeout=5, interval=0.001) == "done"


def test_wait_for_times_out_naming_what_it_waited_for() -> None:
    start = time.monotonic()
    with pytest.raises(TimeoutError, match=r"waiting for the moon; last: 0"):
        cri.wait_for(lambda: 0, timeout=0.05, interval=0.01, what="the moon")
    assert time.monotonic() - start < 2


def test_wait_for_propagates_predicate_errors() -> None:
    def boom() -> bool:
        raise KeyError("x")

    with pytest.raises(KeyError):
        cri.wait_for(boom, timeout=1)


def test_methods_come_from_the_cri_descriptor() -> None:
    assert cri.METHODS["RunPodSandbox"].path == "/runtime.v1.RuntimeService/RunPodSandbox"
    assert cri.METHODS["ListImages"].path == "/runtime.v1.ImageService/ListImages"
    assert cri.METHODS["ExecSync"].request is api.ExecSyncRequest
    assert cri.METHODS["ExecSync"].response is api.ExecSyncResponse
