"""The runc shim's own mount namespace (zeropod.shim.mountns) and the Create it refuses."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from shim_rig import CID, Rig

from zeropod.shim import mountns
from zeropod.ttrpc import TtrpcError
from zeropod.ttrpc.status import Code


@pytest.fixture
def with_unshare(tmp_path: Path) -> dict[str, str]:
    """An environment whose PATH has an ``unshare``."""
    exe = tmp_path / "bin" / "unshare"
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    return {"PATH": str(exe.parent)}


def test_the_runc_shim_gets_a_slave_mount_namespace_by_default(
    with_unshare: dict[str, str],
) -> None:
    unshare = os.path.join(with_unshare["PATH"], "unshare")
    assert mountns.wrap(["runc-shim", "start"], with_unshare, euid=0) == [
        unshare,
        "--mount",
        "--propagation",
        "slave",
        "runc-shim",
        "start",
    ]


def test_node_mode_keeps_the_nodes_namespace(with_unshare: dict[str, str]) -> None:
    env = {**with_unshare, mountns.MODE_ENV: "Node"}
    assert mountns.wrap(["runc-shim", "start"], env, euid=0) == ["runc-shim", "start"]


def test_a_shim_not_run_as_root_cannot_unshare(with_unshare: dict[str, str]) -> None:
    assert mountns.wrap(["runc-shim"], with_unshare, euid=1000) == ["runc-shim"]


def test_an_unknown_mode_is_named_with_the_allowed_ones(
    with_unshare: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    env = {**with_unshare, mountns.MODE_ENV: "private"}
    with caplog.at_level(logging.WARNING):
        assert mountns.mode(env) == "pod"
    assert "ZEROPOD_SHIM_MOUNT_NS='private' is not one of pod/node" in caplog.text


def test_without_unshare_the_runc_shim_runs_as_before(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        assert mountns.wrap(["runc-shim"], {"PATH": str(tmp_path)}, euid=0) == ["runc-shim"]
    assert "unshare not found" in caplog.text


def test_own_namespace_and_unknown_pids_are_not_separate() -> None:
    assert not mountns.separate(os.getpid())
    assert not mountns.separate(2**22 + 1)  # above pid_max: no such process


@pytest.mark.parametrize(
    ("spec", "found"),
    [
        ({}, []),
        ({"mounts": [{"destination": "/data", "options": ["rbind", "rprivate"]}]}, []),
        ({"mounts": [{"destination": "/data", "options": ["rbind", "rslave"]}]}, []),
        (
            {"mounts": [{"destination": "/csi", "options": ["rbind", "rshared"]}]},
            ["mount /csi (rshared)"],
        ),
        ({"linux": {"rootfsPropagation": "shared"}}, ["linux.rootfsPropagation shared"]),
        ({"mounts": ["junk", {"options": None}], "linux": None}, []),
    ],
)
def test_mounts_that_propagate_to_the_node_are_found(spec: dict, found: list[str]) -> None:
    assert mountns.shared_propagation(spec) == found


async def test_create_refuses_bidirectional_propagation_in_a_separate_namespace(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    bidirectional = {"destination": "/csi", "options": ["rbind", "rshared"]}
    (rig.tmp / "config.json").write_text(json.dumps({"annotations": {}, "mounts": [bidirectional]}))
    monkeypatch.setattr(mountns, "separate", lambda pid: True)
    with pytest.raises(TtrpcError) as refused:
        await rig.call("Create", id=CID, bundle=str(rig.tmp))
    assert refused.value.code == Code.FAILED_PRECONDITION
    assert "mount /csi (rshared): Bidirectional mount propagation" in str(refused.value)
    assert "ZEROPOD_SHIM_MOUNT_NS=node" in str(refused.value)
    assert "Create" not in rig.runc.calls and rig.ctx.tracker.get(CID) is None


async def test_create_lets_bidirectional_propagation_through_in_the_nodes_namespace(
    rig: Rig,
) -> None:
    bidirectional = {"destination": "/csi", "options": ["rbind", "rshared"]}
    (rig.tmp / "config.json").write_text(json.dumps({"annotations": {}, "mounts": [bidirectional]}))
    await rig.run_container()  # the fake runc shim is this process: this namespace
    assert rig.runc.calls[:3] == ["Connect", "Create", "Start"]  # its pid, asked once
