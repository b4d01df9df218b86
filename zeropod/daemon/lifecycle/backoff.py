"""When a pod whose sleep failed may try again: doubling back-off, capped at 30 minutes.

A dump that fails once usually fails again (a process CRIU cannot dump, a connection to
something outside the pod): retrying every scale-down period freezes and dumps the app
for nothing, forever. After the n-th failure in a row the idle loop waits
``scaledown * 2**n`` seconds (10 s, 20 s, 40 s ... at a 5 s scale-down), at most
:data:`MAX_DELAY`: nine tries in the first hour of a pod that can never sleep.

``zeropodctl sleep`` tries at once whatever the back-off says; a successful sleep, or a
changed pod (a container registered again: restarted, new annotations), starts afresh.
One :class:`Backoff` per pod, owned by :class:`zeropod.daemon.lifecycle.pods.Pod`; used only
from the daemon's event loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

"""The control error code of a sleep that failed (the container keeps running)."""
MAX_DELAY = 1800.0
"""Seconds: the longest wait between two tries."""
DEFAULT_BASE = 60.0
"""Seconds: the base for a pod without an idle period (only ``zeropodctl sleep`` sleeps it)."""


@dataclass
class Backoff:
    """Consecutive failures of one pod's sleeps (or wakes) and when the idle loop may try
    again: the n-th failure in a row waits base x 2^n, at most 30 min."""

    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    failures: int = 0
    reason: str | None = None
    """The last failure's error (CRIU's first error line when it was the dump)."""
    next_try: float | None = None
    """``clock()`` time from which the idle loop may try again (None: at once)."""

    def delay_for_next(self, scaledown_seconds: float | None) -> float:
        """The wait that one more failure would bring (``None``: the pod never idles, so
        the default scale-down duration is the base)."""
        return delay_after(self.failures + 1, scaledown_seconds or DEFAULT_BASE)

    def failed(self, delay: float, reason: str) -> None:
        """Record a failed sleep; the idle loop waits ``delay`` seconds before the next."""
        self.failures += 1
        self.reason = reason
        self.next_try = self.clock() + delay

    def reset(self) -> None:
        """A sleep worked, or the pod changed: the next idle period may sleep it."""
        self.failures = 0
        self.reason = None
        self.next_try = None

    def ready(self) -> bool:
        """True when an idle sleep may run now."""
        return self.next_try is None or self.clock() >= self.next_try

    def describe(self) -> dict[str, Any] | None:
        """For status: failures, reason and next try (epoch seconds), or None when clear."""
        if not self.failures:
            return None
        next_try = None
        if self.next_try is not None:
            next_try = self.wall() + max(self.next_try - self.clock(), 0.0)
        return {"failures": self.failures, "reason": self.reason, "next_try": next_try}


def delay_after(failures: int, scaledown_seconds: float) -> float:
    """Seconds to wait after ``failures`` failed sleeps in a row (``failures`` >= 1)."""
    base = max(scaledown_seconds, 1.0)
    return min(base * 2.0 ** min(failures, 32), MAX_DELAY)
