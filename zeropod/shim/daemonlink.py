"""The shim's side of the daemon's control socket: register, unregister, wake.

The daemon is optional for a container's life: register and unregister are best effort,
run in the background and never delay containerd's call; a register the daemon did not
answer is retried with back-off while the container lives (the daemon may be restarting).
``wake`` blocks until the daemon woke the pod and returns False when the daemon cannot do
it, so the caller restores on its own. The blocking client runs in a worker thread, so the
interposer's loop keeps serving the daemon's own ``restore`` meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from zeropod.contract import timeouts
from zeropod.contract.daemonclient import ANNOTATION_PREFIX, SHIM_TIMEOUT, ControlClient
from zeropod.contract.protocol import ControlError, DaemonUnavailable
from zeropod.contract.requests import (
    RegisterRequest,
    RestartedColdRequest,
    UnregisterRequest,
    WakeRequest,
)
from zeropod.shim import oci, spec
from zeropod.shim.taskphase import TaskPhase
from zeropod.shim.tasks import TaskRecord

log = logging.getLogger(__name__)

RETRY_MIN, RETRY_MAX = 1.0, 30.0
UNREGISTER_PATIENCE = 600.0
"""How long an unregister is retried while the daemon cannot take it."""


class DaemonLink:
    """Talks to the daemon at ``path`` (None: ``$ZEROPOD_CONTROL_SOCKET`` or the default)."""

    def __init__(self, shim_socket: str, path: str | None = None) -> None:
        self.shim_socket = shim_socket
        self.path = path
        self._tasks: set[asyncio.Task[None]] = set()

    def _background(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _send(self, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        """One request, through the contract's one client (which speaks an older daemon's
        version when it must)."""
        return ControlClient(self.path, timeout).request(message)

    def register(self, c: TaskRecord) -> None:
        """Register a started CRI container in the background (not the pause container)."""
        self._background(self._register(c), f"register-{c.id}")

    async def _register(self, c: TaskRecord) -> None:
        try:
            fields = oci.cri_registration(c.id, c.bundle, c.pid, spec.read_spec(c.bundle))
        except (OSError, ValueError) as err:
            log.warning("container %s: not registered, cannot read its spec: %s", c.id, err)
            return
        if fields is None:
            return  # a pause container, or not created through CRI
        fields["annotations"] = {
            k: v for k, v in fields["annotations"].items() if k.startswith(ANNOTATION_PREFIX)
        }
        message = RegisterRequest(**fields, shim_socket=self.shim_socket).to_message()
        delay = RETRY_MIN
        while c.phase not in (TaskPhase.EXITED, TaskPhase.ENDED, TaskPhase.DELETED):
            try:
                answer = await asyncio.to_thread(self._send, message, SHIM_TIMEOUT)
            except ControlError as err:
                log.log(
                    logging.INFO if delay == RETRY_MIN else logging.DEBUG,
                    "container %s: daemon did not take the registration (retrying): %s",
                    c.id,
                    err,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            c.registered = True
            log.info(
                "container %s registered with the daemon: managed=%s %s",
                c.id,
                answer.get("managed"),
                answer.get("reason") or "",
            )
            return

    def unregister(self, c: TaskRecord, reason: str) -> None:
        """Tell the daemon (in the background) that the task really ended."""
        if not c.registered:
            return
        c.registered = False
        self._background(self._unregister(c.id, reason), f"unregister-{c.id}")

    async def _unregister(self, container_id: str, reason: str) -> None:
        """Retried with back-off while the daemon cannot take it (busy, restarting): until
        it does, it keeps the container's image, socket unit and held ports."""
        message = UnregisterRequest(container_id, reason).to_message()
        delay = RETRY_MIN
        deadline = asyncio.get_running_loop().time() + UNREGISTER_PATIENCE
        while True:
            try:
                await asyncio.to_thread(self._send, message, SHIM_TIMEOUT)
                break
            except DaemonUnavailable as err:
                if asyncio.get_running_loop().time() > deadline:
                    log.warning("container %s: unregister not delivered: %s", container_id, err)
                    return  # a restarted daemon asks this shim, which no longer knows it
                log.info("container %s: unregister not delivered (retrying): %s", container_id, err)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
            except ControlError as err:  # not_found: forgotten already
                log.info("container %s: unregister (%s): %s", container_id, reason, err)
                return
        log.info("container %s unregistered: %s", container_id, reason)

    def restarted_cold(self, c: TaskRecord, error: str) -> None:
        """Tell the daemon (in the background) that ``c`` lost its restored memory and runs
        cold now: it counts a failed restore and a cold start."""
        if c.registered:
            message = RestartedColdRequest(c.id, c.pid, error).to_message()
            self._background(self._report(c.id, message), f"restarted-cold-{c.id}")

    async def _report(self, container_id: str, message: dict[str, Any]) -> None:
        try:
            await asyncio.to_thread(self._send, message, SHIM_TIMEOUT)
        except ControlError as err:
            log.warning("container %s: daemon not told of the cold restart: %s", container_id, err)

    async def wake(self, c: TaskRecord) -> bool:
        """Ask the daemon to wake ``c``'s pod; False if it could not (restore locally then)."""
        # The daemon restores the whole pod: wait as long as the policy lets it wait.
        image = await asyncio.to_thread(timeouts.pages_bytes, c.image_dir) if c.image_dir else 0
        err = await self._ask_wake(c, timeouts.wake_wait(image))
        if err is not None:
            log.warning("container %s: daemon did not wake it (%s); restoring here", c.id, err)
            return False
        return True

    async def wake_over(self, c: TaskRecord) -> None:
        """Wait (bounded) until no wake of ``c``'s pod runs in the daemon: a wake ends by
        releasing the pod's held ports, which a container started cold must bind. A wake
        request does it: the daemon serves it under the pod's lock, after the wake in
        progress, and for a pod that runs it does nothing. A daemon that cannot answer is
        logged and not waited for (it holds no wake then, or will release at its restart)."""
        if c.registered and (err := await self._ask_wake(c, timeouts.wake_wait(0))) is not None:
            log.warning("container %s: the daemon's wake not seen over (%s)", c.id, err)

    async def _ask_wake(self, c: TaskRecord, timeout: float) -> ControlError | None:
        """Send the daemon a wake of ``c``'s pod and wait up to TIMEOUT; its error, if any."""
        try:
            await asyncio.to_thread(
                self._send, WakeRequest(container_id=c.id).to_message(), timeout
            )
        except ControlError as err:
            return err
        return None

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
