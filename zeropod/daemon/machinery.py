"""The real implementations behind :mod:`zeropod.daemon.steps`, wired for the node.

- :class:`ShimClient`: JSON lines to the interposer's own control socket (``shim_socket``
  of the registration), one connection per op, every wait bounded.
- :class:`HostNetwork`: ``tcp_migrate_req`` in the pod netns (``zeropod.netns``) and
  SO_REUSEPORT on the app's listeners (``zeropod.sockets``).
- :class:`SystemdUnits`: the transient ``zeropod@<instance>.socket`` over D-Bus
  (``zeropod.systemd``), one bus connection for the daemon's life, re-made when it drops.
- :class:`ImageStore`: one directory per container under ``/var/lib/zeropod/images``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
from collections.abc import Sequence
from typing import Any

from zeropod import timeouts
from zeropod.control.protocol import MAX_LINE, VERSION, encode
from zeropod.daemon.pods import HeldPort, PodKey
from zeropod.daemon.registry import Container
from zeropod.daemon.steps import ShimError, ShimReply

IMAGE_ROOT = "/var/lib/zeropod/images"


class ShimClient:
    """Sends checkpoint and restore to a container's interposer (docs/scale-to-zero.md)."""

    async def checkpoint(self, container: Container, image_dir: str, mode: str) -> ShimReply:
        message = {
            "v": VERSION,
            "op": "checkpoint",
            "container_id": container.identity.container_id,
            "image_dir": image_dir,
            "mode": mode,
        }
        if mode == "checkpoint":
            bound = timeouts.scaled(timeouts.resident_bytes(container.pid))
        else:
            bound = timeouts.cold_start()  # a kill and a wait
        return _reply(await self._call(container, message, timeouts.daemon_wait(bound)))

    async def restore(
        self, container: Container, image_dir: str | None, *, fallback: bool = True
    ) -> ShimReply:
        message = {
            "v": VERSION,
            "op": "restore",
            "container_id": container.identity.container_id,
            "image_dir": image_dir,
            "fallback": fallback,
        }
        if image_dir is None:
            bound = timeouts.cold_start()
        else:  # the image's size measured at the sleep (>= its pages): no disk walk on wake
            size = container.measured.last_image_bytes
            bound = timeouts.scaled(size if size is not None else timeouts.pages_bytes(image_dir))
        return _reply(await self._call(container, message, timeouts.daemon_wait(bound)))

    async def _call(
        self, container: Container, message: dict[str, Any], timeout: float
    ) -> dict[str, Any]:
        path = container.identity.shim_socket
        op = message["op"]
        if not path:
            raise ShimError("unavailable", f"the shim of {container.identity.label} has no socket")
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_unix_connection(path, limit=MAX_LINE)
                try:
                    writer.write(encode(message))
                    await writer.drain()
                    line = await reader.readline()
                finally:
                    writer.close()
        except TimeoutError as err:
            raise ShimError("unavailable", f"{op} via {path}: no answer in {timeout:g} s") from err
        except OSError as err:
            raise ShimError("unavailable", f"{op} via {path}: {err}") from err
        try:
            response = json.loads(line)
        except ValueError as err:
            raise ShimError("bad_json", f"{op} via {path}: answer {line[:200]!r}") from err
        if not isinstance(response, dict):
            raise ShimError("bad_json", f"{op} via {path}: answer {line[:200]!r}")
        if response.get("ok") is not True:
            error = response.get("error")
            error = error if isinstance(error, dict) else {}
            raise ShimError(str(error.get("code", "internal")), str(error.get("message", line)))
        return response


def _reply(response: dict[str, Any]) -> ShimReply:
    pid = response.get("pid")
    duration = response.get("duration_ms")
    error = response.get("error")
    return ShimReply(
        pid=pid if isinstance(pid, int) else 0,
        duration_ms=float(duration) if isinstance(duration, int | float) else 0.0,
        cold=response.get("cold") is True,
        error=error.get("message") if isinstance(error, dict) else error,
    )


class HostNetwork:
    """The pod netns and the app's listeners, from the node (root)."""

    async def enable_migrate(self, netns: str) -> None:
        from zeropod.netns.sysctl import enable_tcp_migrate_req_async

        await enable_tcp_migrate_req_async(netns)

    async def share_listeners(self, pid: int, ports: Sequence[int]) -> list[HeldPort]:
        return await asyncio.to_thread(_share_listeners, pid, tuple(ports))

    async def wait_listening(
        self, netns: str, ports: Sequence[int], count: int, timeout: float
    ) -> int:
        from zeropod.activity.sockdiag import PodSockets, split

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        sockets = await asyncio.to_thread(PodSockets, netns)
        try:
            polls = 0
            while True:
                listeners, _ = split(await asyncio.to_thread(sockets.dump), ports)
                per_port = [sum(1 for x in listeners if x.local_port == p) for p in ports]
                if all(n >= count for n in per_port):
                    return polls
                if loop.time() >= deadline:
                    raise TimeoutError(f"ports {list(ports)}: listeners per port {per_port}")
                polls += 1
                await asyncio.sleep(0.005)
        finally:
            sockets.close()


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
        from zeropod.systemd.socket_unit import stop_unit

        systemd = await self._connect()
        await stop_unit(systemd, key.socket)
        await stop_unit(systemd, key.service)


class ImageStore:
    """Checkpoint images, one directory per container id."""

    def __init__(self, root: str = IMAGE_ROOT) -> None:
        self.root = root

    def _dir(self, container_id: str) -> str:
        return os.path.join(self.root, container_id)

    def prepare(self, container_id: str) -> str:
        path = self._dir(container_id)
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path, mode=0o700)
        return path

    def path(self, container_id: str) -> str | None:
        path = self._dir(container_id)
        try:
            return path if os.listdir(path) else None
        except FileNotFoundError:
            return None

    def remove(self, container_id: str) -> None:
        shutil.rmtree(self._dir(container_id), ignore_errors=True)

    def container_ids(self) -> list[str]:
        """The containers that have an image directory (empty or not), sorted."""
        try:
            return sorted(e.name for e in os.scandir(self.root) if e.is_dir(follow_symlinks=False))
        except FileNotFoundError:
            return []


def read_connections(netns: str, ports: Sequence[int]) -> list[Any]:
    """The TCP connections on ``ports`` in the netns at ``netns`` (sock_diag; blocking)."""
    from zeropod.activity.sockdiag import PodSockets, split

    with PodSockets(netns) as sockets:
        _, connections = split(sockets.dump(), ports)
    return list(connections)
