"""Wake a sleeping pod: restore its scaled containers, then hand the pending connections over.

The steps, as in docs/scale-to-zero.md ("Wake"); probes were already answered by
:mod:`zeropod.daemon.probes` before this runs:

1. Shim ``restore`` of each scaled container while the held sockets still listen (the
   restored socket joins their reuseport group), without the shim's own cold fallback
   (``fallback: false``): a cold app could not bind while the holder listens.
2. Release the held sockets: stop the socket unit (and the activated service), then close
   the daemon's copies and end the activator's connection (in this order, see
   :func:`_release`). With ``tcp_migrate_req=1`` every pending connection moves to the app
   when the last copy closes.

A cold start (disable-checkpointing, no image, or a failed restore: logged with CRIU's
restore log and counted) cannot take over the queue: the clients waiting in it are accepted
first, the ports released, the app started, and the clients relayed to it
(:mod:`zeropod.daemon.proxy`).
3. Delete the images of good restores. Phase RUNNING; journal: restore ms and wake ms.

The caller holds the pod's lock. A container neither restored nor cold-started is FAILED (a
later wake tries again); the ports are released anyway, so clients are refused rather than
left waiting forever.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from zeropod.daemon import proxy
from zeropod.daemon.phase import Phase
from zeropod.daemon.pods import Pod
from zeropod.daemon.registry import Container
from zeropod.daemon.steps import RESTORE_FAILED, Machinery, ShimError, StepTimer
from zeropod.journal import Journal

LISTEN_TIMEOUT = 2.0
"""Seconds to wait for the restored app's listeners before releasing the held ones anyway."""


@dataclass(frozen=True)
class WakeOutcome:
    """How a wake ended: ``ok`` when every container runs again."""

    ok: bool
    wake_ms: float
    error: str | None = None


async def wake_pod(
    pod: Pod,
    containers: list[Container],
    machinery: Machinery,
    journal: Journal,
    reason: str,
) -> WakeOutcome:
    """Run the wake sequence for ``pod``'s scaled ``containers`` (SCALED_DOWN or FAILED)."""
    timer = StepTimer()
    for container in containers:
        container.phase.transition(Phase.RESTORING, reason)
    images = {c.identity.container_id: _image_dir(c, machinery) for c in containers}
    cold = any(image is None for image in images.values())
    ports = sorted({p.port for p in pod.held_ports})
    netns = containers[0].identity.netns
    errors: list[str] = []

    # 1 (cold start only): a fresh app binds without SO_REUSEPORT, so it can neither join
    # the holder's group nor bind while the holder listens. Take the waiting clients out of
    # the queue first, release the ports, and relay the clients once the app listens.
    drained: list[socket.socket] = []
    if cold:
        with timer.step("drain"):
            drained = await _take_queue(pod, machinery, errors)

    # 1: restore (or start cold) while the held sockets still listen.
    restored: list[Container] = []
    failed_restores: list[Container] = []
    for container in containers:
        with timer.step("restore", container.identity.container):
            try:
                error = await _restore(
                    container, images[container.identity.container_id], machinery, journal
                )
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
                drained = await _take_queue(pod, machinery, errors)
        for container in failed_restores:
            with timer.step("cold_start", container.identity.container):
                error = await _restore(container, None, machinery, journal)
            if error is None:
                restored.append(container)
            else:
                errors.append(error)

    # 1b: the app listens (next to the holder), or the queue would have no taker.
    polls = 0
    if restored and ports:
        with timer.step("listening"):
            try:
                polls = await machinery.network.wait_listening(
                    netns, ports, 1 if cold else 2, LISTEN_TIMEOUT
                )
            except (OSError, TimeoutError) as err:
                polls = -1
                journal.warning(f"{pod.key.label}: the woken app does not listen yet: {err}")

    # 2: release the held sockets; pending connections migrate to the app.
    if not cold:
        with timer.step("release"):
            errors += await _release(pod, machinery)
    for client in drained:
        proxy.relay_in_background(client, netns)

    # 3: clean up and report.
    wake_ms = timer.total_ms()
    for container in restored:
        if container not in failed_restores:  # a failed one keeps CRIU's log till next sleep
            machinery.images.remove(container.identity.container_id)
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
    for error in errors:
        journal.error(
            f"{pod.key.label}: {error}",
            unit=pod.key.service,
            pod=pod.key.pod,
            namespace=pod.key.namespace,
            wake_ms=wake_ms,
            **timer.fields(),
        )
    return WakeOutcome(not errors, wake_ms, "; ".join(errors) or None)


async def _take_queue(pod: Pod, machinery: Machinery, errors: list[str]) -> list[socket.socket]:
    """The cold path's first step: accept the waiting clients, then release the held ports.

    Returns the accepted clients (to relay once the app listens); release errors go to ERRORS.
    """
    drained = pod.handoff.drain() if pod.handoff is not None else []
    errors += await _release(pod, machinery)
    return drained


async def _release(pod: Pod, machinery: Machinery) -> list[str]:
    """Stop the socket unit (and the activated service), then close the daemon's copies.

    The daemon's copy must be the last one closed: when the activated service exits first,
    systemd sees the socket readable with a stop pending and flushes it (accepts and closes,
    resetting every waiting client; measured). While the service runs, systemd does not
    watch the socket.
    """
    errors: list[str] = []
    try:
        await machinery.units.stop(pod.key)
    except Exception as err:  # the unit keeps the ports: a client may wait, log it loudly
        errors.append(f"stopping {pod.key.socket} failed: {err}")
    if pod.handoff is not None:
        pod.handoff.close()
        pod.handoff = None
    pod.held_ports = ()
    return errors


def _image_dir(container: Container, machinery: Machinery) -> str | None:
    """The image to restore from; None means a cold start (disable-checkpointing, or none)."""
    if container.config is not None and container.config.disable_checkpointing:
        return None
    return machinery.images.path(container.identity.container_id)


class _RestoreFailed(Exception):
    """The shim could not restore from the image and left the container asleep."""


async def _restore(
    container: Container, image_dir: str | None, machinery: Machinery, journal: Journal
) -> str | None:
    """Step 1 for one container; returns an error when it does not run afterwards.

    Raises :class:`_RestoreFailed` (logged, counted) when the restore from ``image_dir``
    failed: the container is still asleep and the caller starts it cold.
    """
    try:
        reply = await machinery.shim.restore(container, image_dir, fallback=False)
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
