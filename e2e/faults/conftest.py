"""The fault suite's table: each scenario's row, its leaks measured around it, printed at the
end and written to build/faults/ (table.md, results.json)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from e2e.cri import wait_for
from e2e.faults.record import Row, Snapshot, markdown, write
from e2e.node import REPO, Node

ROWS = pytest.StashKey[list[Row]]()
OUT_DIR = REPO / "build" / "faults"
LEAK_WAIT = 30.0
"""How long the node may take to let go of a scenario's pods (CRI removal, unit stop)."""

Fault = Callable[[str, str, str], Row]


def pytest_configure(config: pytest.Config) -> None:
    config.stash[ROWS] = []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    if report.when == "call":
        item.stash[_PASSED] = report.passed
    return report


_PASSED = pytest.StashKey[bool]()


@pytest.fixture
def fault(node: Node, request: pytest.FixtureRequest) -> Iterator[Fault]:
    """``fault(scenario, fault, expected)`` -> the scenario's Row; leaks checked after it."""
    before = Snapshot.take(node)
    rows: list[Row] = []

    def start(scenario: str, what: str, expected: str) -> Row:
        row = Row(scenario, what, expected, containerd=node.containerd)
        rows.append(row)
        return row

    yield start

    def settled() -> Snapshot | None:
        now = Snapshot.take(node)
        return None if any(now.leaks_since(before).values()) else now

    try:
        after = wait_for(settled, LEAK_WAIT, interval=0.5, what="the node to let go of the pods")
    except TimeoutError:
        after = Snapshot.take(node)
    leaks = after.leaks_since(before)
    passed = request.node.stash.get(_PASSED, False)
    for row in rows:
        row.leaks = leaks
        row.passed = passed and not any(leaks.values())
    request.config.stash[ROWS].extend(rows)
    assert not any(leaks.values()), after.describe_leaks(before)


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:  # type: ignore[no-untyped-def]
    rows = config.stash.get(ROWS, [])
    if not rows:
        return
    write(rows, OUT_DIR)
    terminalreporter.write_sep("=", "zeropod fault table")
    terminalreporter.write(markdown(rows))
    terminalreporter.write_line(f"(also in {OUT_DIR}/table.md and results.json)")
