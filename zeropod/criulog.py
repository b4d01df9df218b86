"""CRIU's log files as users need them: the first error line, not 8 MB of debug output.

CRIU writes ``dump.log`` / ``restore.log`` into the image directory at log level 4 (runc's
choice). Its error lines look like ``(00.012345) Error (criu/cr-dump.c:389): Can't get
rlimit 0: Operation not permitted``; the first one nearly always names the cause, later
ones its consequences. Only the head of the file is read: a runaway restore can write
gigabytes (see ``zeropod.shim.restorebound``).
"""

from __future__ import annotations

import re

READ_LIMIT = 4 << 20
"""Bytes of the log's head searched for an error line."""
HARMLESS = ("Can't setup RLIMIT_NOFILE for self",)
"""Error lines CRIU writes on every run without CAP_SYS_RESOURCE and that change nothing
(it tries to raise its own fd limit, then works within the one it has)."""
_SUMMARY = ("Restoring FAILED", "Dumping FAILED")
"""CRIU's closing lines: a cause is preferred to them when the head has one."""
_ERROR_LINE = re.compile(
    rb"^\(\s*[\d.]+\)\s+(?:\d+:\s+)?(?:pie:\s+\d+:\s+)?Error\s+\(([^)]*)\):\s*(.*)$", re.MULTILINE
)
"""``(00.005124) Error (file:line): msg``, also with the restoring task's pid before
``Error`` (``(00.005124)      1: Error (...)``) and from the restorer blob (``pie: 1:``)."""


def first_error(path: str) -> str | None:
    """``"<message> (<source:line>)"`` of the first error line in CRIU log PATH, or None when
    the log is missing, unreadable or has no error line in its head."""
    try:
        with open(path, "rb") as f:
            head = f.read(READ_LIMIT)
    except OSError:
        return None
    summary = None
    for match in _ERROR_LINE.finditer(head):
        where, message = (part.decode(errors="replace").strip() for part in match.groups())
        if any(harmless in message for harmless in HARMLESS):
            continue
        if any(message.startswith(s) for s in _SUMMARY):
            summary = summary or f"{message} ({where})"
            continue
        return f"{message} ({where})"
    return summary
