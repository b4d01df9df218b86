"""Relay of the runc shim's events to containerd, in order, with one interception point.

The runc shim publishes ``containerd.services.events.ttrpc.v1.Events/Forward`` to the
interposer's events socket. Each request is acknowledged at once and queued; one sender task
re-publishes the queued requests byte for byte (metadata included) to containerd's
``TTRPC_ADDRESS``, reconnecting and retrying on failure so that order is kept.
:meth:`EventRelay.intercept` decides per event whether it is relayed.
"""

from __future__ import annotations

import asyncio
import logging

from zeropod.ttrpc import Call, Client, TtrpcError
from zeropod.ttrpc.server import Handler
from zeropod.ttrpc.status import Code, parse_response

log = logging.getLogger(__name__)

SERVICE = "containerd.services.events.ttrpc.v1.Events"
FORWARD_TIMEOUT = 5.0
RETRY_MIN, RETRY_MAX = 0.1, 2.0
# Errors worth retrying: containerd is (re)starting or overloaded.
_RETRY_CODES = frozenset({Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED, Code.RESOURCE_EXHAUSTED})


class EventRelay:
    """Queues Forward requests from the runc shim and delivers them to containerd in order."""

    def __init__(self, containerd_address: str) -> None:
        self.address = containerd_address
        self._queue: asyncio.Queue[Call] = asyncio.Queue()
        self._client: Client | None = None

    def handlers(self) -> dict[tuple[str, str], Handler]:
        return {(SERVICE, "Forward"): self._on_forward}

    def intercept(self, call: Call) -> bool:
        """Return False to hold back an event. The only decision point; relays all by default.

        ``call.payload`` is a serialised ``ForwardRequest``; decode it only when needed.
        """
        return True

    def publish(self, call: Call) -> None:
        """Queue a Forward request for delivery (also for events held back earlier)."""
        self._queue.put_nowait(call)

    async def _on_forward(self, call: Call) -> bytes:
        if self.intercept(call):
            self.publish(call)
        return b""  # google.protobuf.Empty

    async def run(self) -> None:
        """Deliver queued events forever (cancel to stop)."""
        try:
            while True:
                call = await self._queue.get()
                try:
                    await self._deliver(call)
                finally:
                    self._queue.task_done()
        finally:
            if self._client is not None:
                await self._client.close()

    async def drain(self, timeout: float) -> bool:
        """Wait until every queued event is delivered; False if ``timeout`` passed first."""
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
        except TimeoutError:
            log.warning("%d event(s) not delivered to %s", self._queue.qsize(), self.address)
            return False
        return True

    async def _deliver(self, call: Call) -> None:
        delay = RETRY_MIN
        attempt = 0
        while True:
            try:
                if self._client is None or self._client.closed:
                    self._client = await Client.connect(self.address)
                parse_response(await self._client.roundtrip(call.raw, timeout=FORWARD_TIMEOUT))
                if attempt:
                    log.info("event delivered to %s after %d retries", self.address, attempt)
                return
            except TtrpcError as err:
                if err.code not in _RETRY_CODES:
                    log.error("containerd rejected an event, dropping it: %s", err)
                    return
                reason: Exception = err
            except ConnectionError as err:
                reason = err
            attempt += 1
            # warn once per outage, not on every retry while containerd is down
            log.log(
                logging.WARNING if attempt == 1 else logging.DEBUG,
                "cannot publish event to %s (retrying every <= %.0fs): %s",
                self.address,
                RETRY_MAX,
                reason,
            )
            if self._client is not None:
                await self._client.close()
                self._client = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)
