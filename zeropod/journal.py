"""Structured logging to journald, with a plain stderr fallback.

Every entry carries a MESSAGE, a PRIORITY and the fields the daemon knows about the container
(POD, NAMESPACE, CONTAINER, STATE, and OBJECT_SYSTEMD_UNIT when a pod unit name is known, so
that ``journalctl -u zeropod@...`` and ``journalctl POD=x`` both find it). systemd-python's
``journal.send`` is used when it is importable, from a writer thread (:class:`ThreadedSink`:
``sendmsg`` to journald blocks while journald does not read, and must not block the daemon's
event loop); otherwise one line per entry goes to stderr, which journald still captures.
"""

from __future__ import annotations

import contextlib
import queue
import re
import sys
import threading
from collections.abc import Callable
from typing import Any, TextIO

# syslog priorities, as journald expects them.
ERR = 3
WARNING = 4
NOTICE = 5
INFO = 6
DEBUG = 7
_LEVEL_NAMES = {ERR: "error", WARNING: "warning", NOTICE: "notice", INFO: "info", DEBUG: "debug"}

IDENTIFIER = "zeropod"
_FIELD_RE = re.compile(r"[A-Z][A-Z0-9_]*")
"""journald: upper-case letters, digits and underscores, not starting with a digit or _."""
MAX_FIELD_NAME = 64
"""journald refuses longer field names."""

Sink = Callable[[str, int, dict[str, str]], None]
"""Receives (message, priority, fields) for one entry."""
QUEUE_CAPACITY = 10_000
"""Entries that may wait for a stalled journald before new ones are dropped (and counted)."""
CLOSE_TIMEOUT = 2.0


class Journal:
    """Sends structured entries to a sink (journald, stderr, or a list in tests).

    Logging never fails the caller: the sleep and wake sequences log between their steps, and
    a client must not be reset because a log line could not be written. A field whose name
    journald would refuse is left out (its name is listed in ``INVALID_FIELDS``), and a sink
    that raises is replaced, for that entry, by a line on stderr.
    """

    def __init__(self, sink: Sink, fallback: TextIO | None = None) -> None:
        self._sink = sink
        self._fallback = fallback

    def send(
        self,
        message: str,
        *,
        priority: int = INFO,
        pod: str | None = None,
        namespace: str | None = None,
        container: str | None = None,
        state: str | None = None,
        unit: str | None = None,
        **extra: object,
    ) -> None:
        """Log one entry; ``extra`` keys become upper-case journal fields, ``None`` is omitted."""
        fields: dict[str, str] = {}
        invalid: list[str] = []
        named = {"POD": pod, "NAMESPACE": namespace, "CONTAINER": container, "STATE": state}
        named["OBJECT_SYSTEMD_UNIT"] = unit
        for key, value in [*named.items(), *((k.upper(), v) for k, v in extra.items())]:
            if value is None:
                continue
            if not _FIELD_RE.fullmatch(key) or len(key) > MAX_FIELD_NAME:
                invalid.append(key)
                continue
            fields[key] = str(value)
        if invalid:
            fields["INVALID_FIELDS"] = " ".join(repr(k) for k in invalid)
        try:
            self._sink(message, priority, fields)
        except Exception as err:  # a log line must never fail the caller
            stream = self._fallback or sys.stderr
            with contextlib.suppress(Exception):
                stream.write(f"{IDENTIFIER}: journal write failed ({err!r}): {message}\n")
                stream.flush()

    def close(self) -> None:
        """Write what is still queued (a threaded sink), at most a couple of seconds."""
        close = getattr(self._sink, "close", None)
        if close is not None:
            close()

    def info(self, message: str, **fields: Any) -> None:
        """Log at INFO."""
        self.send(message, priority=INFO, **fields)

    def warning(self, message: str, **fields: Any) -> None:
        """Log at WARNING."""
        self.send(message, priority=WARNING, **fields)

    def error(self, message: str, **fields: Any) -> None:
        """Log at ERR."""
        self.send(message, priority=ERR, **fields)


class ThreadedSink:
    """A sink that hands entries to a writer thread, so a journald that stops reading (its
    socket queue full: ``sendmsg`` blocks) can never stall the caller's event loop.

    At most ``capacity`` entries wait; past that an entry is dropped and counted, and the
    writer says how many once it can write again. :meth:`close` waits (bounded) for what is
    queued.
    """

    def __init__(self, sink: Sink, capacity: int = QUEUE_CAPACITY) -> None:
        self._sink = sink
        self._queue: queue.Queue[tuple[str, int, dict[str, str]] | None] = queue.Queue(capacity)
        self._dropped = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._write, name="journal", daemon=True)
        self._thread.start()

    def __call__(self, message: str, priority: int, fields: dict[str, str]) -> None:
        try:
            self._queue.put_nowait((message, priority, fields))
        except queue.Full:
            with self._lock:
                self._dropped += 1

    @property
    def dropped(self) -> int:
        with self._lock:
            return self._dropped

    def _write(self) -> None:
        reported = 0
        while (entry := self._queue.get()) is not None:
            self._send(*entry)
            dropped = self.dropped
            if dropped > reported:
                why = f"{dropped - reported} journal entries dropped: journald was not reading"
                self._send(why, WARNING, {"JOURNAL_DROPPED": str(dropped)})
                reported = dropped

    def _send(self, message: str, priority: int, fields: dict[str, str]) -> None:
        try:
            self._sink(message, priority, fields)
        except Exception as err:  # a log line must never end the writer
            with contextlib.suppress(Exception):
                sys.stderr.write(f"{IDENTIFIER}: journal write failed ({err!r}): {message}\n")

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Write what is queued (waiting at most TIMEOUT), then stop the writer."""
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout)
        self._thread.join(timeout)


def open_journal() -> Journal:
    """A journal writing to journald when systemd-python is installed, else to stderr."""
    try:
        from systemd import journal as systemd_journal  # optional dependency
    except ImportError:
        return Journal(stderr_sink(sys.stderr))

    def journald_sink(message: str, priority: int, fields: dict[str, str]) -> None:
        systemd_journal.send(
            message, PRIORITY=str(priority), SYSLOG_IDENTIFIER=IDENTIFIER, **fields
        )

    return Journal(ThreadedSink(journald_sink))


def stderr_sink(stream: TextIO) -> Sink:
    """A sink that writes ``zeropod: LEVEL MESSAGE KEY=value ...`` lines to ``stream``."""

    def sink(message: str, priority: int, fields: dict[str, str]) -> None:
        level = _LEVEL_NAMES.get(priority, str(priority))
        details = "".join(f" {key}={value!r}" for key, value in fields.items())
        stream.write(f"{IDENTIFIER}: {level} {message}{details}\n")
        stream.flush()

    return sink
