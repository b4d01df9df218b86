"""Carry one already-accepted connection to the woken app (a non-probe request from the node).

A connection from the node's own address that the daemon accepted as a possible probe but
that turned out to be something else cannot be handed back to the kernel's queue; after the
wake it is relayed to the app: a socket created inside the pod netns connects to the app's
address (loopback for a wildcard listener), the bytes already read are sent first, then both
directions are copied until either side closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket

from zeropod.netns.sysctl import run_in_netns

CONNECT_TIMEOUT = 5.0
_RELAYS: set[asyncio.Task[None]] = set()


def relay_in_background(client: socket.socket, netns: str) -> None:
    """Relay ``client`` to the app in a task of its own (kept until the relay ends)."""
    task = asyncio.create_task(_relay_quietly(client, netns))
    _RELAYS.add(task)
    task.add_done_callback(_RELAYS.discard)


async def _relay_quietly(client: socket.socket, netns: str) -> None:
    with contextlib.suppress(OSError, TimeoutError):
        await relay(client, b"", netns)


def target_address(family: int, address: str) -> str:
    """Where to reach a listener on ``address`` from inside its netns."""
    if ipaddress.ip_address(address).is_unspecified:
        return "::1" if family == socket.AF_INET6 else "127.0.0.1"
    return address


async def relay(client: socket.socket, already_read: bytes, netns: str) -> None:
    """Relay ``client`` (accepted on a held socket) to the app listening on the same port."""
    local_addr, port = client.getsockname()[:2]
    family = client.family
    upstream = await asyncio.to_thread(
        run_in_netns, netns, lambda: socket.socket(family, socket.SOCK_STREAM)
    )
    upstream.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            await loop.sock_connect(upstream, (target_address(family, local_addr), port))
        client.setblocking(False)
        if already_read:
            await loop.sock_sendall(upstream, already_read)
        await asyncio.gather(_pump(client, upstream), _pump(upstream, client))
    finally:
        client.close()
        upstream.close()


async def _pump(source: socket.socket, sink: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    try:
        while chunk := await loop.sock_recv(source, 65536):
            await loop.sock_sendall(sink, chunk)
    except OSError:
        pass  # either side went away: the relay ends
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)
