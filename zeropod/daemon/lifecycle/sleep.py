"""Put a pod to sleep: hold its ports, then checkpoint its scaled containers.

The steps, as in docs/scale-to-zero.md ("Sleep") and DESIGN.md ("Gapless scale-down"):

1. ``net.ipv4.tcp_migrate_req=1`` in the pod netns.
2. SO_REUSEPORT on each of the app's listening sockets (pidfd_getfd).
3. Start ``zeropod@<instance>.socket`` listening on exactly those addresses (ReusePort).
4. Shim ``checkpoint`` of each scaled container (``stop`` with disable-checkpointing), with
   one quick retry of a dump CRIU refused for a request in flight ("Connected TCP socket"),
   unless the pod's previous sleep failed too.
5. Success: SCALED_DOWN. Failure: wake the containers already dumped, stop the socket unit
   (release the held sockets), back to RUNNING; logged and counted. Nothing is lost.

Run by :class:`~.podlife.PodLife` under the pod's lock; holding and releasing the ports is
:class:`~.ports.PortHold`'s. Every step is timed; the timings go to the journal.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from zeropod.contract.protocol import CHECKPOINT_FAILED, IMAGE_DIR_FAILED
from zeropod.contract.shimops import Mode
from zeropod.daemon.adapters import footprint
from zeropod.daemon.lifecycle.interfaces import ShimError
from zeropod.daemon.model.phase import Phase
from zeropod.daemon.model.registry import Container
from zeropod.steptimer import StepTimer

if TYPE_CHECKING:
    from zeropod.daemon.lifecycle.podlife import PodLife

DUMP_ATTEMPTS = 2
"""Dumps per sleep when CRIU refuses for a request in flight (only the first sleep after a
good one retries: a pod that keeps failing gets one dump per try, see ``.backoff``)."""
RETRY_PAUSE = 0.1
"""Seconds between dump attempts: long enough for a request in flight to finish."""


@dataclass(frozen=True)
class SleepOutcome:
    """How a sleep ended: ``ok``, or ``error`` saying which step failed and why."""

    ok: bool
    error: str | None = None
    fields: dict[str, float] | None = None
    """The pod-wide steps as journal fields (for the caller's one line about a failure)."""


async def sleep_pod(life: PodLife, containers: list[Container], reason: str) -> SleepOutcome:
    """Run the sleep sequence for the pod's scaled ``containers`` (all RUNNING)."""
    timer = StepTimer()
    journal = life.journal
    for container in containers:
        container.phase.transition(Phase.CHECKPOINTING, reason)

    # 1-3: hold the ports.
    try:
        await life.ports.hold(containers, timer)
    except Exception as err:  # any failure before the dump leaves every app running
        error = f"holding the ports failed: {err}"
        await _give_up(life, containers, [], error, timer)
        return SleepOutcome(False, error, timer.fields())
    if life.on_ports_held is not None:
        life.on_ports_held(life)

    # 4: dump (or stop) each container.
    dumped: list[Container] = []
    for container in containers:
        try:
            with timer.step("checkpoint", container.identity.container):
                attempts = DUMP_ATTEMPTS if not life.backoff.failures else 1
                await _checkpoint(life, container, attempts)
        except ShimError as err:
            container.measured.checkpoint_errors += 1
            error = f"{container.identity.label}: checkpoint failed: {err.message}"
            await _give_up(life, containers, dumped, error, timer)
            return SleepOutcome(False, error, timer.fields())
        dumped.append(container)

    # 5: asleep.
    for container in containers:
        container.phase.transition(Phase.SCALED_DOWN, "checkpointed")
        measured = container.measured
        journal.info(
            f"{container.identity.label}: scaled down in {timer.total_ms():g} ms "
            f"(checkpoint {measured.last_checkpoint_ms:g} ms, "
            f"image {_mib(measured.last_image_bytes)}, frees {_mib(measured.last_pss_bytes)} PSS)",
            duration_ms=timer.total_ms(),
            checkpoint_ms=measured.last_checkpoint_ms,
            image_bytes=measured.last_image_bytes,
            rss_bytes=measured.last_rss_bytes,
            pss_bytes=measured.last_pss_bytes,
            **timer.fields(container.identity.container),
            **container.journal_fields(),
        )
    return SleepOutcome(True)


async def _checkpoint(life: PodLife, container: Container, attempts: int) -> None:
    """Step 4 for one container, retrying a refused dump a bounded number of times."""
    mode: Mode = "stop" if _stops(container) else "checkpoint"
    # What the sleep frees, read before the dump; /proc and disk walks run off the loop.
    memory = await asyncio.to_thread(footprint.memory, container.pid)
    container_id = container.identity.container_id
    for attempt in range(1, attempts + 1):
        try:
            image_dir = await asyncio.to_thread(life.images.prepare, container_id)
        except OSError as err:  # a full disk, a read-only or missing image root
            raise ShimError(
                IMAGE_DIR_FAILED, f"preparing its image directory failed: {err}"
            ) from err
        try:
            reply = await life.shim.checkpoint(container, image_dir, mode)
        except ShimError as err:
            if not _transient(err) or attempt == attempts:
                await asyncio.to_thread(life.images.remove, container_id)
                raise
            life.journal.warning(
                f"{container.identity.label}: dump attempt {attempt} refused, retrying: "
                f"{err.message}",
                attempt=attempt,
                **container.journal_fields(),
            )
            await asyncio.sleep(RETRY_PAUSE)
            continue
        container.measured.last_checkpoint_ms = reply.duration_ms
        container.measured.last_rss_bytes = memory.rss if memory else None
        container.measured.last_pss_bytes = memory.pss if memory else None
        container.measured.last_image_bytes = (
            None
            if mode == "stop"
            else await asyncio.to_thread(footprint.directory_bytes, image_dir)
        )
        return


async def _give_up(
    life: PodLife,
    containers: list[Container],
    dumped: list[Container],
    error: str,
    timer: StepTimer,
) -> None:
    """Step 5 on failure: bring back what was dumped, release the ports, all RUNNING."""
    for container in dumped:
        container.phase.transition(Phase.SCALED_DOWN, "checkpointed")
        container.phase.transition(Phase.RESTORING, "another container's checkpoint failed")
        container_id = container.identity.container_id
        image_dir = None if _stops(container) else life.images.path(container_id)
        try:
            reply = await life.shim.restore(container, image_dir)
        except ShimError as err:
            container.phase.transition(Phase.FAILED, f"restore after a failed sleep: {err}")
            continue
        container.pid = reply.pid
        await asyncio.to_thread(life.images.remove, container_id)
        container.phase.transition(Phase.RUNNING, "restored after a failed sleep")
    with timer.step("release"):
        for problem in await life.ports.release():  # a client that came meanwhile: the app's
            life.journal.error(f"{life.key.label}: {problem}", unit=life.key.service)
    for container in containers:
        if container.phase.phase is Phase.CHECKPOINTING:
            container.phase.transition(Phase.RUNNING, f"sleep failed: {error}")
    # The one journal line about the failure is the caller's (it knows the next try).


TRANSIENT_REFUSALS = ("Connected TCP socket", "In-flight connection")
"""CRIU's words for a dump refused because of a request in flight: worth a quick retry.
Any other failure (a process CRIU cannot dump) would fail again: the pod backs off."""


def _transient(err: ShimError) -> bool:
    return err.code == CHECKPOINT_FAILED and any(w in err.message for w in TRANSIENT_REFUSALS)


def _stops(container: Container) -> bool:
    return container.config is not None and container.config.disable_checkpointing


def _mib(size: int | None) -> str:
    return "-" if size is None else f"{size / 2**20:.1f} MiB"
