"""A journald that stops reading must not stall the daemon: entries go through a writer
thread, wait in a bounded queue, and past it are dropped and counted, then reported."""

from __future__ import annotations

import threading
import time

from zeropod.journal import WARNING, Journal, ThreadedSink


class StuckSink:
    """A sink that blocks (as sendmsg to a full journald socket does) until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.entries: list[tuple[str, int, dict[str, str]]] = []

    def __call__(self, message: str, priority: int, fields: dict[str, str]) -> None:
        self.entered.set()
        self.release.wait(10)
        self.entries.append((message, priority, fields))


def test_a_stuck_journald_does_not_block_the_caller_and_drops_are_reported() -> None:
    stuck = StuckSink()
    journal = Journal(ThreadedSink(stuck, capacity=3))
    journal.info("line 0", pod="web-1")
    assert stuck.entered.wait(5)  # the writer is inside the sink, blocked
    started = time.monotonic()
    for i in range(1, 10):
        journal.info(f"line {i}", pod="web-1")
    assert time.monotonic() - started < 1.0  # returned at once, journald blocked
    stuck.release.set()
    journal.close()
    messages = [m for m, _, _ in stuck.entries]
    # The writer held line 0 when it blocked; 3 more waited; 6 were dropped, then reported.
    assert [m for m in messages if m.startswith("line")] == ["line 0", "line 1", "line 2", "line 3"]
    dropped = [(m, p, f) for m, p, f in stuck.entries if "dropped" in m]
    assert len(dropped) == 1 and dropped[0][1] == WARNING
    assert dropped[0][0].startswith("6 journal entries dropped"), dropped
    assert all(f.get("POD") == "web-1" for m, _, f in stuck.entries if m.startswith("line"))


def test_a_sink_that_raises_does_not_end_the_writer() -> None:
    written: list[str] = []

    def flaky(message: str, priority: int, fields: dict[str, str]) -> None:
        if message == "bad":
            raise OSError("journald gone")
        written.append(message)

    journal = Journal(ThreadedSink(flaky))
    for message in ("one", "bad", "two"):
        journal.info(message)
    journal.close()
    assert written == ["one", "two"]
