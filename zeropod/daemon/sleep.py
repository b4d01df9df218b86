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

The caller holds the pod's lock. Every step is timed; the timings go to the journal.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from zeropod.daemon import footprint
from zeropod.daemon.phase import Phase
from zeropod.daemon.pods import HeldPort, Pod
from zeropod.daemon.registry import Container
from zeropod.daemon.steps import CHECKPOINT_FAILED, Machinery, ShimError, StepTimer
from zeropod.journal import Journal

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


async def sleep_pod(
    pod: Pod,
    containers: list[Container],
    machinery: Machinery,
    journal: Journal,
    reason: str,
) -> SleepOutcome:
    """Run the sleep sequence for ``pod``'s scaled ``containers`` (all RUNNING)."""
    timer = StepTimer()
    netns = containers[0].identity.netns
    for container in containers:
        container.phase.transition(Phase.CHECKPOINTING, reason)

    # 1-3: hold the ports.
    try:
        with timer.step("migrate"):
            await machinery.network.enable_migrate(netns)
        with timer.step("reuseport"):
            held = await _share_listeners(containers, machinery)
        pod.held_ports = held
        if held:
            with timer.step("socket_unit"):
                await machinery.units.start(pod.key, held, netns)
    except Exception as err:  # any failure before the dump leaves every app running
        error = f"holding the ports failed: {err}"
        await _give_up(pod, containers, [], machinery, journal, error, timer)
        return SleepOutcome(False, error, timer.fields())

    # 4: dump (or stop) each container.
    dumped: list[Container] = []
    for container in containers:
        try:
            with timer.step("checkpoint", container.identity.container):
                attempts = DUMP_ATTEMPTS if not pod.backoff.failures else 1
                await _checkpoint(container, machinery, journal, attempts)
        except ShimError as err:
            container.measured.checkpoint_errors += 1
            error = f"{container.identity.label}: checkpoint failed: {err.message}"
            await _give_up(pod, containers, dumped, machinery, journal, error, timer)
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


async def _share_listeners(
    containers: list[Container], machinery: Machinery
) -> tuple[HeldPort, ...]:
    held: list[HeldPort] = []
    for container in containers:
        mapped = (
            container.config.ports_for(container.identity.container) if container.config else ()
        )
        ports = await machinery.network.share_listeners(container.pid, mapped)
        container.listen_ports = tuple(sorted({p.port for p in ports}))
        held.extend(p for p in ports if p not in held)
    return tuple(held)


async def _checkpoint(
    container: Container, machinery: Machinery, journal: Journal, attempts: int
) -> None:
    """Step 4 for one container, retrying a refused dump a bounded number of times."""
    stop = container.config is not None and container.config.disable_checkpointing
    mode = "stop" if stop else "checkpoint"
    memory = footprint.memory(container.pid)  # what the sleep frees, read before the dump
    for attempt in range(1, attempts + 1):
        try:
            image_dir = machinery.images.prepare(container.identity.container_id)
        except OSError as err:  # a full disk, a read-only or missing image root
            raise ShimError(
                IMAGE_DIR_FAILED, f"preparing its image directory failed: {err}"
            ) from err
        try:
            reply = await machinery.shim.checkpoint(container, image_dir, mode)
        except ShimError as err:
            if not _transient(err) or attempt == attempts:
                machinery.images.remove(container.identity.container_id)
                raise
            journal.warning(
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
        container.measured.last_image_bytes = None if stop else footprint.directory_bytes(image_dir)
        return


async def _give_up(
    pod: Pod,
    containers: list[Container],
    dumped: list[Container],
    machinery: Machinery,
    journal: Journal,
    error: str,
    timer: StepTimer,
) -> None:
    """Step 5 on failure: bring back what was dumped, release the ports, all RUNNING."""
    for container in dumped:
        container.phase.transition(Phase.SCALED_DOWN, "checkpointed")
        container.phase.transition(Phase.RESTORING, "another container's checkpoint failed")
        image_dir = (
            None if _stops(container) else machinery.images.path(container.identity.container_id)
        )
        try:
            reply = await machinery.shim.restore(container, image_dir)
        except ShimError as err:
            container.phase.transition(Phase.FAILED, f"restore after a failed sleep: {err}")
            continue
        container.pid = reply.pid
        machinery.images.remove(container.identity.container_id)
        container.phase.transition(Phase.RUNNING, "restored after a failed sleep")
    with timer.step("release"):
        try:
            await machinery.units.stop(pod.key)
        except Exception as err:  # logged: the unit may hold ports until the next wake
            journal.error(f"{pod.key.label}: stopping {pod.key.socket} failed: {err}")
        if pod.handoff is not None:  # a client came during the dump: it goes to the app
            pod.handoff.close()  # after the unit stop, as in wake.py
            pod.handoff = None
    pod.held_ports = ()
    for container in containers:
        if container.phase.phase is Phase.CHECKPOINTING:
            container.phase.transition(Phase.RUNNING, f"sleep failed: {error}")
    # The one journal line about the failure is the caller's (it knows the next try).


IMAGE_DIR_FAILED = "image_dir_failed"
"""The image directory could not be made: the sleep fails before any dump, nothing lost."""
TRANSIENT_REFUSALS = ("Connected TCP socket", "In-flight connection")
"""CRIU's words for a dump refused because of a request in flight: worth a quick retry.
Any other failure (a process CRIU cannot dump) would fail again: the pod backs off."""


def _transient(err: ShimError) -> bool:
    return err.code == CHECKPOINT_FAILED and any(w in err.message for w in TRANSIENT_REFUSALS)


def _stops(container: Container) -> bool:
    return container.config is not None and container.config.disable_checkpointing


def _mib(size: int | None) -> str:
    return "-" if size is None else f"{size / 2**20:.1f} MiB"
