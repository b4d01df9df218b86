"""Faults put into the node at a chosen moment.

CRIU reads the node's ``/etc/criu/default.conf`` in RPC mode too (runc drives it that way), so
an action script named there runs at each step of every dump and restore: ``pre-dump``,
``post-dump`` (the app frozen, its image written), ``pre-restore``, ``post-restore``,
``pre-resume`` (the restored tree not yet running)... The script reads one planned fault
(``plan``: ``ACTION hang|pause SECONDS|fail``), carries it out once at that step and records
every step it sees, so a scenario can wait for "CRIU is inside the dump now" and then act.
A node's own CRIU config is root's, like the rest of the node: pods cannot set it (the
shim replaces a pod's ``org.criu.config``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from e2e.cri import wait_for

FAULTS_DIR = "/run/zeropod-faults"
ACTION_SCRIPT = "/usr/local/lib/zeropod-faults/criu-action"
CRIU_CONFIG = "/etc/criu/default.conf"

_SCRIPT = f"""#!/bin/sh
# zeropod's fault suite (e2e/faults/inject.py): one planned fault at one CRIU step.
dir={FAULTS_DIR}
echo "$CRTOOLS_SCRIPT_ACTION" >> "$dir/seen"
[ -f "$dir/plan" ] || exit 0
read -r step what seconds < "$dir/plan"
[ "$step" = "$CRTOOLS_SCRIPT_ACTION" ] || exit 0
rm -f "$dir/plan"
echo "$$ $PPID" > "$dir/holding"
case "$what" in
  hang) exec sleep 100000 ;;
  pause) exec sleep "$seconds" ;;
  fail) exit 1 ;;
esac
"""

_INSTALL = f"""
set -e
mkdir -p {FAULTS_DIR} $(dirname {ACTION_SCRIPT}) /etc/criu
cat > {ACTION_SCRIPT} <<'SCRIPT'
{_SCRIPT}SCRIPT
chmod 755 {ACTION_SCRIPT}
echo "action-script {ACTION_SCRIPT}" > {CRIU_CONFIG}
rm -f {FAULTS_DIR}/plan {FAULTS_DIR}/seen {FAULTS_DIR}/holding
"""

_REMOVE = f"""
rm -f {CRIU_CONFIG} {FAULTS_DIR}/plan
[ -f {FAULTS_DIR}/holding ] && read -r pid criu < {FAULTS_DIR}/holding && kill -9 $pid
pkill -KILL -f '^sleep 100000$'
rm -rf {FAULTS_DIR}
true
"""


class CriuSteps:
    """The action script's plan and what it saw."""

    def __init__(self, node: Any) -> None:
        self.node = node

    def plan(self, step: str, what: str, seconds: float = 0) -> None:
        """At the next CRIU STEP: ``hang`` (forever), ``pause`` (SECONDS) or ``fail``."""
        self.node.run(["rm", "-f", f"{FAULTS_DIR}/holding", f"{FAULTS_DIR}/seen"], check=True)
        line = f"{step} {what} {seconds}\n"
        self.node.run(["sh", "-c", f"cat > {FAULTS_DIR}/plan"], input=line, check=True)

    def seen(self) -> list[str]:
        out = self.node.run(["cat", f"{FAULTS_DIR}/seen"]).stdout
        return out.split()

    def wait_holding(self, timeout: float = 30) -> int:
        """Wait until CRIU is held at the planned step; the pid of that CRIU process."""

        def holding() -> int | None:
            out = self.node.run(["cat", f"{FAULTS_DIR}/holding"]).stdout.split()
            return int(out[1]) if len(out) == 2 else None

        return wait_for(holding, timeout, interval=0.05, what="CRIU at the planned step")

    def release(self) -> None:
        """End a held step now (its script exits, CRIU goes on)."""
        script = f"read -r pid criu < {FAULTS_DIR}/holding && kill $pid"
        self.node.run(["sh", "-c", script], check=True)


@contextlib.contextmanager
def criu_steps(node: Any) -> Iterator[CriuSteps]:
    """The action script installed in the node's CRIU config for the block, removed after."""
    node.run(["sh", "-s"], input=_INSTALL, check=True)
    try:
        yield CriuSteps(node)
    finally:
        node.run(["sh", "-s"], input=_REMOVE, check=True)


def kill_daemon(node: Any) -> None:
    """SIGKILL the zeropod daemon (systemd restarts it)."""
    node.run(["systemctl", "kill", "--signal=KILL", "zeropod.service"], check=True)
