"""The shim's helper that reads a container's pod identity from its OCI spec."""

from typing import Any

import pytest

from zeropod.shim.oci import cri_registration, network_namespace_path

CRI = {
    "io.kubernetes.cri.container-type": "container",
    "io.kubernetes.cri.sandbox-id": "sb1",
    "io.kubernetes.cri.sandbox-name": "web-1",
    "io.kubernetes.cri.sandbox-namespace": "shop",
    "io.kubernetes.cri.container-name": "app",
    "zeropod.ctrox.dev/scaledown-duration": "10s",
}
NETNS = {"namespaces": [{"type": "pid"}, {"type": "network", "path": "/var/run/netns/cni-1"}]}


def test_app_container() -> None:
    spec = {"annotations": CRI, "linux": NETNS}
    assert cri_registration("c1", "/run/b/c1", 42, spec) == {
        "container_id": "c1",
        "pod": "web-1",
        "namespace": "shop",
        "container": "app",
        "sandbox_id": "sb1",
        "netns": "/var/run/netns/cni-1",
        "bundle": "/run/b/c1",
        "pid": 42,
        "annotations": CRI,
    }


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"annotations": {**CRI, "io.kubernetes.cri.container-type": "sandbox"}},
        {"annotations": {"io.kubernetes.cri.container-type": "container"}},
        {"annotations": None},
    ],
)
def test_nothing_to_register(spec: dict[str, Any]) -> None:
    assert cri_registration("c1", "/run/b/c1", 42, spec) is None


@pytest.mark.parametrize(
    ("linux", "path"),
    [
        (NETNS, "/var/run/netns/cni-1"),
        ({"namespaces": [{"type": "network"}]}, ""),
        ({"namespaces": []}, ""),
        ({}, ""),
        (None, ""),
    ],
)
def test_network_namespace_path(linux: Any, path: str) -> None:
    assert network_namespace_path({"linux": linux}) == path
