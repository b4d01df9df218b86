"""Wake a sleeping pod: restore its scaled containers, then hand the pending connections over.

The steps, as in docs/scale-to-zero.md ("Wake"); probes were already answered by
:mod:`zeropod.daemon.lifecycle.probes` before this runs:

1. Shim ``restore`` of each scaled container while the held sockets still listen (the
   restored socket joins their reuseport group), without the shim's own cold fallback
   (``fallback: false``): a cold app could not bind while the holder listens.
2. Release the held sockets (:meth:`~.ports.PortHold.release`): ``shutdown()`` on the
   daemon's copies stops them listening and, with ``tcp_migrate_req=1``, moves every
   pending connection to the app's listener at once; then the socket unit (and its
   service) is stopped.

A cold start (disable-checkpointing, no image, or a failed restore: logged with CRIU's
restore log and counted) cannot take over the queue: the clients waiting in it are accepted
first, the ports released, the app started, and the clients relayed to it
(:mod:`zeropod.daemon.adapters.relay`).
3. Delete the images of good restores. Phase RUNNING; journal: restore ms and wake ms.

Run by :class:`~.podlife.PodLife` under the pod's lock. **This is where a cold start is decided**
(:func:`_plan`, and a failed restore in step 1); the shim only does what it is told (it
falls back to a cold start by itself only when it cannot reach the daemon). Releasing the
ports is :class:`~.ports.PortHold`'s. A container neither restored nor cold-started is
FAILED (a later wake tries again); the ports are released anyway, so clients are refused
rather than left waiting forever.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

from zeropod.contract.protocol import RESTORE_FAILED
from zeropod.daemon.adapters import relay
from zeropod.daemon.lifecycle.interfaces import ShimError
from zeropod.daemon.model.phase import Phase
from zeropod.daemon.model.registry import Container
from zeropod.steptimer import StepTimer

if TYPE_CHECKING:
    from zeropod.daemon.lifecycle.podlife import PodLife

LISTEN_TIMEOUT = 2.0
"""Seconds to wait for the restored app's listeners before releasing the held ones anyway."""
LAZY_MIN_BYTES = 16 << 20
"""Images smaller than this are restored eagerly. Measured (make bench, 2026-12-06): a lazy
wake costs a page server's start (~8 ms more at 5 MB, 75 against 67 ms, and the server had
every page in before the restore returned), and saves ~0.7 ms per MB copied (85 against
134 ms at 100 MB): it pays from about 12 MB."""


@dataclass(frozen=True)
class WakeOutcome:
    """How a wake ended: ``ok`` when every container runs again."""

    ok: bool
    wake_ms: float
    error: str | None = None


async def wake_pod(
    life: PodLife, containers: list[Container], reason: str, timer: StepTimer
) -> WakeOutcome:
    """Run the wake sequence for the pod's sleeping ``containers`` (SCALED_DOWN or FAILED)."""
    journal = life.journal
    for container in containers:
        container.phase.transition(Phase.RESTORING, reason)
    images = _plan(life, containers)
    cold = any(image is None for image in images.values())
    ports = sorted({p.port for p in life.ports.ports})
    netns = containers[0].identity.netns if containers else ""
    errors: list[str] = []

    # 1 (cold start only): a fresh app binds without SO_REUSEPORT, so it can neither join
    # the holder's group nor bind while the holder listens. Take the waiting clients out of
    # the queue first, release the ports, and relay the clients once the app listens.
    drained: list[socket.socket] = []
    if cold:
        with timer.step("drain"):
            drained = await _take_queue(life, errors)

    # 1: restore (or start cold) while the held sockets still listen.
    restored: list[Container] = []
    failed_restores: list[Container] = []
    for container in containers:
        with timer.step("restore", container.identity.container):
            try:
                error = await _restore(life, container, images[container.identity.container_id])
            except _RestoreFailed:
                failed_restores.append(container)
                continue
        if error is None:
            restored.append(container)
        else:
            errors.append(error)

    # 1 (a restore failed): the cold path as above, then start those containers cold.
    if failed_restores:
        if not cold:
            cold = True
            with timer.step("drain"):
                drained = await _take_queue(life, errors)
        for container in failed_restores:
            with timer.step("cold_start", container.identity.container):
                error = await _restore(life, container, None)
            if error is None:
                restored.append(container)
            else:
                errors.append(error)

    # 1b: the app listens (next to the holder), or the queue would have no taker.
    polls = 0
    if restored and ports:
        with timer.step("listening"):
            try:
                polls = await life.net.wait_listening(ports, 1 if cold else 2, LISTEN_TIMEOUT)
            except (OSError, TimeoutError) as err:
                polls = -1
                journal.warning(f"{life.key.label}: the woken app does not listen yet: {err}")

    # 2: release the held sockets; pending connections migrate to the app.
    if not cold:
        with timer.step("release"):
            errors += await life.ports.release()
    for client in drained:
        relay.relay_in_background(client, netns)

    # 3: report, then clean up. The pod's containers turn RUNNING together, with no await in
    # between: status never shows one woken and its sibling still restoring.
    wake_ms = timer.total_ms()
    for container in restored:
        container.phase.transition(Phase.RUNNING, f"woken ({reason})")
        journal.info(
            f"{container.identity.label}: woke in {wake_ms:g} ms "
            f"({'cold start' if cold else 'restore'} {container.measured.last_restore_ms:g} ms)",
            wake_ms=wake_ms,
            restore_ms=container.measured.last_restore_ms,
            listen_polls=polls,
            relayed=len(drained),
            **timer.fields(container.identity.container),
            **container.journal_fields(),
        )
    for container in restored:  # a failed restore keeps CRIU's log till the next sleep
        if container not in failed_restores:
            await asyncio.to_thread(life.images.remove, container.identity.container_id)
    for error in errors:
        journal.error(
            f"{life.key.label}: {error}",
            unit=life.key.service,
            pod=life.key.pod,
            namespace=life.key.namespace,
            wake_ms=wake_ms,
            **timer.fields(),
        )
    return WakeOutcome(not errors, wake_ms, "; ".join(errors) or None)


