"""The daemon's side of the shim's control socket: checkpoint and restore, typed by the
contract (:mod:`zeropod.contract.shimops`), each bounded by the timeout policy
(:mod:`zeropod.contract.timeouts`). One connection per op.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from zeropod.contract import timeouts
from zeropod.contract.protocol import (
    BAD_REQUEST,
    MAX_LINE,
    UNAVAILABLE,
    ControlError,
    check_response,
    decode,
    encode,
    older_version,
)
from zeropod.contract.shimops import (
    CheckpointRequest,
    Mode,
    RestoreRequest,
    ShimStatusRequest,
    TaskReply,
    TaskStatus,
)
from zeropod.daemon.lifecycle.interfaces import ShimError
from zeropod.daemon.model.registry import Container, ContainerIdentity

STATUS_TIMEOUT = 5.0
"""Seconds a shim may take to list its tasks (no runc call behind it)."""


class ShimClient:
    """Sends checkpoint, restore and status to a container's interposer
    (docs/scale-to-zero.md)."""

    async def checkpoint(self, container: Container, image_dir: str, mode: Mode) -> TaskReply:
        op = CheckpointRequest(container.identity.container_id, image_dir, mode)
        if mode == "checkpoint":
            bound = timeouts.scaled(await asyncio.to_thread(timeouts.resident_bytes, container.pid))
        else:
            bound = timeouts.cold_start()  # a kill and a wait
        body = await _ask(container.identity, op.to_message(), timeouts.daemon_wait(bound))
        return TaskReply.from_body(body)

    async def restore(
        self, container: Container, image_dir: str | None, *, lazy: bool = False
    ) -> TaskReply:
        op = RestoreRequest(container.identity.container_id, image_dir, fallback=False, lazy=lazy)
        if image_dir is None:
            bound = timeouts.cold_start()
        else:  # the image's size measured at the sleep (>= its pages): no disk walk on wake
            size = container.measured.last_image_bytes
            if size is None:  # reloaded after a restart: walk the image, off the loop
                size = await asyncio.to_thread(timeouts.pages_bytes, image_dir)
            bound = timeouts.restore(size)
        try:
            body = await _ask(container.identity, op.to_message(), timeouts.daemon_wait(bound))
        except ShimError as err:
            if not (lazy and err.code == BAD_REQUEST and "'lazy'" in err.message):
                raise
            # an interposer started before lazy restores existed: restore eagerly
            op = replace(op, lazy=False)
            body = await _ask(container.identity, op.to_message(), timeouts.daemon_wait(bound))
        return TaskReply.from_body(body)

    async def task_status(self, identity: ContainerIdentity) -> TaskStatus | None:
        """What the shim knows of the container's task; None when it does not know it."""
        body = await _ask(identity, ShimStatusRequest().to_message(), STATUS_TIMEOUT)
        entries = body.get("containers")
        for entry in entries if isinstance(entries, list) else []:
            status = TaskStatus.from_body(entry) if isinstance(entry, dict) else None
            if status is not None and status.container_id == identity.container_id:
                return status
        return None


async def _ask(
    identity: ContainerIdentity, message: dict[str, Any], timeout: float
) -> dict[str, Any]:
    """MESSAGE to the container's shim and its successful answer, all within TIMEOUT; a shim
    of an older contract version gets the message again as that version. Raises
    :class:`ShimError` (``unavailable`` when the shim cannot be reached or is too slow)."""
    path = identity.shim_socket
    if not path:
        raise ShimError(UNAVAILABLE, f"the shim of {identity.label} has no socket")
    try:
        async with asyncio.timeout(timeout):
            while True:
                try:
                    return await _exchange(path, message)
                except ControlError as err:
                    older = older_version(err, message)
                    if older is None:
                        raise ShimError(err.code, err.message) from err
                    message = older
    except TimeoutError as err:  # the shim took longer than the policy lets it
        op = message["op"]
        raise ShimError(UNAVAILABLE, f"{op} via {path}: no answer in {timeout:g} s") from err


async def _exchange(path: str, message: dict[str, Any]) -> dict[str, Any]:
    """One request line and its successful answer; raises ControlError (``unavailable``
    when the shim cannot be reached)."""
    try:
        reader, writer = await asyncio.open_unix_connection(path, limit=MAX_LINE)
        try:
            writer.write(encode(message))
            await writer.drain()
            line = await reader.readline()
        finally:
            writer.close()
    except OSError as err:
        raise ControlError(UNAVAILABLE, f"{message['op']} via {path}: {err}") from err
    return check_response(decode(line))
