"""The pod's transient ``zeropod@<instance>.socket`` and its activated service, over D-Bus
(:mod:`zeropod.systemd`): one bus connection for the daemon's life, re-made when it drops."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from typing import Any

from zeropod.daemon.model.pod import UNIT_PREFIX, HeldPort, PodKey


class SystemdUnits:
    """The pod's transient socket unit and its activated service, over D-Bus."""

    def __init__(self) -> None:
        self._systemd: Any = None
        self._lock = asyncio.Lock()

    async def _connect(self) -> Any:
        from zeropod.systemd.manager import Systemd

        async with self._lock:
            if self._systemd is None or not self._systemd.bus.connected:
                self._systemd = await Systemd.connect()
            return self._systemd

    async def start(self, key: PodKey, ports: Sequence[HeldPort], netns: str) -> None:
        from zeropod.sockets.listeners import Listener
        from zeropod.systemd.manager import SystemdError
        from zeropod.systemd.socket_unit import start_socket_unit

        systemd = await self._connect()
        listeners = [
            Listener(socket.AddressFamily(p.family), p.address, p.port, 0, -1, p.v6only, 0)
            for p in ports
        ]
        description = f"zeropod holds the ports of sleeping pod {key.label}"
        try:
            await start_socket_unit(systemd, key.socket, listeners, netns, description)
        except SystemdError as err:
            if "UnitExists" not in str(err.dbus_error):
                raise
            await self.stop(key)  # a leftover of a crashed daemon: replace it
            await start_socket_unit(systemd, key.socket, listeners, netns, description)

    async def stop(self, key: PodKey) -> None:
        await self.stop_orphan(key.socket)

    async def listening(self) -> set[str]:
        systemd = await self._connect()
        found = await systemd.list_units(f"{UNIT_PREFIX}@*.socket")
        return {name for name, state in found if state in ("active", "activating", "reloading")}

    async def stop_orphan(self, socket_unit: str) -> None:
        from zeropod.systemd.socket_unit import stop_unit

        systemd = await self._connect()
        await stop_unit(systemd, socket_unit)
        await stop_unit(systemd, socket_unit.removesuffix(".socket") + ".service")
