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

import logging
import os
import subprocess
import sys
from pathlib import Path

from zeropod.shim import bootstrap, launcher, paths, runcshim
from zeropod.shim import log as shimlog
from zeropod.shim.commandline import FlagError, ShimArgs, parse_args

log = logging.getLogger(__name__)


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
            runcshim.end_runc_shim(upstream, args.id)
        log.info("removing stale interposer files of group %s", group)
        gp.remove()
    return proc.returncode


def exec_runc(argv: list[str]) -> None:
    runc = launcher.find_runc_shim()
    os.execv(runc, [runc, *argv])
