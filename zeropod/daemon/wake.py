"""Wake a sleeping pod: restore its scaled containers, then hand the pending connections over.

The steps, as in docs/scale-to-zero.md ("Wake"); probes were already answered by
:mod:`zeropod.daemon.probes` before this runs:

1. Shim ``restore`` of each scaled container while the held sockets still listen (the
   restored socket joins their reuseport group). No image (disable-checkpointing) or a
   failed restore: the shim starts the container cold; logged and counted.
2. Release the held sockets: stop the socket unit (and the activated service), then close
   the daemon's copies and end the activator's connection. With ``tcp_migrate_req=1`` every
   pending connection moves to the app when the last copy closes. The order matters
   (measured): when the activated service exits first, systemd sees the socket readable
   again with its stop job pending and flushes it, accepting and closing (resetting) every
   pending connection; while the service runs systemd does not watch the socket.
3. Delete the images of good restores. Phase RUNNING; journal: restore ms and wake ms.

The caller holds the pod's lock. A container neither restored nor cold-started is FAILED (a
later wake tries again); the ports are released anyway, so clients are refused rather than
left waiting forever.
"""

from __future__ import annotations

from dataclasses import dataclass

from zeropod.daemon.phase import Phase
from zeropod.daemon.pods import Pod
from zeropod.daemon.registry import Container
from zeropod.daemon.steps import Machinery, ShimError, StepTimer
from zeropod.journal import Journal

LISTEN_TIMEOUT = 2.0
"""Seconds to wait for the restored app's listeners before releasing the held ones anyway."""


@dataclass(frozen=True)
class WakeOutcome:
    """How a wake ended: ``ok`` when every container runs again."""

    ok: bool
    timings: dict[str, float]
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

    # 1: restore while the held sockets listen.
    restored: list[Container] = []
    errors: list[str] = []
    for container in containers:
        with timer.step(f"restore_{container.identity.container}"):
            error = await _restore(container, machinery, journal)
        if error is None:
            restored.append(container)
        else:
            errors.append(error)

    # 1b: the restored app listens next to the holder, or the queue would have no taker.
    ports = sorted({p.port for p in pod.held_ports})
    polls = 0
    if restored and ports:
        with timer.step("listening"):
            try:
                polls = await machinery.network.wait_listening(
                    restored[0].identity.netns, ports, LISTEN_TIMEOUT
                )
            except (OSError, TimeoutError) as err:
                polls = -1
                journal.warning(f"{pod.key.label}: the restored app does not listen yet: {err}")

    # 2: release the held sockets; pending connections migrate to the app.
    with timer.step("release"):
        try:
            await machinery.units.stop(pod.key)
        except Exception as err:  # the unit keeps the ports: a client may wait, log it loudly
            errors.append(f"stopping {pod.key.socket} failed: {err}")
        if pod.handoff is not None:
            pod.handoff.close()
            pod.handoff = None
        pod.held_ports = ()

    # 3: clean up and report.
    wake_ms = timer.total_ms()
    for container in restored:
        machinery.images.remove(container.identity.container_id)
        container.phase.transition(Phase.RUNNING, f"woken ({reason})")
        journal.info(
            f"{container.identity.label}: woke in {wake_ms:g} ms "
            f"(restore {container.measured.last_restore_ms:g} ms)",
            wake_ms=wake_ms,
            restore_ms=container.measured.last_restore_ms,
            listen_polls=polls,
            **timer.fields(),
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
    return WakeOutcome(not errors, timer.steps, wake_ms, "; ".join(errors) or None)


async def _restore(container: Container, machinery: Machinery, journal: Journal) -> str | None:
    """Step 1 for one container; returns an error when it does not run afterwards."""
    container_id = container.identity.container_id
    stops = container.config is not None and container.config.disable_checkpointing
    image_dir = None if stops else machinery.images.path(container_id)
    try:
        reply = await machinery.shim.restore(container, image_dir)
    except ShimError as err:
        container.measured.restore_errors += 1
        container.phase.transition(Phase.FAILED, f"restore and cold start failed: {err.message}")
        return f"{container.identity.label}: restore and cold start failed: {err.message}"
    container.pid = reply.pid
    container.measured.last_restore_ms = reply.duration_ms
    if reply.cold:
        container.measured.cold_starts += 1
        if image_dir is not None:
            container.measured.restore_errors += 1
            journal.error(
                f"{container.identity.label}: restore failed, started cold instead: "
                f"{reply.error or 'no reason given'}",
                restore_ms=reply.duration_ms,
                **container.journal_fields(),
            )
    return None
