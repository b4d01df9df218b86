"""The bundle's OCI spec (config.json): CRIU's options for this container, and reading it.

runc reads CRIU options from the file named by the container's ``org.criu.config``
annotation (without it, from ``/etc/criu/runc.conf``, which would change every container on
the node). At Create the interposer points that annotation at zeropod's own CRIU config, one
file per container (:func:`criu_config_for`), so one restore can ask for more than the rest:

- ``skip-in-flight``: a connection still in the app's accept queue does not refuse the dump;
  with the daemon's held socket in the same reuseport group it migrates there.
- ``network-lock skip``: no iptables/nftables lock around the dump; the held socket keeps the
  port served, and a lock would only delay (SYN retransmits) the clients it should protect.

- ``lazy-pages``, only while a lazy restore runs (:func:`write_criu_config` with ``lazy``):
  memory is served by a page server (:mod:`zeropod.shim.lazypages`). The file is rewritten
  without it as soon as the restore returns, because runc reads the same file for the next
  dump, where ``lazy-pages`` would ask for a page-server dump instead.

- zeropod's own, when the ``criu`` runc runs has them
  (:func:`zeropod.shim.criubinary.zeropod_options`): ``freeze-poll-fast`` (a dump sees the
  frozen cgroup within milliseconds, not after CRIU's 100 ms step), ``tmpfs-no-gzip``
  (no gzip exec per tmpfs mount at a dump and at a restore) and ``tmpfs-untar-inline`` (no
  tar exec either at a restore: CRIU extracts the tarball itself).

Not ``tcp-established``: an open connection means the app is not idle; restoring one
without a network lock would hand the peer a socket whose state moved on (resets). The
daemon sleeps only without open connections and retries a dump refused for one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from zeropod.shim import criubinary

CRIU_ANNOTATION = "org.criu.config"
DEFAULT_CRIU_CONFIG = "/run/zeropod/criu.conf"
CRIU_CONFIG_ENV = "ZEROPOD_CRIU_CONFIG"
CRIU_OPTIONS = ("skip-in-flight", "network-lock skip")
LAZY_OPTION = "lazy-pages"


def criu_config_path() -> Path:
    return Path(os.environ.get(CRIU_CONFIG_ENV) or DEFAULT_CRIU_CONFIG)


def criu_config_for(container_id: str) -> Path:
    """Container CONTAINER_ID's CRIU config file, in a directory next to the shared one."""
    base = criu_config_path()
    return base.with_name(f"{base.stem}.d") / f"{container_id}.conf"


def prepare_criu_configs() -> None:
    """Make the per-container config directory (0700: CRIU runs as root); raises OSError."""
    criu_config_for("-").parent.mkdir(mode=0o700, parents=True, exist_ok=True)


def forget_criu_config(container_id: str) -> None:
    """Remove CONTAINER_ID's config file and page-server log (its task is deleted); raises
    OSError."""
    path = criu_config_for(container_id)
    path.unlink(missing_ok=True)
    path.with_suffix(".lazy-pages.log").unlink(missing_ok=True)


def write_criu_config(path: Path | None = None, *, lazy: bool = False) -> Path:
    """Write zeropod's CRIU config file (atomically, only when its content differs)."""
    path = path or criu_config_path()
    text = "# written by containerd-shim-zeropod-v2; see zeropod/shim/spec.py\n"
    options = (*CRIU_OPTIONS, *criubinary.zeropod_options(), *([LAZY_OPTION] if lazy else []))
    text += "".join(f"{option}\n" for option in options)
    try:
        if path.read_text() == text:
            return path
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def read_spec(bundle: str | Path) -> dict[str, Any]:
    """The bundle's config.json as a dict; raises OSError or ValueError with the path."""
    path = Path(bundle) / "config.json"
    try:
        spec = json.loads(path.read_bytes())
    except ValueError as err:
        raise ValueError(f"{path}: not valid JSON: {err}") from err
    if not isinstance(spec, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return spec


def annotate_criu_config(bundle: str | Path, criu_config: str | Path) -> str | None:
    """Point ``org.criu.config`` in the bundle's config.json at zeropod's CRIU config.

    Returns the value it replaced (None: there was none, or it was ours already). Whatever
    the pod or anyone else put there is replaced: a CRIU config can name action scripts, which
    CRIU runs as root on the node, so only zeropod's own file may be used (docs/trust.md).
    The file is replaced atomically.
    """
    spec = read_spec(bundle)
    annotations = spec.get("annotations")
    if annotations is None:
        annotations = spec["annotations"] = {}
    if not isinstance(annotations, dict):
        raise ValueError(f"{bundle}/config.json: annotations is not an object")
    previous = annotations.get(CRIU_ANNOTATION)
    if previous == str(criu_config):
        return None
    annotations[CRIU_ANNOTATION] = str(criu_config)
    path = Path(bundle) / "config.json"
    tmp = path.with_name(".config.json.zeropod")
    tmp.write_text(json.dumps(spec))
    os.chmod(tmp, os.stat(path).st_mode & 0o7777)
    os.replace(tmp, path)
    return previous
