"""Fixtures for the end-to-end suite on the real node (root, systemd-nspawn, containerd).

Every test here is marked `node`. The suite runs once per containerd version named by
`--containerd` (default "2.1 1.7"); pytest groups the tests by version so the node switches
containerd only once per version.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from e2e.cri import Cri
from e2e.node import Node
from e2e.scaling import Daemon


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--containerd",
        default="2.1 1.7",
        help="space-separated containerd versions to run the node suite against",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.node)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "containerd_version" in metafunc.fixturenames:
        versions = metafunc.config.getoption("containerd").split()
        metafunc.parametrize(
            "containerd_version",
            versions,
            scope="session",
            ids=[f"containerd-{v}" for v in versions],
        )


@pytest.fixture(scope="session")
def node(containerd_version: str) -> Node:
    if os.geteuid() != 0:
        pytest.skip("the node test-bed needs root (systemd-nspawn)")
    return Node.ensure_started(containerd=containerd_version)


@pytest.fixture(scope="session")
def cri(node: Node) -> Iterator[Cri]:
    with Cri.for_node(node) as client:
        yield client


@pytest.fixture
def daemon(node: Node) -> Daemon:
    """The node's zeropod daemon, once it answers on its control socket."""
    d = Daemon(node)
    d.state_waiting("-")
    return d
