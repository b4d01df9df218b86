"""Add zeropod's runtime handler to a node's containerd config, and take it off again.

The one implementation both installers use (the Ansible role and ``zeropod install``).

- **Nothing else changes.** The handler is one block between marker comments, appended to
  the config (or written as a drop-in file when the config already imports a directory of
  them); uninstalling removes exactly those bytes, so the config is byte-identical to before.
- **The same cgroups as every other pod.** The handler keeps runc's ``runtime_type``, so CRI
  decodes runc's options for it, and names zeropod's shim with ``runtime_path``. Its options
  are the node's runc handler's options (``SystemdCgroup``, ``BinaryName``, ``Root``, ...),
  copied: with kubeadm's ``SystemdCgroup = true`` a zeropod pod lands in its pod's slice like a
  runc pod. (A runtime type of its own would get no runc options from CRI: cgroupfs paths
  made of a systemd slice name, outside the pod's slice.)
- **Config versions:** 2 (containerd 1.6 and 1.7: ``io.containerd.grpc.v1.cri``) and 3
  (containerd 2.x: ``io.containerd.cri.v1.runtime``). Version 1 is refused with what to do.
- A result that does not parse, or a ``zeropod`` runtime someone else configured, is refused:
  the caller writes nothing.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from typing import Any

BEGIN = "# BEGIN zeropod runtime handler (managed by zeropod's installer; do not edit)"
END = "# END zeropod runtime handler"
HANDLER = "zeropod"
RUNC_TYPE = "io.containerd.runc.v2"
ANNOTATIONS = ["zeropod.ctrox.dev/*"]
CRI_PLUGIN = {2: "io.containerd.grpc.v1.cri", 3: "io.containerd.cri.v1.runtime"}
DROP_IN_NAME = "zeropod.toml"


class ConfigError(ValueError):
    """The config cannot be patched safely; the message says why and what to do."""


@dataclass(frozen=True)
class Change:
    """What installing does to the config: a new text for ``path`` (append), or a drop-in
    file written beside it (the config itself unchanged)."""

    path: str
    text: str
    drop_in: bool = False


def parse(text: str, path: str = "config.toml") -> dict[str, Any]:
    """The config as TOML; ConfigError naming PATH and the problem."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from err


def version_of(config: dict[str, Any], path: str = "config.toml") -> int:
    """The config's version (2 or 3); ConfigError for others."""
    version = config.get("version", 1)
    if version not in CRI_PLUGIN:
        raise ConfigError(
            f"{path}: config version {version} is not supported; allowed: 2 (containerd "
            "1.6/1.7) or 3 (containerd 2.x); run `containerd config migrate` first"
        )
    return int(version)


def cri_section(config: dict[str, Any], version: int) -> dict[str, Any]:
    """The CRI runtime plugin's table (empty when the config leaves it default)."""
    return config.get("plugins", {}).get(CRI_PLUGIN[version], {})


def runc_options(config: dict[str, Any], version: int) -> dict[str, Any]:
    """The options of the node's default runc-type runtime (what pods get today)."""
    runtimes = cri_section(config, version).get("containerd", {})
    default = runtimes.get("default_runtime_name", "runc")
    table = runtimes.get("runtimes", {})
    chosen = table.get(default)
    if chosen is None or chosen.get("runtime_type", RUNC_TYPE) != RUNC_TYPE:
        chosen = next((r for r in table.values() if r.get("runtime_type") == RUNC_TYPE), {})
    return dict(chosen.get("options", {}))


def handler_block(version: int, options: dict[str, Any], shim_path: str) -> str:
    """The managed block (markers included, with a newline before and after)."""
    base = f'plugins."{CRI_PLUGIN[version]}".containerd.runtimes.{HANDLER}'
    lines = [
        "",
        BEGIN,
        f"[{base}]",
        f"  runtime_type = {_toml(RUNC_TYPE)}",
        f"  runtime_path = {_toml(shim_path)}",
        f"  pod_annotations = {_toml(ANNOTATIONS)}",
        f"  container_annotations = {_toml(ANNOTATIONS)}",
    ]
    if options:
        lines.append(f"  [{base}.options]")
        lines += [f"    {_key(k)} = {_toml(v)}" for k, v in sorted(options.items())]
    lines.append(END)
    return "\n".join(lines) + "\n"


def remove_block(text: str) -> str:
    """TEXT without the managed block (unchanged when there is none)."""
    start = text.find("\n" + BEGIN + "\n")
    if start < 0:
        return text
    end = text.find("\n" + END + "\n", start)
    if end < 0:
        raise ConfigError(f"the block starting with {BEGIN!r} has no end marker; fix it by hand")
    return text[:start] + text[end + len(END) + 2 :]


def plan(text: str, shim_path: str, path: str = "/etc/containerd/config.toml") -> Change:
    """What installing the handler into the config at PATH (contents TEXT) writes.

    Idempotent: on a config that has the block already, the block is rebuilt from the
    config without it (so a changed runc option is followed) and the same text results.
    """
    if path.endswith(".tmpl"):
        raise ConfigError(
            f"{path}: k3s/rke2 generate containerd's config from this template; zeropod's "
            "installer does not edit templates. Add the block from `zeropod install "
            "--print-config` to it by hand, or use a node with a plain containerd"
        )
    bare = remove_block(text)
    config = parse(bare, path)
    version = version_of(config, path)
    runtimes = cri_section(config, version).get("containerd", {}).get("runtimes", {})
    drop_in = _drop_in_dir(config, path)
    if HANDLER in runtimes:
        raise ConfigError(
            f"{path}: a runtime named {HANDLER!r} is configured already, not by zeropod's "
            "installer; remove it first"
        )
    block = handler_block(version, runc_options(config, version), shim_path)
    if drop_in:
        return Change(os.path.join(drop_in, DROP_IN_NAME), f"version = {version}\n{block}", True)
    patched = bare + block
    check = parse(patched, path)
    added = cri_section(check, version)["containerd"]["runtimes"][HANDLER]
    if added.get("runtime_path") != shim_path:
        raise ConfigError(f"{path}: the patched config does not read back as written")
    return Change(path, patched)


def _drop_in_dir(config: dict[str, Any], path: str) -> str | None:
    """A directory the config imports every ``*.toml`` of, if any (relative to PATH)."""
    for pattern in config.get("imports", []):
        if not isinstance(pattern, str) or not pattern.endswith("/*.toml"):
            continue
        directory = os.path.join(os.path.dirname(path), pattern[: -len("/*.toml")])
        return os.path.normpath(directory)
    return None


def drop_in_path(config: dict[str, Any], path: str) -> str | None:
    """Where zeropod's drop-in goes when the config at PATH imports a directory of them."""
    directory = _drop_in_dir(config, path)
    return os.path.join(directory, DROP_IN_NAME) if directory else None


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else _toml(key)


def _toml(value: Any) -> str:
    """A TOML literal for the option values containerd configs use."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_toml(v)}" for k, v in value.items()) + "}"
    raise ConfigError(f"cannot write option value {value!r} back as TOML")
