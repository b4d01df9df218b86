"""``zeropodctl``: show what the zeropod daemon manages, follow its state changes, and put a
pod to sleep or wake it now.

Commands: ``status`` (table or ``-o json``), ``events`` (follow, text or ``-o json``),
``sleep POD [CONTAINER] [-n NAMESPACE]`` and ``wake POD [-n NAMESPACE]`` (both return once
the pod is scaled down or running again).
Every failure is one line on stderr and a non-zero exit: 1 when the daemon is unreachable or
refuses, 2 for bad flags.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import NoReturn

from zeropod.cli.render import event_line, pod_summary, status_table
from zeropod.contract.daemonclient import ControlClient
from zeropod.contract.protocol import NOT_FOUND, ControlError, DaemonUnavailable
from zeropod.version import version

PROG = "zeropodctl"


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{PROG}: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The command-line grammar."""
    parser = _Parser(prog=PROG, description="Inspect and drive the zeropod node daemon.")
    parser.add_argument("--version", action="version", version=f"{PROG} {version()}")
    parser.add_argument(
        "--socket",
        help="control socket (default: $ZEROPOD_CONTROL_SOCKET or /run/zeropod/control.sock)",
    )
    parser.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait for the daemon (default 5)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    status = commands.add_parser("status", help="list containers, their state and since when")
    status.add_argument("-o", "--output", choices=("table", "json"), default="table")
    events = commands.add_parser("events", help="follow state changes until interrupted")
    events.add_argument("-o", "--output", choices=("text", "json"), default="text")
    sleep = commands.add_parser("sleep", help="put a pod to sleep now (its scaled containers)")
    sleep.add_argument("pod")
    sleep.add_argument("container", nargs="?", help="one of the pod's scaled containers")
    sleep.add_argument("-n", "--namespace", default="default")
    wake = commands.add_parser("wake", help="wake a sleeping pod now")
    wake.add_argument("pod")
    wake.add_argument("-n", "--namespace", default="default")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.timeout <= 0:
        build_parser().error("--timeout must be positive")
    client = ControlClient(args.socket, timeout=args.timeout)
    try:
        if args.command == "status":
            return _status(client, args.output)
        if args.command == "sleep":
            return _pod_line(client.sleep(args.pod, args.namespace, args.container))
        if args.command == "wake":
            return _pod_line(client.wake(args.pod, args.namespace))
        return _events(client, args.output)
    except DaemonUnavailable as err:
        return _fail(f"daemon not reachable: {err.message} (is zeropod.service running?)")
    except ControlError as err:
        if err.code == NOT_FOUND:  # an unknown pod, or a container the daemon does not scale
            return _fail(f"{err.message} (see '{PROG} status')")
        return _fail(f"daemon refused: {err.message} ({err.code})")
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader (e.g. `head`) went away; nothing left to say.
        sys.stderr.close()
        return 0


def _status(client: ControlClient, output: str) -> int:
    containers = client.status()
    if output == "json":
        print(json.dumps(containers, indent=2))
    elif containers:
        print(status_table(containers, datetime.now(UTC)))
    else:
        print("No containers registered.")
    return 0


def _events(client: ControlClient, output: str) -> int:
    for event in client.events():
        line = json.dumps(event, separators=(",", ":")) if output == "json" else event_line(event)
        print(line, flush=True)
    return _fail("the daemon closed the event stream")


def _pod_line(response: dict[str, object]) -> int:
    pod = response.get("pod")
    print(pod_summary(pod) if isinstance(pod, dict) else "done")
    return 0


def _fail(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
