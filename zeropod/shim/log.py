"""Shim logging: the node's journal when systemd-python is there, else stderr.

Every record carries the shim's identity (``CONTAINER``, ``NAMESPACE``, ``POD_GROUP``) as
journal fields; ``extra={"FIELD": value}`` on a call adds more (uppercase keys only).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping

IDENTIFIER = "containerd-shim-zeropod-v2"

_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


class JournalHandler(logging.Handler):
    """Sends records to journald with structured fields."""

    def __init__(self, send: Callable[..., object], fields: Mapping[str, str]) -> None:
        super().__init__()
        self._send = send
        self._fields = {k: v for k, v in fields.items() if v}

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = dict(self._fields)
            for key, value in record.__dict__.items():
                if key.isupper():
                    fields[key] = str(value)
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + logging.Formatter().formatException(record.exc_info)
            self._send(
                message,
                PRIORITY=str(_PRIORITY.get(record.levelno, 6)),
                SYSLOG_IDENTIFIER=IDENTIFIER,
                LOGGER=record.name,
                **fields,
            )
        except Exception:  # a logging failure must never take the shim down
            self.handleError(record)


def setup(
    *,
    debug: bool,
    container: str = "",
    namespace: str = "",
    group: str = "",
    stderr_level: int = logging.DEBUG,
) -> None:
    """Configure the root logger once for this process.

    ``stderr_level`` limits what reaches stderr when there is no journal: containerd reads
    ``start``'s stdout and stderr together, so anything but a fatal error would corrupt the
    address it expects.
    """
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    fields = {"CONTAINER": container, "NAMESPACE": namespace, "POD_GROUP": group}
    try:
        from systemd import journal  # optional: python3-systemd on the node
    except ImportError:
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
        handler.setLevel(stderr_level)
        handler.setFormatter(
            logging.Formatter(
                f"%(asctime)s {IDENTIFIER}[%(process)d] ns={namespace} group={group} "
                "%(levelname)s %(name)s: %(message)s"
            )
        )
    else:
        handler = JournalHandler(journal.send, fields)
    root.addHandler(handler)
