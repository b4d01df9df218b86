"""Install and uninstall steps on a node, each planned (for check and diff modes) before it runs.

The package (``make package``, see ``scripts/package``) is a directory: the zeropod wheel and
every wheel it needs (pip's included), zeropod's CRIU build with the libraries it links, and
the systemd units. On the node it becomes:

- ``/opt/zeropod/venv``: a virtualenv on the node's python3 with zeropod installed from the
  wheels, offline (``--no-index``); the shim is ``/opt/zeropod/venv/bin/containerd-shim-
  zeropod-v2``, named by containerd's config (``runtime_path``), so nothing goes on PATH;
- ``/opt/zeropod/bin/criu`` and ``/opt/zeropod/lib``: zeropod's CRIU; the shim puts it first on
  the runc shim's PATH, for zeropod's pods only;
- ``/etc/systemd/system/zeropod.service`` and ``zeropod@.service``, running the venv's python;
- the ``zeropod`` runtime handler in containerd's config (``containerd_config``).

Services: the daemon is enabled and started; systemd reloads only when a unit changed, and
containerd restarts only when its config changed. Uninstall stops and removes all of it,
leaves containerd's config byte-identical to before, and removes the state directories.
"""

from __future__ import annotations

import difflib
import filecmp
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from zeropod.install import containerd_config
from zeropod.install.host import Host

PREFIX = "/opt/zeropod"
VENV = f"{PREFIX}/venv"
SHIM = f"{VENV}/bin/containerd-shim-zeropod-v2"
UNIT_DIR = "/etc/systemd/system"
UNITS = ("zeropod.service", "zeropod@.service")
STATE_DIRS = ("/var/lib/zeropod", "/run/zeropod")
CONTAINERD_CONFIG = "/etc/containerd/config.toml"
UNIT_PYTHON = "ExecStart=/usr/bin/python3 "
TEMPLATE_MARKER = "zeropod.shim.template import main"


@dataclass
class Action:
    """One change: what it is (for the report), the diff it makes, and how to make it."""

    summary: str
    run: Callable[[], None]
    diff: str = ""
    after: list[str] = field(default_factory=list)
    """Follow-ups it calls for: "reload" (systemd), "restart-daemon", "restart-containerd"."""
    services: bool = False
    """Runs after systemd has reloaded the units (starting the daemon), not with the files."""


@dataclass(frozen=True)
class Package:
    """The package directory: wheels, CRIU, units (see the module docstring)."""

    root: Path

    @property
    def version(self) -> str:
        return (self.root / "VERSION").read_text().strip()

    @property
    def criu(self) -> Path:
        return self.root / "bin" / "criu"

    def files(self, sub: str) -> list[Path]:
        return sorted(p for p in (self.root / sub).iterdir() if p.is_file())


def text_diff(path: str, before: str | None, after: str | None) -> str:
    lines = difflib.unified_diff(
        (before or "").splitlines(keepends=True),
        (after or "").splitlines(keepends=True),
        f"{path} (before)" if before is not None else "/dev/null",
        f"{path} (after)" if after is not None else "/dev/null",
    )
    return "".join(lines)


def render_unit(text: str) -> str:
    """A unit of ``units/`` for the node: its python is the venv's."""
    return text.replace(UNIT_PYTHON, f"ExecStart={VENV}/bin/python3 ")


def plan_install(host: Host, package: Package, config: str = CONTAINERD_CONFIG) -> list[Action]:
    """The changes installing PACKAGE makes on HOST, in order (empty: nothing to do)."""
    actions: list[Action] = []
    for directory in ("bin", "lib"):
        for source in package.files(directory):
            path = f"{PREFIX}/{directory}/{source.name}"
            if host.exists(path) and filecmp.cmp(source, host.path(path), shallow=False):
                continue
            mode = 0o755 if directory == "bin" or source.name == "criu" else 0o644
            actions.append(
                Action(f"copy {path}", lambda s=source, p=path, m=mode: host.copy(s, p, m))
            )
    actions += _venv(host, package)
    for unit in package.files("units"):
        path = f"{UNIT_DIR}/{unit.name}"
        before, after = host.read(path), render_unit(unit.read_text())
        if before != after:
            actions.append(
                Action(
                    f"write {path}",
                    lambda p=path, t=after: host.write(p, t),
                    text_diff(path, before, after),
                    ["reload", "restart-daemon"],
                )
            )
    actions += _config(host, config)
    restart = any("restart-daemon" in a.after for a in actions)
    if restart or daemon_needs_start(host):
        actions.append(
            Action("enable zeropod.service and (re)start it", lambda: _start(host), services=True)
        )
    return actions


def _start(host: Host) -> None:
    host.systemctl("enable", "zeropod.service")
    host.systemctl("restart", "zeropod.service")


