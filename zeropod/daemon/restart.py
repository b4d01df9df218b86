"""What a (re)started daemon does before it acts: ask the shims and systemd what is true.

1. :func:`reload`: the containers saved before the restart, each as its shim says it is now
   (:mod:`zeropod.daemon.lifecycle.reconcile`), once the shim has ended an op it was in the
   middle of (a dump or restore the daemon died during); pods whose containers all run
   again have their held ports released.
2. :func:`reconcile_units`: the socket units systemd has against the pods now known. A
   sleeping pod whose unit is gone (stopped by hand, systemd re-executed) gets it back, so
   its next client still wakes it; a unit of no sleeping pod (its pod deleted while the
   daemon was down) is stopped, with the ports it holds.
3. :func:`watch_held`: the daemon takes its copies of every held socket again and watches
   them; a pod whose copies cannot be taken is woken (its clients could not wake it).
4. :func:`reclaim_images`: images of containers nobody knows are removed.
"""

from __future__ import annotations

import asyncio
import os
import time

from zeropod.contract import timeouts
from zeropod.contract.protocol import ControlError
from zeropod.contract.shimops import TaskStatus
from zeropod.daemon.adapters.images import ImageStore
from zeropod.daemon.adapters.statefiles import pid_alive, recovered_phase
from zeropod.daemon.api.service import ControlService
from zeropod.daemon.lifecycle.interfaces import ShimError, ShimStatus, SocketUnits
from zeropod.daemon.lifecycle.reconcile import MID_OP, Verdict, verdict
from zeropod.daemon.lifecycle.states import ASLEEP, RUNNING
from zeropod.daemon.lifecycle.watch import HeldPortWatch
from zeropod.daemon.model.phase import Phase
from zeropod.daemon.model.registry import ContainerIdentity
from zeropod.journal import Journal

MID_OP_WAIT = timeouts.daemon_wait(timeouts.restore(1 << 50))
"""The longest a shim's op may still run (a dump or restore at the largest bound)."""
MID_OP_POLL = 0.1


def reclaim_images(service: ControlService, images: ImageStore, journal: Journal) -> list[str]:
    """Remove the images of containers the daemon does not know after its reload.

    A reboot ends every pod (and /run with the state), a pod deleted while the daemon was
    down is forgotten at reload: their images can never be restored, and they hold the
    apps' memory (secrets included) on disk. Returns the ids removed.
    """
    known = {c.identity.container_id for c in service.registry}
    removed = [cid for cid in images.container_ids() if cid not in known]
    for container_id in removed:
        images.remove(container_id)
        journal.info(
            f"removed the image of {container_id}: no such container after a restart",
            container_id=container_id,
        )
    return removed


async def reload(
    service: ControlService, shim: ShimStatus, journal: Journal, mid_op_wait: float = MID_OP_WAIT
) -> None:
    """Bring back the containers saved before a restart, as their shims say they are now
    (:mod:`zeropod.daemon.lifecycle.reconcile`); then release the held ports of pods whose
    containers all run again."""
    assert service.store is not None
    for saved in service.store.load(journal.error):
        identity = saved.identity
        if identity.shim_socket and not os.path.exists(identity.shim_socket):
            found = Verdict(None, saved.pid, "its shim is gone")
        elif not identity.shim_socket:  # a shim without a control socket: the file's guess
            alive = pid_alive(saved.pid)
            guess = recovered_phase(saved.phase, alive)
            gone = saved.phase is Phase.RUNNING and not alive
            found = Verdict(None if gone else guess, saved.pid, "from its state file")
        else:
            try:
                found = verdict(
                    saved.phase, saved.pid, await settled_status(shim, identity, mid_op_wait)
                )
            except ShimError as err:
                guess = recovered_phase(saved.phase, pid_alive(saved.pid))
                found = Verdict(guess, saved.pid, f"its shim did not answer ({err.message})")
        if found.phase is None:
            service.store.remove(identity.container_id)
            journal.info(f"{identity.label}: gone while the daemon was down ({found.why})")
            continue
        container = service.restore_container(identity, found.pid, saved.annotations, found.phase)
        container.measured.last_checkpoint_ms = saved.last_checkpoint_ms
        container.measured.last_restore_ms = saved.last_restore_ms
        if container.managed and saved.held_ports:
            service.pods.life_of(container).ports.restore_held(saved.held_ports)
        journal.info(
            f"{identity.label}: reloaded as {found.phase.value}, {found.why}",
            **container.journal_fields(),
        )
    for life in service.pods.lives():  # settled as each container came back
        if life.state is RUNNING and life.ports.held:  # woken without us: the app listens
            for error in await life.ports.release():
                journal.error(f"{life.key.label}: {error}", unit=life.key.service)


async def settled_status(
    shim: ShimStatus, identity: ContainerIdentity, timeout: float = MID_OP_WAIT
) -> TaskStatus | None:
    """The shim's status once it is not mid-op (the daemon may have died in the middle of a
    dump or restore the shim carries on and ends within its bound); after TIMEOUT, the
    mid-op status as it is."""
    deadline = time.monotonic() + timeout
    status = await shim.task_status(identity)
    while status is not None and status.phase in MID_OP and time.monotonic() < deadline:
        await asyncio.sleep(MID_OP_POLL)
        status = await shim.task_status(identity)
    return status


async def reconcile_units(service: ControlService, units: SocketUnits, journal: Journal) -> None:
    """Step 2: every sleeping pod's socket unit listens; a unit of a pod that holds no ports
    (unknown, or running again) is stopped. Never raises: the daemon starts regardless."""
    try:
        listening = await units.listening()
    except Exception as err:  # no systemd to ask: the units are checked as pods sleep and wake
        journal.error(f"cannot list zeropod's socket units: {err}")
        return
    for life in service.pods.lives():
        socket_unit = life.key.socket
        containers = life.containers()
        if life.state is ASLEEP and life.ports.held and containers and socket_unit not in listening:
            try:
                await units.start(life.key, life.ports.ports, containers[0].identity.netns)
            except Exception as err:  # the pod stays asleep; its next wake is by the shim
                journal.error(f"{life.key.label}: cannot hold its ports again: {err}")
                continue
            journal.warning(
                f"{life.key.label}: its socket unit was gone; holding its ports again",
                unit=life.key.service,
            )
        if life.ports.held:  # asleep, or FAILED between phases: its wake releases the ports
            listening.discard(socket_unit)
    for orphan in sorted(listening):
        try:
            await units.stop_orphan(orphan)
        except Exception as err:  # the daemon starts anyway; the unit is tried again next time
            journal.error(f"cannot stop {orphan}, which no pod of this node holds: {err}")
            continue
        journal.info(f"stopped {orphan}: no sleeping pod of this node holds it", unit=orphan)


async def watch_held(service: ControlService, watch: HeldPortWatch, journal: Journal) -> None:
    """Step 3: take the daemon's copies of each held socket again and watch them. A pod whose
    copies cannot be taken is woken now: no client of it could. Never raises."""
    for life in service.pods.lives():
        containers = life.containers()
        if not life.ports.held or not containers:
            continue
        try:
            await life.ports.take_copies(containers[0].identity.netns)
        except OSError as err:
            journal.error(
                f"{life.key.label}: cannot watch its held ports ({err}); waking it",
                unit=life.key.service,
                pod=life.key.pod,
                namespace=life.key.namespace,
            )
            try:
                await life.wake("its held ports could not be watched after a restart")
            except ControlError as wake_err:
                journal.error(f"{life.key.label}: wake failed: {wake_err.message}")
            continue
        watch.watch(life)
