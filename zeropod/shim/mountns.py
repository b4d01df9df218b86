"""The runc shim's mount namespace: a slave of the node's, so that container mounts stay
out of the node's own mount table.

systemd (PID 1) watches its mount table: every mount and unmount in it makes systemd re-read
the whole of ``/proc/self/mountinfo``, update its mount units and send their changes over
D-Bus, which dbus-daemon and logind then handle too. Each wake mounts the container's rootfs
and runc's ``criu-root``, CRIU mounts a cgroup yard (a tmpfs and one mount per hierarchy, 11
on a hybrid cgroup v1 node) and its mount-namespace root, and unmounts them all again: in the
node's namespace that was ~30 mount events per wake and ~20 ms of PID 1's CPU (measured on
the node test-bed; more on a node with more mounts, since every event re-reads them all).
On a wake storm that CPU is taken from the restores.

So ``start`` runs the runc shim's own ``start`` under ``unshare --mount --propagation
slave``: the runc shim, runc, CRIU and the containers' namespaces live in a copy of the node's
mount table that still receives the node's mounts (a volume mounted on the node later still
reaches the containers, as with ``HostToContainer``) but sends none back. The namespace goes
away with its last process; nothing is left to clean up.

What it changes: a container's mounts (its rootfs under the bundle) are not visible from the
node's namespace (``nsenter -t <runc shim pid> -m`` sees them), and a mount with
``Bidirectional`` propagation (``rshared`` in the OCI spec) could not reach the node:
:func:`shared_propagation` finds those and the interposer's Create refuses them, with why.
``ZEROPOD_SHIM_MOUNT_NS=node`` in containerd's environment keeps the runc shim in the node's
namespace, as before.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

log = logging.getLogger(__name__)

MODE_ENV = "ZEROPOD_SHIM_MOUNT_NS"
MODES = ("pod", "node")
"""``pod``: the runc shim gets a mount namespace of its own (the default); ``node``: it
shares the node's."""
SHARED = frozenset({"shared", "rshared"})


def mode(env: Mapping[str, str] = os.environ) -> str:
    """The mode asked for in ENV; an unknown value is logged (naming the allowed ones) and
    the default used."""
    value = env.get(MODE_ENV, "").strip().lower() or MODES[0]
    if value not in MODES:
        log.warning(
            "%s=%r is not one of %s: using %r", MODE_ENV, env[MODE_ENV], "/".join(MODES), MODES[0]
        )
        return MODES[0]
    return value


def wrap(argv: Sequence[str], env: Mapping[str, str] = os.environ, euid: int = -1) -> list[str]:
    """ARGV run in a mount namespace of its own (a slave of this one) when the mode is
    ``pod``, this process is root (EUID; -1: ours) and ``unshare`` is on PATH; else ARGV as
    it is (said in the log)."""
    if mode(env) != "pod":
        return list(argv)
    if (os.geteuid() if euid == -1 else euid) != 0:
        log.info("not root: the runc shim shares this mount namespace")
        return list(argv)
    unshare = shutil.which("unshare", path=env.get("PATH"))
    if unshare is None:
        log.warning("unshare not found on PATH: the runc shim shares the node's mount namespace")
        return list(argv)
    return [unshare, "--mount", "--propagation", "slave", *argv]


def separate(pid: int) -> bool:
    """Whether process PID's mount namespace is not this process's (False if unknown)."""
    try:
        theirs = os.stat(f"/proc/{pid}/ns/mnt")
        ours = os.stat("/proc/self/ns/mnt")
    except OSError:
        return False
    return (theirs.st_dev, theirs.st_ino) != (ours.st_dev, ours.st_ino)


def shared_propagation(spec: Mapping[str, Any]) -> list[str]:
    """What in the OCI SPEC asks for mounts to propagate back to the node (kubelet's
    ``Bidirectional``: ``rshared`` on the mount, or a shared rootfs propagation)."""
    found = []
    linux = spec.get("linux") or {}
    if isinstance(linux, Mapping) and linux.get("rootfsPropagation") in SHARED:
        found.append(f"linux.rootfsPropagation {linux['rootfsPropagation']}")
    for mount in spec.get("mounts") or []:
        if not isinstance(mount, Mapping):
            continue
        options = mount.get("options") or []
        shared = [o for o in options if o in SHARED]
        if shared:
            found.append(f"mount {mount.get('destination', '?')} ({shared[0]})")
    return found
