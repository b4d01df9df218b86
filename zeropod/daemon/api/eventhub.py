"""Fan-out of the daemon's state-change events to any number of subscribers.

Publishing never blocks: each subscriber has a bounded queue, and one that falls behind is
cut off (its next ``get`` raises ``overflow``) instead of slowing the daemon down.
"""

from __future__ import annotations

import asyncio
from typing import Any

from zeropod.contract.protocol import OVERFLOW, ControlError

QUEUE_SIZE = 1024


class Subscription:
    """One subscriber's queue of events."""

    def __init__(self, hub: EventHub, size: int) -> None:
        self._hub = hub
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=size)
        self._overflowed = False

    async def get(self) -> dict[str, Any]:
        """The next event; raises ControlError(``overflow``) once this reader fell behind."""
        if self._overflowed and self._queue.empty():
            raise ControlError(OVERFLOW, "event reader fell behind; events were dropped")
        return await self._queue.get()

    def close(self) -> None:
        """Stop receiving events."""
        self._hub.discard(self)

    def offer(self, event: dict[str, Any]) -> None:
        """Queue ``event`` without blocking; on a full queue, cut this subscriber off."""
        if self._overflowed:
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self._overflowed = True
            self._hub.discard(self)


class EventHub:
    """Delivers every published event to every current subscriber."""

    def __init__(self, queue_size: int = QUEUE_SIZE) -> None:
        self._queue_size = queue_size
        self._subscribers: set[Subscription] = set()

    def subscribe(self) -> Subscription:
        """A new subscription that sees events published from now on."""
        subscription = Subscription(self, self._queue_size)
        self._subscribers.add(subscription)
        return subscription

    def discard(self, subscription: Subscription) -> None:
        """Forget ``subscription`` (idempotent)."""
        self._subscribers.discard(subscription)

    def publish(self, event: dict[str, Any]) -> None:
        """Offer ``event`` to every subscriber."""
        for subscription in list(self._subscribers):
            subscription.offer(event)

    @property
    def subscriber_count(self) -> int:
        """How many subscriptions are open."""
        return len(self._subscribers)
