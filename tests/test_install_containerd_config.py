"""The containerd config patcher against the configs containerd itself generates.

`containerd config default` of 1.7 and 2.1 runs at test time, from the debs setup caches
(extracted without root); the cases are edits of those, as operators make them.
"""

from __future__ import annotations

import glob
import os
import subprocess
from pathlib import Path

import pytest

from zeropod.install.containerd_config import (
    BEGIN,
    CRI_PLUGIN,
    ConfigError,
    cri_section,
    parse,
    plan,
    remove_block,
)

SHIM = "/opt/zeropod/bin/containerd-shim-zeropod-v2"
CACHE = Path(os.environ.get("ZEROPOD_CACHE", "/var/cache/zeropod"))


@pytest.fixture(scope="module", params=["1.7", "2.1"])
def default_config(request: pytest.FixtureRequest, tmp_path_factory) -> tuple[str, int]:
    """(`containerd config default` of that version, its config version)."""
    debs = glob.glob(str(CACHE / "debs" / f"containerd_{request.param}.*.deb"))
    if not debs:
        pytest.skip(f"no containerd {request.param} deb in {CACHE}/debs (run make setup)")
    root = tmp_path_factory.mktemp(f"containerd-{request.param}")
    subprocess.run(["dpkg-deb", "-x", debs[0], str(root)], check=True)
    out = subprocess.run(
        [str(root / "usr/bin/containerd"), "config", "default"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out, 3 if request.param.startswith("2.") else 2


def zeropod_runtime(text: str, version: int) -> dict:
    return cri_section(parse(text), version)["containerd"]["runtimes"]["zeropod"]


def test_the_handler_keeps_runc_type_and_options_and_uninstall_is_byte_identical(
    default_config: tuple[str, int],
) -> None:
    text, version = default_config
    change = plan(text, SHIM)
    assert not change.drop_in and change.text.startswith(text)
    added = zeropod_runtime(change.text, version)
    assert added["runtime_type"] == "io.containerd.runc.v2"
    assert added["runtime_path"] == SHIM
    assert added["pod_annotations"] == ["zeropod.ctrox.dev/*"]
    runc = cri_section(parse(text), version)["containerd"]["runtimes"]["runc"]
    assert added["options"] == runc["options"]
    # Everything else reads back the same.
    before, after = parse(text), parse(change.text)
    del cri_section(after, version)["containerd"]["runtimes"]["zeropod"]
    assert before == after
    assert remove_block(change.text) == text
    assert plan(change.text, SHIM).text == change.text  # idempotent


def test_kubeadms_systemd_cgroup_driver_is_inherited(default_config: tuple[str, int]) -> None:
    text, version = default_config
    edited = text.replace("SystemdCgroup = false", "SystemdCgroup = true")
    edited = edited.replace("BinaryName = ''", "BinaryName = '/usr/local/sbin/runc'")
    edited = edited.replace('BinaryName = ""', 'BinaryName = "/usr/local/sbin/runc"')
    options = zeropod_runtime(plan(edited, SHIM).text, version)["options"]
    assert options["SystemdCgroup"] is True and options["BinaryName"] == "/usr/local/sbin/runc"
    # A changed runc option is followed on the next install.
    again = plan(
        plan(edited, SHIM).text.replace("SystemdCgroup = true", "SystemdCgroup = false", 1), SHIM
    )
    assert zeropod_runtime(again.text, version)["options"]["SystemdCgroup"] is False


def test_a_minimal_config_without_trailing_newline() -> None:
    text = 'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd]\n  snapshotter = "x"'
    change = plan(text, SHIM)
    assert remove_block(change.text) == text
    assert zeropod_runtime(change.text, 2)["runtime_path"] == SHIM
    assert "options" not in zeropod_runtime(change.text, 2)  # runc's defaults, as for runc


def test_a_custom_default_runtime_is_the_one_inherited() -> None:
    plugin = CRI_PLUGIN[3]
    text = (
        "version = 3\n"
        f"[plugins.'{plugin}'.containerd]\n"
        "  default_runtime_name = 'crun-like'\n"
        f"[plugins.'{plugin}'.containerd.runtimes.runc]\n"
        "  runtime_type = 'io.containerd.runc.v2'\n"
        f"[plugins.'{plugin}'.containerd.runtimes.crun-like]\n"
        "  runtime_type = 'io.containerd.runc.v2'\n"
        f"[plugins.'{plugin}'.containerd.runtimes.crun-like.options]\n"
        "  BinaryName = '/usr/bin/crun'\n"
        "  Root = '/run/crun'\n"
    )
    options = zeropod_runtime(plan(text, SHIM).text, 3)["options"]
    assert options == {"BinaryName": "/usr/bin/crun", "Root": "/run/crun"}


@pytest.mark.parametrize(
    ("text", "path", "message"),
    [
        ("root = '/var/lib/containerd'\n", "/etc/containerd/config.toml", "config version 1"),
        ("version = 2\n[plugins\n", "/etc/containerd/config.toml", "not valid TOML"),
        (
            "version = 2\n[plugins.'io.containerd.grpc.v1.cri'.containerd.runtimes.zeropod]\n"
            "runtime_type = 'io.containerd.zeropod.v2'\n",
            "/etc/containerd/config.toml",
            "configured already",
        ),
        ("version = 2\n", "/var/lib/rancher/k3s/agent/etc/containerd/config.toml.tmpl", "k3s"),
        (f"version = 2\n\n{BEGIN}\n[x]\n", "/etc/containerd/config.toml", "no end marker"),
    ],
)
def test_refusals_name_the_file_and_the_way_out(text: str, path: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        plan(text, SHIM, path)
    assert path in str(info.value) or "marker" in message


def test_a_config_that_imports_a_directory_gets_a_drop_in(tmp_path: Path) -> None:
    text = 'version = 3\nimports = ["conf.d/*.toml"]\n'
    change = plan(text, SHIM, str(tmp_path / "config.toml"))
    assert change.drop_in and change.path == str(tmp_path / "conf.d" / "zeropod.toml")
    assert zeropod_runtime(change.text, 3)["runtime_path"] == SHIM
