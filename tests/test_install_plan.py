"""zeropod install on a fake node: a temporary root and a recorded command runner.

What an operator relies on: a bare node gets every change, a second run makes none, check
mode changes nothing, containerd restarts only when its config changed, and uninstall leaves
containerd's config byte-identical and nothing of zeropod behind.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from zeropod.install import cli, plan
from zeropod.install.host import Host

CONFIG = """version = 3

[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
  runtime_type = 'io.containerd.runc.v2'
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
    SystemdCgroup = true
"""


class FakeNode:
    """Commands a node would run: systemctl state, a venv that 'installs' zeropod."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.calls: list[list[str]] = []
        self.active = False
        self.enabled = False

    def __call__(self, argv: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        assert argv[:2] == ["chroot", str(self.root)], argv  # a root other than / is chrooted
        argv = argv[2:]
        self.calls.append(argv)
        out, code = "", 0
        if argv[:2] == ["systemctl", "is-active"]:
            out, code = ("active", 0) if self.active else ("inactive", 3)
        elif argv[:2] == ["systemctl", "is-enabled"]:
            out, code = ("enabled", 0) if self.enabled else ("disabled", 1)
        elif argv[:2] == ["systemctl", "enable"]:
            self.enabled = True
        elif argv[:2] == ["systemctl", "restart"] and argv[2] == "zeropod.service":
            self.active = True
        elif argv[:2] == ["systemctl", "disable"]:
            self.enabled = self.active = False
        elif len(argv) > 2 and argv[1].endswith("/pip") and argv[2] == "install":
            exe = self.root / plan.VENV.lstrip("/") / "bin" / "zeropod"
            exe.parent.mkdir(parents=True, exist_ok=True)
            exe.write_text("#!/bin/sh\n")
        elif argv[-1] == "--version" and argv[0].endswith("/zeropod"):
            out = "zeropod 0.1.0"
        return subprocess.CompletedProcess(argv, code, out + "\n", "")

    def names(self) -> list[str]:
        return [" ".join(c[:3]) for c in self.calls if "is-" not in " ".join(c)]


@pytest.fixture
def package(tmp_path: Path) -> plan.Package:
    root = tmp_path / "package"
    for sub in ("wheels", "bin", "lib", "units"):
        (root / sub).mkdir(parents=True)
    (root / "VERSION").write_text("0.1.0\n")
    (root / "wheels" / "pip-26.3-py3-none-any.whl").write_text("pip")
    (root / "wheels" / "zeropod-0.1.0-py3-none-any.whl").write_text("zeropod")
    (root / "bin" / "criu").write_text("#!/bin/sh\n")
    (root / "lib" / "criu").write_text("ELF")
    repo_units = Path(__file__).resolve().parent.parent / "units"
    for unit in repo_units.glob("*.service"):
        (root / "units" / unit.name).write_text(unit.read_text())
    return plan.Package(root)


@pytest.fixture
def node(tmp_path: Path) -> tuple[Host, FakeNode]:
    root = tmp_path / "node"
    (root / "etc/containerd").mkdir(parents=True)
    (root / "etc/containerd/config.toml").write_text(CONFIG)
    fake = FakeNode(root)
    return Host(str(root), runner=fake), fake


def install(host: Host, package: plan.Package) -> list[str]:
    return plan.apply(host, plan.plan_install(host, package))


def test_a_bare_node_gets_everything_and_a_second_run_nothing(node, package) -> None:
    host, fake = node
    done = install(host, package)
    assert done[-1] == "systemctl restart containerd.service"
    assert "systemctl daemon-reload" in done
    unit = host.read("/etc/systemd/system/zeropod.service") or ""
    assert "ExecStart=/opt/zeropod/venv/bin/python3 -m zeropod.daemon.main" in unit
    assert host.exists("/opt/zeropod/bin/criu") and host.exists("/opt/zeropod/lib/criu")
    config = host.read("/etc/containerd/config.toml") or ""
    assert 'runtime_path = "/opt/zeropod/venv/bin/containerd-shim-zeropod-v2"' in config
    assert "SystemdCgroup = true" in config.split("BEGIN zeropod")[1]
    assert fake.active and fake.enabled
    fake.calls.clear()
    assert plan.plan_install(host, package) == []  # idempotent: no change, no restart


def test_a_stopped_daemon_is_started_without_restarting_containerd(node, package) -> None:
    host, fake = node
    install(host, package)
    fake.active = False
    fake.calls.clear()
    done = install(host, package)
    assert done == ["enable zeropod.service and (re)start it"]
    assert not any("containerd" in " ".join(c) for c in fake.calls)


def test_check_mode_changes_nothing_and_reports_everything(node, package, capsys) -> None:
    host, fake = node
    before = host.read("/etc/containerd/config.toml")
    code = cli.main(
        [
            "--host-root",
            str(host.root),
            "--package",
            str(package.root),
            "--check",
            "--diff",
            "--skip-preflight",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out.splitlines()
    assert json.loads(out[-1]) == {"changed": True, "check": True}
    assert any(line.startswith("would: write /etc/containerd/config.toml") for line in out)
    assert any(line.startswith("+  runtime_path") for line in out)
    assert host.read("/etc/containerd/config.toml") == before
    assert not host.exists("/etc/systemd/system/zeropod.service")
    # Only questions were asked of the node: nothing enabled, started or restarted.
    assert all(c[1].startswith("is-") for c in fake.calls if c[0] == "systemctl")
    assert not any(c[0] == "python3" for c in fake.calls)


def test_uninstall_restores_the_config_to_the_byte(node, package) -> None:
    host, fake = node
    install(host, package)
    host.write("/var/lib/zeropod/images/x/pages-1.img", "data")
    done = plan.apply(host, plan.plan_uninstall(host))
    assert host.read("/etc/containerd/config.toml") == CONFIG
    for path in ("/opt/zeropod", "/var/lib/zeropod", "/etc/systemd/system/zeropod.service"):
        assert not host.exists(path), path
    assert done[-1] == "systemctl restart containerd.service"
    assert not fake.enabled and not fake.active
    assert ["pkill", "-f", "zeropod.shim.template import main"] in fake.calls
    assert plan.plan_uninstall(host) == []  # nothing left to take off


def test_preflight_problems_stop_before_any_change(node, package, capsys, monkeypatch) -> None:
    host, _ = node
    monkeypatch.setattr(
        "zeropod.install.preflight.check", lambda h, c: ["containerd 1.6 is not supported"]
    )
    code = cli.main(["--host-root", str(host.root), "--package", str(package.root)])
    assert code == 2
    err = capsys.readouterr().err
    assert "preflight: containerd 1.6 is not supported" in err and "nothing was changed" in err
    assert host.read("/etc/containerd/config.toml") == CONFIG


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("containerd github.com/containerd/containerd 1.7.24~ds1 \n", (1, 7)),
        ("containerd github.com/containerd/containerd/v2 2.1.9+unknown\n", (2, 1)),
        ("containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+b1\n", (1, 6)),
    ],
)
def test_containerd_versions_are_read(text: str, version: tuple[int, int]) -> None:
    from zeropod.install.preflight import version_tuple

    assert version_tuple(text.split(None, 2)[-1]) == version