def _venv(host: Host, package: Package) -> list[Action]:
    version = package.version
    zeropod = host.path(f"{VENV}/bin/zeropod")
    if zeropod.exists():
        proc = host.run([f"{VENV}/bin/zeropod", "--version"], check=False)
        if proc.stdout.strip() == f"zeropod {version}":
            return []

    def make() -> None:
        staging = f"{PREFIX}/wheels"
        host.remove(staging)
        for wheel in package.files("wheels"):
            host.copy(wheel, f"{staging}/{wheel.name}")
        host.remove(VENV)
        host.run(["python3", "-m", "venv", "--without-pip", VENV])
        pip = next(w.name for w in package.files("wheels") if w.name.startswith("pip-"))
        install = [f"{VENV}/bin/python3", f"{staging}/{pip}/pip", "install", "--quiet"]
        install += ["--no-index", "--find-links", staging, f"zeropod=={version}"]
        host.run(install)
        host.remove(staging)

    summary = f"install zeropod {version} into {VENV} (offline, from the package)"
    return [Action(summary, make, after=["restart-daemon"])]


def _config(host: Host, config: str) -> list[Action]:
    text = host.read(config)
    if text is None:
        raise containerd_config.ConfigError(
            f"{config}: no containerd config; write one first (`containerd config default`)"
        )
    change = containerd_config.plan(text, SHIM, config)
    before = host.read(change.path)
    if before == change.text:
        return []
    return [
        Action(
            f"write {change.path} (the zeropod runtime handler)",
            lambda: host.write(change.path, change.text),
            text_diff(change.path, before, change.text),
            ["restart-containerd"],
        )
    ]


def plan_uninstall(host: Host, config: str = CONTAINERD_CONFIG) -> list[Action]:
    """The changes uninstalling makes on HOST, in order (empty: nothing of zeropod is there)."""
    actions: list[Action] = []
    if host.exists(f"{UNIT_DIR}/zeropod.service"):
        actions.append(
            Action(
                "stop and disable zeropod.service and the pods' zeropod@ units",
                lambda: _stop_all(host),
            )
        )
    text = host.read(config)
    if text is not None:
        bare = containerd_config.remove_block(text)
        if bare != text:
            actions.append(
                Action(
                    f"remove the zeropod runtime handler from {config}",
                    lambda: host.write(config, bare),
                    text_diff(config, text, bare),
                    ["restart-containerd"],
                )
            )
        drop_in = containerd_config.drop_in_path(containerd_config.parse(bare, config), config)
        if (
            drop_in
            and host.exists(drop_in)
            and containerd_config.BEGIN in (host.read(drop_in) or "")
        ):
            actions.append(
                Action(
                    f"remove {drop_in}", lambda: host.remove(drop_in), "", ["restart-containerd"]
                )
            )
    for unit in UNITS:
        path = f"{UNIT_DIR}/{unit}"
        if host.exists(path):
            before = host.read(path)
            actions.append(
                Action(
                    f"remove {path}",
                    lambda p=path: host.remove(p),
                    text_diff(path, before, None),
                    ["reload"],
                )
            )
    for path in (PREFIX, *STATE_DIRS):
        if host.exists(path):
            actions.append(Action(f"remove {path}", lambda p=path: host.remove(p)))
    return actions


def _stop_all(host: Host) -> None:
    host.systemctl("disable", "--now", "zeropod.service", check=False)
    host.systemctl("stop", "zeropod@*.socket", "zeropod@*.service", check=False)
    # The interposer template (containerd started it with the first pod, zeropod.shim.template)
    # would linger a minute after the last pod; it forks nothing more once the shim is gone.
    host.run(["pkill", "-f", TEMPLATE_MARKER], check=False)


def apply(host: Host, actions: list[Action]) -> list[str]:
    """Run ACTIONS: the files in order, then systemd's reload if a unit changed, then the
    services, then containerd's restart if its config changed. Returns what was done."""
    done = []
    for action in (a for a in actions if not a.services):
        action.run()
        done.append(action.summary)
    follow = {f for action in actions for f in action.after}
    if "reload" in follow:
        host.systemctl("daemon-reload")
        done.append("systemctl daemon-reload")
    for action in (a for a in actions if a.services):
        action.run()
        done.append(action.summary)
    if "restart-containerd" in follow:
        host.systemctl("restart", "containerd.service")
        done.append("systemctl restart containerd.service")
    return done


def daemon_needs_start(host: Host) -> bool:
    """True when zeropod.service is installed but not running or not enabled."""
    if not host.exists(f"{UNIT_DIR}/zeropod.service"):
        return False
    active = host.systemctl("is-active", "zeropod.service", check=False).stdout.strip()
    enabled = host.systemctl("is-enabled", "zeropod.service", check=False).stdout.strip()
    return active != "active" or enabled != "enabled"
