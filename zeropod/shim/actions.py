"""Dispatch of the shim's command line: ``start``, ``delete``, and everything else.

``start`` goes to :mod:`.launcher`. ``delete`` (containerd's cleanup after a failed or dead
shim) runs the runc shim's ``delete`` with our stdio, so its DeleteResponse bytes and exit
status reach containerd unchanged. If no interposer answers for the group any more (it was
killed), the group's runc shim is shut down too: containerd only knew the interposer, so
nothing else would ever end that runc shim, and it would outlive its pod. Then the group's
interposer files are removed. Anything else (``-v``, ``-info``, flags we do not know)
is the runc shim's business: exec it with the same arguments.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from zeropod.shim import bootstrap, launcher, paths
from zeropod.shim import log as shimlog
from zeropod.shim.commandline import FlagError, ShimArgs, parse_args

log = logging.getLogger(__name__)

SHUTDOWN_GRACE = 2.0
"""How long a runc shim whose interposer died gets to exit on Shutdown before it is killed."""


def run(argv: list[str]) -> int:
    try:
        args = parse_args(argv)
    except FlagError as err:
        shimlog.setup(debug=False)
        log.warning("passing unknown command line to the runc shim: %s", err)
        exec_runc(argv)
    shimlog.setup(
        debug=args.debug,
        container=args.id,
        namespace=args.namespace,
        stderr_level=logging.ERROR,
    )
    if args.version or args.info or args.action not in ("start", "delete"):
        exec_runc(argv)
    try:
        if args.action == "start":
            return launcher.start(args)
        return delete(args)
    except (launcher.StartError, OSError, ValueError) as err:
        log.error("%s of %s failed: %s", args.action, args.id, err)
        print(f"containerd-shim-zeropod-v2 {args.action}: {err}", file=sys.stderr)
        return 1


def delete(args: ShimArgs) -> int:
    bundle = Path(args.bundle or os.getcwd())
    group = paths.group_id(bundle, args.id)
    proc = subprocess.run([launcher.find_runc_shim(), *args.argv], check=False)
    gp = paths.GroupPaths.for_group(args.address, args.namespace, group)
    if (gp.socket.exists() or gp.upstream.exists()) and not paths.connectable(gp.socket):
        if gp.upstream.exists():
            upstream = bootstrap.parse(gp.upstream.read_text())
            log.warning(
                "interposer of group %s is gone: shutting its runc shim %s down",
                group,
                upstream.address,
            )
            end_runc_shim(upstream, args.id)
        log.info("removing stale interposer files of group %s", group)
        gp.remove()
    return proc.returncode


def end_runc_shim(upstream: bootstrap.Bootstrap, container_id: str) -> None:
    """Shut down a runc shim whose interposer is gone. It ignores Shutdown while it still
    counts containers (containerd's runc shim does, ``now`` or not), and nobody will ever
    delete them through it: after a short grace it is killed. It is found as the process
    holding its listening socket (not by SO_PEERCRED: its ``start`` parent bound it)."""
    path = bootstrap.unix_path(upstream.address)
    pids = listener_pids(path)
    if not pids:
        log.info("runc shim %s is gone already", path)
        return
    launcher.stop_runc_shim(upstream, container_id)
    deadline = time.monotonic() + SHUTDOWN_GRACE
    while time.monotonic() < deadline and listener_pids(path):
        time.sleep(0.05)
    for pid in listener_pids(path):
        log.warning("runc shim %s (pid %d) ignored Shutdown: killing it", path, pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def listener_pids(path: str, proc: Path = Path("/proc")) -> list[int]:
    """The processes holding the listening unix socket bound at PATH."""
    inodes = set()
    try:
        with open(proc / "net" / "unix") as f:
            next(f)
            for line in f:
                fields = line.split()
                # Num RefCount Protocol Flags Type St Inode Path; St 01 = listening
                if len(fields) >= 8 and fields[7] == path and fields[5] == "01":
                    inodes.add(f"socket:[{fields[6]}]")
    except (OSError, StopIteration):
        return []
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) in inodes:
                    found.append(int(entry.name))
                    break
            except OSError:
                continue
    return found


def exec_runc(argv: list[str]) -> None:
    runc = launcher.find_runc_shim()
    os.execv(runc, [runc, *argv])
