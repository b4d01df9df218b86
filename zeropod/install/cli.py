"""``zeropod install``: put zeropod on a node, or take it off (``--uninstall``).

Runs on the node itself (Ansible: ``python3 -m zeropod.install`` straight from the wheel,
before anything is installed) or in the DaemonSet's privileged pod (``--host-root /host``).
Preflight first: a node that cannot run zeropod is left untouched. ``--check`` reports what
would change and changes nothing; ``--diff`` shows each file's change. The last line is JSON
(``{"changed": ..., "check": ...}``) for the Ansible role.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from zeropod.install import plan, preflight
from zeropod.install.containerd_config import ConfigError
from zeropod.install.host import Host, HostError

PACKAGE_ENV = "ZEROPOD_PACKAGE"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zeropod install", description=__doc__.splitlines()[0])
    parser.add_argument("--host-root", default="/", help="the node's root (DaemonSet: /host)")
    parser.add_argument(
        "--package",
        type=Path,
        default=os.environ.get(PACKAGE_ENV),
        help=f"the package directory (make package; default ${PACKAGE_ENV})",
    )
    parser.add_argument("--config", default=plan.CONTAINERD_CONFIG, help="containerd's config")
    parser.add_argument("--uninstall", action="store_true", help="take zeropod off the node")
    parser.add_argument("--check", action="store_true", help="report changes, make none")
    parser.add_argument("--diff", action="store_true", help="show each file's change")
    parser.add_argument("--skip-preflight", action="store_true", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    host = Host(args.host_root)
    try:
        if args.uninstall:
            actions = plan.plan_uninstall(host, args.config)
        else:
            if args.package is None or not (args.package / "VERSION").exists():
                print(
                    f"zeropod install: --package DIR (or ${PACKAGE_ENV}) is needed", file=sys.stderr
                )
                return 2
            package = plan.Package(args.package)
            if not args.skip_preflight:
                problems = preflight.check(host, package.criu)
                if problems:
                    for problem in problems:
                        print(f"preflight: {problem}", file=sys.stderr)
                    print("zeropod install: nothing was changed", file=sys.stderr)
                    return 2
            actions = plan.plan_install(host, package, args.config)
        for action in actions:
            print(f"{'would' if args.check else 'will'}: {action.summary}")
            if args.diff and action.diff:
                print(action.diff, end="" if action.diff.endswith("\n") else "\n")
        if not args.check:
            for line in plan.apply(host, actions):
                print(f"done: {line}")
    except (ConfigError, HostError, OSError) as err:
        print(f"zeropod install: {err}", file=sys.stderr)
        return 1
    print(json.dumps({"changed": bool(actions), "check": args.check}))
    return 0
