"""Entry point of containerd-shim-zeropod-v2."""

import sys


def main() -> None:
    from zeropod.shim.actions import run

    sys.exit(run(sys.argv[1:]))
