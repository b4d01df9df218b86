"""Forwarding of containerd's task API to the runc shim, one interception point per method.

:class:`TaskProxy` has one method per task API RPC, named like it. Each forwards the request
bytes unchanged (service, method, payload, metadata, timeout) and relays the runc shim's reply
bytes unchanged, errors included; nothing is decoded. The scale-to-zero logic subclasses it and
overrides the few methods it changes (Create, Start, Wait, State, Kill, Delete, Checkpoint).
Every call runs in its own task, so a pending ``Wait`` never holds up anything else.
"""

from __future__ import annotations

import asyncio
import logging

from zeropod.shim.taskapi import BY_SERVICE, METHODS, TaskAPI
from zeropod.ttrpc import Call, Client, ConnectionClosed, RawResponse
from zeropod.ttrpc.server import Handler

log = logging.getLogger(__name__)

# Extra time the proxy waits beyond the caller's own deadline, so the runc shim's
# DEADLINE_EXCEEDED reply (not a local one) reaches containerd.
DEADLINE_GRACE = 1.0


class TaskProxy:
    """Forwards every task API call to ``upstream`` (the runc shim's connection)."""

    def __init__(self, upstream: Client) -> None:
        self.upstream = upstream

    def handlers(self) -> dict[tuple[str, str], Handler]:
        """The method table for both task API versions."""
        return {(svc, m): getattr(self, m) for svc in BY_SERVICE for m in METHODS}

    @staticmethod
    def api(call: Call) -> TaskAPI:
        """The task API version of ``call``, for hooks that decode its payload."""
        return BY_SERVICE[call.service]

    async def forward(self, call: Call) -> RawResponse:
        """Send ``call`` to the runc shim as is; return its reply as is.

        If the runc shim goes away first, the call stays pending until the interposer's
        shutdown closes containerd's connection, which is what containerd would have seen
        without the interposer (``ttrpc: closed``, not an error status).
        """
        timeout = call.timeout
        try:
            reply = await self.upstream.roundtrip(
                call.raw, timeout=None if timeout is None else timeout + DEADLINE_GRACE
            )
        except ConnectionClosed:
            log.info("runc shim closed the connection during %s/%s", call.service, call.method)
            await asyncio.Event().wait()  # cancelled when the interposer closes connections
            raise
        return RawResponse(reply)

    # One hook per task API method: each forwards until the scale-to-zero logic needs it.
    async def State(self, call: Call) -> RawResponse:
        return await self.forward(call)

    async def Create(self, call: Call) -> RawResponse:
        return await self.forward(call)

    async def Start(self, call: Call) -> RawResponse:
        return await self.forward(call)

    async def Delete(self, call: Call) -> RawResponse:
        return await self.forward(call)

    async def Pids(self, call: Call) -> RawResponse:
        return await self.forward(call)

    async def Pause(self, call: Call) -> RawResponse:
        return await self.forward(call)

    async def Resume(self, call: Call) -> RawResponse:
        return await self.forward(call)

    async def Checkpoint(self, call: Call) -> RawResponse:
        return await self.forward(call)

    async def Kill(self, call: Call) -> RawResponse:
        return await self.forward(call)

    async def Exec(self, call: Call) -> RawResponse:
        return await self.forward(call)

    async def ResizePty(self, call: Call) -> RawResponse:
        return await self.forward(call)

    async def CloseIO(self, call: Call) -> RawResponse:
        return await self.forward(call)

    async def Update(self, call: Call) -> RawResponse:
        return await self.forward(call)

    async def Wait(self, call: Call) -> RawResponse:
        return await self.forward(call)

    async def Stats(self, call: Call) -> RawResponse:
        return await self.forward(call)

    async def Connect(self, call: Call) -> RawResponse:
        return await self.forward(call)

    async def Shutdown(self, call: Call) -> RawResponse:
        return await self.forward(call)
