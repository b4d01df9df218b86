"""Unit tests for the shim's Go-style flag parser and its start-output rewriting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zeropod.shim import bootstrap, paths
from zeropod.shim.commandline import FlagError, parse_args

CONTAINERD_START = [
    "-namespace", "k8s.io", "-address", "/run/containerd/containerd.sock",
    "-publish-binary", "/usr/bin/containerd", "-id", "abc", "start",
]  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (CONTAINERD_START, {"namespace": "k8s.io", "id": "abc", "action": "start",
                            "publish_binary": "/usr/bin/containerd", "debug": False}),
        (["-namespace=ns", "--id", "x", "-debug", "delete"],
         {"namespace": "ns", "id": "x", "debug": True, "action": "delete"}),
        (["-debug=false", "-id=a=b", "start", "-extra"],
         {"debug": False, "id": "a=b", "action": "start", "rest": ("-extra",)}),
        (["-bundle", "/b", "-id", "x", "delete"], {"bundle": "/b", "action": "delete"}),
        (["-v"], {"version": True, "action": ""}),
        (["-info"], {"info": True}),
        (["--", "-id"], {"action": "-id", "id": ""}),
        (["-", "start"], {"action": "-"}),
        ([], {"action": ""}),
    ],
)  # fmt: skip
def test_parse(argv: list[str], expected: dict) -> None:
    args = parse_args(argv)
    assert args.argv == tuple(argv)
    for key, value in expected.items():
        assert getattr(args, key) == value, key


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["-bogus", "x", "start"], "not defined: -bogus"),
        (["-id"], "needs an argument: -id"),
        (["-debug=maybe"], "invalid boolean"),
        (["---id", "x"], "bad flag syntax"),
        (["-=x"], "bad flag syntax"),
    ],
)
def test_parse_errors(argv: list[str], match: str) -> None:
    with pytest.raises(FlagError, match=match):
        parse_args(argv)


V3_JSON = b'{"version":3,"address":"unix:///run/containerd/s/aa","protocol":"ttrpc"}'


@pytest.mark.parametrize(
    ("output", "address", "version", "rendered"),
    [
        (b"unix:///run/containerd/s/aa", "unix:///run/containerd/s/aa", 2, "unix:///ours"),
        (b"unix:///run/containerd/s/aa\n", "unix:///run/containerd/s/aa", 2, "unix:///ours"),
        (V3_JSON, "unix:///run/containerd/s/aa", 3,
         '{"version":3,"address":"unix:///ours","protocol":"ttrpc"}'),
        (b'{"version": 2, "address": "unix:///x"}', "unix:///x", 2,
         '{"version":2,"address":"unix:///ours"}'),
    ],
)  # fmt: skip
def test_bootstrap_forms(output: bytes, address: str, version: int, rendered: str) -> None:
    b = bootstrap.parse(output)
    assert b.address == address
    assert b.task_api_version == version
    ours = b.with_address("unix:///ours")
    assert ours.render() == rendered
    assert bootstrap.parse(ours.render()) == ours


@pytest.mark.parametrize(
    "output",
    [b"", b"/run/x", b"{not json", b'{"version":3}', b'{"address":"unix:///x","protocol":"grpc"}',
     b"unix:///a\nunix:///b"],
)  # fmt: skip
def test_bootstrap_rejects(output: bytes) -> None:
    with pytest.raises(bootstrap.BootstrapError):
        bootstrap.parse(output)


def test_address_file_rewrite(tmp_path: Path) -> None:
    (tmp_path / "address").write_text("unix:///run/containerd/s/runc")
    bootstrap.write_address_file(tmp_path, "unix:///run/zeropod/shim/ours.sock")
    assert (tmp_path / "address").read_text() == "unix:///run/zeropod/shim/ours.sock"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["address"]


@pytest.mark.parametrize(
    ("spec", "group"),
    [
        ({"annotations": {paths.SANDBOX_ANNOTATION: "pod1"}}, "pod1"),
        ({"annotations": {"other": "x"}}, "ctr"),
        ({}, "ctr"),
        (None, "ctr"),
    ],
)
def test_group_id(tmp_path: Path, spec: dict | None, group: str) -> None:
    if spec is not None:
        (tmp_path / "config.json").write_text(json.dumps(spec))
    assert paths.group_id(tmp_path, "ctr") == group


def test_group_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ZEROPOD_SHIM_DIR", raising=False)
    a = paths.GroupPaths.for_group("/run/containerd/containerd.sock", "k8s.io", "pod1")
    assert a == paths.GroupPaths.for_group("/run/containerd/containerd.sock", "k8s.io", "pod1")
    assert a != paths.GroupPaths.for_group("/run/containerd/containerd.sock", "default", "pod1")
    assert str(a.socket).startswith("/run/zeropod/shim/")
    assert len({a.socket, a.events, a.bootstrap, a.lock, a.log}) == 5
    assert max(len(str(p)) for p in a.sockets()) < 108