def _plan(life: PodLife, containers: list[Container]) -> dict[str, str | None]:
    """Per container, the image to restore from; None decides a cold start
    (disable-checkpointing, or no image)."""
    plan: dict[str, str | None] = {}
    for container in containers:
        container_id = container.identity.container_id
        stops = container.config is not None and container.config.disable_checkpointing
        plan[container_id] = None if stops else life.images.path(container_id)
    return plan


async def _take_queue(life: PodLife, errors: list[str]) -> list[socket.socket]:
    """The cold path's first step: accept the waiting clients, releasing the held ports.

    Returns the accepted clients (to relay once the app listens); release errors go to ERRORS.
    """
    failed, drained = await life.ports.release_taking_queue()
    errors += failed
    return drained


def _lazy(container: Container, image_dir: str | None) -> bool:
    """Restore with lazy pages: an image (not a cold start) of LAZY_MIN_BYTES or more (of
    unknown size too, after a daemon restart), unless the pod opted out."""
    if image_dir is None or (container.config and container.config.disable_lazy_restore):
        return False
    size = container.measured.last_image_bytes
    return size is None or size >= LAZY_MIN_BYTES


class _RestoreFailed(Exception):
    """The shim could not restore from the image and left the container asleep."""


async def _restore(life: PodLife, container: Container, image_dir: str | None) -> str | None:
    """Step 1 for one container; returns an error when it does not run afterwards.

    Raises :class:`_RestoreFailed` (logged, counted) when the restore from ``image_dir``
    failed: the container is still asleep and the caller starts it cold.
    """
    journal = life.journal
    try:
        reply = await life.shim.restore(container, image_dir, lazy=_lazy(container, image_dir))
    except ShimError as err:
        container.measured.restore_errors += 1
        if image_dir is not None and err.code == RESTORE_FAILED:
            journal.error(
                f"{container.identity.label}: restore failed, starting it cold: {err.message}",
                image_dir=image_dir,
                **container.journal_fields(),
            )
            raise _RestoreFailed(err.message) from err
        what = "restore" if image_dir is not None else "cold start"
        container.phase.transition(Phase.FAILED, f"{what} failed: {err.message}")
        return f"{container.identity.label}: {what} failed: {err.message}"
    container.pid = reply.pid
    container.measured.last_restore_ms = reply.duration_ms
    if reply.cold:
        container.measured.cold_starts += 1
        if image_dir is not None:  # a shim that still falls back by itself
            container.measured.restore_errors += 1
            journal.error(
                f"{container.identity.label}: restore failed, started cold instead: "
                f"{reply.error or 'no reason given'}",
                restore_ms=reply.duration_ms,
                **container.journal_fields(),
            )
    return None
