"""The pod netns and the app's listeners, from the node (root): ``tcp_migrate_req`` in the
netns (:mod:`zeropod.netns`), SO_REUSEPORT with root as owner on the app's listeners
(:mod:`zeropod.sockets`), and the daemon's copies of systemd's held sockets
(:mod:`.heldcopies`)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from zeropod.daemon.adapters.heldcopies import HeldSockets, take_copies
from zeropod.daemon.model.pod import HeldPort


class HostNetwork:
    """The pod netns and the app's listeners, from the node (root)."""

    async def enable_migrate(self, netns: str) -> None:
        from zeropod.netns.sysctl import enable_tcp_migrate_req_async

        await enable_tcp_migrate_req_async(netns)

    async def share_listeners(self, pid: int, ports: Sequence[int]) -> list[HeldPort]:
        return await asyncio.to_thread(_share_listeners, pid, tuple(ports))

    async def take_copies(self, netns: str, ports: Sequence[HeldPort]) -> HeldSockets:
        return await asyncio.to_thread(take_copies, netns, tuple(ports))


def _share_listeners(pid: int, ports: tuple[int, ...]) -> list[HeldPort]:
    from zeropod.sockets.listeners import tree_listeners
    from zeropod.sockets.reuseport import share_with_root_holder

    held: list[HeldPort] = []
    for listener in tree_listeners(pid):
        if ports and listener.port not in ports:
            continue
        # A non-root app's listener is made root's, or systemd's holder could not join it.
        share_with_root_holder(listener.pid, listener.fd)
        port = HeldPort(listener.family, listener.address, listener.port, listener.v6only)
        if port not in held:
            held.append(port)
    return held
