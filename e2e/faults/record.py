"""One row of the fault table per scenario, what it leaked, and the table itself.

A scenario fills its :class:`Row` (what it saw, whether the app's memory survived, how many
clients were reset); the ``fault`` fixture measures the leaks around it: what the node holds
for zeropod before the scenario and after its pods are gone must be the same.

- images: entries under the image root;
- units: zeropod's systemd units (the socket units holding ports, their services);
- ports: sockets held by the node's systemd (PID 1): a held port is one of them;
- fds: the daemon's open fds (a restarted daemon's count against the one before);
- processes: shims, interposers and CRIU processes (not the interposer template: the
  node's, like the daemon, started by a scenario's first pod and gone a minute after the
  last; ``tests/test_shim_template.py`` holds it to that).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from zeropod.daemon.adapters.images import IMAGE_ROOT

LEAK_KINDS = ("images", "units", "ports", "fds", "processes")

_SNAPSHOT = f"""
ls -A {IMAGE_ROOT} 2>/dev/null | sed 's/^/image /'
systemctl list-units --all --no-legend --plain 'zeropod@*' | awk '{{print "unit", $1}}'
echo "ports $(ls -l /proc/1/fd | grep -c socket:)"
pid=$(systemctl show -p MainPID --value zeropod.service)
echo "daemon $pid"
[ "$pid" != 0 ] && echo "fds $(ls /proc/$pid/fd | wc -l)"
ps -eo pid=,args= \\
  | awk '/[z]eropod\\.shim\\.template/ {{next}}
         /[c]ontainerd-shim|[z]eropod\\.shim|^ *[0-9]+ criu/ {{print "process", $0}}'
true
"""


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """What the node holds for zeropod at one moment."""

    images: frozenset[str]
    units: frozenset[str]
    ports: int
    daemon_pid: int
    fds: int
    processes: frozenset[str]

    @classmethod
    def take(cls, node: Any) -> Snapshot:
        out = node.run(["sh", "-c", _SNAPSHOT], check=True).stdout
        fields: dict[str, list[str]] = {}
        for line in out.splitlines():
            key, _, value = line.partition(" ")
            fields.setdefault(key, []).append(value.strip())
        return cls(
            images=frozenset(fields.get("image", [])),
            units=frozenset(fields.get("unit", [])),
            ports=int(fields.get("ports", ["0"])[0]),
            daemon_pid=int(fields.get("daemon", ["0"])[0]),
            fds=int(fields.get("fds", ["0"])[0]),
            processes=frozenset(fields.get("process", [])),
        )

    def leaks_since(self, before: Snapshot) -> dict[str, int]:
        """What this snapshot holds beyond BEFORE, by kind (0 everywhere: nothing leaked)."""
        return {
            "images": len(self.images - before.images),
            "units": len(self.units - before.units),
            "ports": max(0, self.ports - before.ports),
            "fds": max(0, self.fds - before.fds),
            "processes": len(self.processes - before.processes),
        }

    def describe_leaks(self, before: Snapshot) -> str:
        parts = [
            f"images {sorted(self.images - before.images)}",
            f"units {sorted(self.units - before.units)}",
            f"ports {before.ports} -> {self.ports}",
            f"daemon fds {before.fds} -> {self.fds} (pid {before.daemon_pid} -> {self.daemon_pid})",
            f"processes {sorted(self.processes - before.processes)}",
        ]
        return "; ".join(parts)


@dataclasses.dataclass
class Row:
    """One scenario as the table shows it."""

    scenario: str
    fault: str
    expected: str
    containerd: str = ""
    seen: str = "(not reached)"
    state_kept: str = "no"
    resets: int | None = None
    leaks: dict[str, int] | None = None
    passed: bool = False

    def kept(self, yes: bool, why: str = "") -> None:
        """Record whether the app's memory survived (WHY says what stands for it if not)."""
        self.state_kept = "yes" if yes else f"no{': ' + why if why else ''}"

    def not_applicable(self, why: str) -> None:
        """The fault itself ends the app's memory (its pod deleted, its image broken)."""
        self.state_kept = f"n/a: {why}"

    def clients(self, *results: Any) -> None:
        """Count the resets and refusals among e2e.http Results."""
        self.resets = (self.resets or 0) + sum(
            len(r.errors("reset")) + len(r.errors("refused")) + len(r.errors("closed"))
            for r in results
        )

    def cells(self) -> list[str]:
        leaks = "?" if self.leaks is None else str(sum(self.leaks.values()))
        if self.leaks and any(self.leaks.values()):
            leaks += " (" + ", ".join(f"{k} {v}" for k, v in self.leaks.items() if v) + ")"
        resets = "-" if self.resets is None else str(self.resets)
        return [
            self.scenario,
            self.containerd,
            self.fault,
            self.expected,
            self.seen if self.passed else f"FAILED: {self.seen}",
            self.state_kept,
            resets,
            leaks,
        ]


HEADER = [
    "scenario",
    "containerd",
    "fault",
    "expected",
    "seen",
    "state kept",
    "clients reset",
    "leaks",
]


def markdown(rows: list[Row]) -> str:
    """The fault table as Markdown."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for row in rows:
        cells = [c.replace("|", "\\|").replace("\n", " ") for c in row.cells()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


SUMMARY_HEADER = ["scenario", "fault", "expected", "seen", "state kept", "clients reset", "leaks"]


def summary(rows: list[Row]) -> str:
    """One line per scenario over every containerd it ran on (resets and leaks summed; what
    was seen on the first), for the README."""
    by_scenario: dict[str, list[Row]] = {}
    for row in rows:
        by_scenario.setdefault(row.scenario, []).append(row)
    lines = ["| " + " | ".join(SUMMARY_HEADER) + " |", "|" + "---|" * len(SUMMARY_HEADER)]
    for scenario, runs in by_scenario.items():
        first = runs[0]
        versions = ", ".join(r.containerd for r in runs)
        failed = [r.containerd for r in runs if not r.passed]
        seen = first.seen if not failed else f"FAILED on {', '.join(failed)}: {first.seen}"
        kept = {r.state_kept for r in runs}
        resets = sum(r.resets or 0 for r in runs)
        leaks = sum(sum((r.leaks or {}).values()) for r in runs)
        cells = [
            f"{scenario} ({versions})",
            first.fault,
            first.expected,
            seen,
            " / ".join(sorted(kept)),
            str(resets),
            str(leaks),
        ]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def write(rows: list[Row], directory: Path) -> None:
    """build/faults/table.md (every row), summary.md (one per scenario) and results.json."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "table.md").write_text(markdown(rows))
    (directory / "summary.md").write_text(summary(rows))
    doc = [dataclasses.asdict(r) for r in rows]
    (directory / "results.json").write_text(json.dumps(doc, indent=2) + "\n")
