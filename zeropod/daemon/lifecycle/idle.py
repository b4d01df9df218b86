"""The idle loop of each pod: poll its TCP activity every second, sleep it when idle long enough.

Activity comes from ``zeropod.activity``: sock_diag in the pod netns (the pod's one view,
``PodLife.net``) fed to an ``ActivityTracker`` that ignores the node's own addresses and
loopback (kubelet's probes)
and counts open client connections as activity. The ports watched are each scaled
container's ``ports-map`` entry, else its listening sockets (auto-detected from /proc, again
only when the netns's listeners change: ``portwatch``).

Policy (:func:`scaledown_after`): a pod sleeps once it has been idle for the longest
``scaledown-duration`` of its scaled containers; a duration of 0 on any of them means never.
Tracking starts afresh whenever the pod is (again) RUNNING, so a pod woken by an exec or by
``zeropodctl wake`` gets a full idle period before it sleeps again; a failed sleep waits a
full period before the next try.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from zeropod.contract.protocol import SLEEP_FAILED, ControlError
from zeropod.daemon.adapters.shimexit import ShimExits
from zeropod.daemon.lifecycle.portwatch import PortWatch, detect_ports
from zeropod.daemon.lifecycle.states import ASLEEP, FAILED, RUNNING
from zeropod.daemon.model.pod import PodKey
from zeropod.daemon.model.registry import Container
from zeropod.journal import Journal

if TYPE_CHECKING:
    from zeropod.daemon.lifecycle.podlife import PodLife
    from zeropod.daemon.lifecycle.pods import Pods

POLL_INTERVAL = 1.0
SHIM_CHECK_POLLS = 10
"""Every this many polls the loop checks that the pod's shims still listen (asleep: only
after one ended, or for a shim whose process could not be found)."""
WAKE_RETRY_BASE = 5.0
"""Seconds: the first retry of a failed wake waits 10 s (base x 2), then doubles."""


def scaledown_after(containers: Iterable[Container]) -> float | None:
    """Seconds of idleness after which the pod sleeps; None when it never does."""
    seconds = [c.config.scaledown_seconds for c in containers if c.config is not None]
    if not seconds or min(seconds) <= 0:
        return None
    return max(seconds)


def shim_gone(path: str) -> bool:
    """True when nothing listens on the shim's control socket any more (the file is gone, or
    a connect is refused); a busy or slow shim is not gone, nor one without a socket."""
    if not path:
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK) as probe:
        try:
            probe.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            return True
        except OSError:
            return False
    return False


class IdleLoops:
    """One idle loop task per pod with scaled containers."""

    def __init__(
        self,
        pods: Pods,
        journal: Journal,
        excluded: Callable[[], Sequence[Any]],
        *,
        make_tracker: Callable[[float], Any] | None = None,
        detect: Callable[[int], Sequence[int]] = detect_ports,
        interval: float = POLL_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        on_gone: Callable[[str, str], Awaitable[Any]] | None = None,
        shim_exits: ShimExits | None = None,
    ) -> None:
        self.pods = pods
        self.journal = journal
        self.excluded = excluded
        """Loopback and the node's addresses now (clients there do not count)."""
        self._make_tracker = make_tracker or self._tracker
        self._detect = detect
        self.interval = interval
        self.clock = clock
        self.on_gone = on_gone
        """(container id, why) -> forget a container whose shim is gone (the service's
        unregister): its image, socket unit and held ports must not outlive it."""
        self.shim_exits = shim_exits or ShimExits()
        """pidfds of sleeping pods' shims: their end wakes the loop (nothing polled)."""
        self._unwatched: set[str] = set()
        """Shim sockets whose process could not be found: checked every SHIM_CHECK_POLLS."""
        self._tasks: dict[PodKey, asyncio.Task[None]] = {}

    def _excluded_for(self, containers: Sequence[Container]) -> tuple[Any, ...]:
        """Sources that are not activity: the node's addresses and loopback, or only
        loopback when a container turned probe detection off (the node's connections are
        then clients like any other)."""
        if any(c.config is not None and c.config.disable_probe_detection for c in containers):
            from zeropod.activity.sources import LOOPBACK

            return LOOPBACK
        return tuple(self.excluded())

    def _tracker(self, now: float) -> Any:
        from zeropod.activity.tracker import ActivityTracker

        return ActivityTracker(now, self.excluded())

    def ensure(self, key: PodKey) -> None:
        """Start the pod's loop unless it runs."""
        task = self._tasks.get(key)
        if task is None or task.done():
            self._tasks[key] = asyncio.create_task(self._run(key))

    async def close(self) -> None:
        """Stop every loop."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self.shim_exits.close()

    async def _rest(self, life: PodLife | None) -> None:
        """Wait for the next poll: one interval; while the pod sleeps, until its state changes
        or one of its shims ends (a pidfd each: nothing is polled then). A shim whose process
        cannot be found is checked every SHIM_CHECK_POLLS intervals instead."""
        if life is None or life.state is not ASLEEP:
            await asyncio.sleep(self.interval)
            return
        life.moved.clear()
        paths = sorted({c.identity.shim_socket for c in life.containers()} - {""})
        unwatched = set(self.shim_exits.watch(paths))  # cached, or one non-blocking connect
        new = unwatched - self._unwatched
        self._unwatched = (self._unwatched - set(paths)) | unwatched
        if new:  # ended before it could be watched (or not listening): check at once, once
            return
        moved = asyncio.ensure_future(life.moved.wait())
        ended = asyncio.ensure_future(self.shim_exits.wait_any(paths))
        try:
            await asyncio.wait(
                {moved, ended},
                timeout=self.interval * SHIM_CHECK_POLLS if unwatched else None,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for task in (moved, ended):
                task.cancel()
            await asyncio.gather(moved, ended, return_exceptions=True)

    async def _run(self, key: PodKey) -> None:
        shims: set[str] = set()  # the pod's shims' sockets: their pidfds go with the loop
        try:
            await self._loop(key, shims)
        finally:
            self.shim_exits.forget(shims)

    async def _loop(self, key: PodKey, shims: set[str]) -> None:
        tracker: Any = None
        port_watch = PortWatch(self._detect)
        last_error = ""
        polls = 0
        while True:
            life = self.pods.find(key)
            asleep_before = life is not None and life.state is ASLEEP
            await self._rest(life)
            life = self.pods.find(key)
            containers = life.containers() if life is not None else []
            if life is None or not containers:
                return
            shims.update(c.identity.shim_socket for c in containers)
            polls = SHIM_CHECK_POLLS if asleep_before else polls + 1
            if polls % SHIM_CHECK_POLLS == 0 and await self._forget_orphans(containers):
                continue
            if life.state is FAILED and not life.lock.locked():
                tracker = None
                await self._retry_wake(life)
                continue
            after = scaledown_after(containers)
            if after is None or life.state is not RUNNING:
                tracker = None
                continue
            try:
                ports, detected = await port_watch.ports(life.net, containers)
                for container in containers:  # recorded here, on the loop, not in the thread
                    if container.identity.container_id in detected:
                        container.listen_ports = detected[container.identity.container_id]
                snapshot = await life.net.snapshot(ports)
            except OSError as err:
                if str(err) != last_error:  # once per distinct problem, not every second
                    self.journal.warning(
                        f"{key.label}: activity unreadable: {err}", unit=key.service
                    )
                last_error = str(err)
                continue
            last_error = ""
            now = self.clock()
            if tracker is None:
                tracker = self._make_tracker(now)
            tracker.excluded_networks = self._excluded_for(containers)
            tracker.observe(snapshot, now)
            idle = tracker.idle_for(now)
            if idle < after or not ports or not life.backoff.ready():
                continue
            tracker = None  # a woken pod starts afresh
            try:
                await life.sleep(f"idle for {idle:.0f}s")
            except ControlError as err:
                if err.code != SLEEP_FAILED:  # a failed sleep was logged where it failed
                    self.journal.warning(
                        f"{key.label}: idle sleep did not happen: {err.message}",
                        unit=key.service,
                    )
            except Exception as err:  # the loop must outlive any one bug
                self.journal.error(
                    f"{key.label}: idle sleep raised {err!r}; the pod keeps running",
                    unit=key.service,
                )

    async def _forget_orphans(self, containers: Sequence[Container]) -> bool:
        """Forget the containers whose shim is gone (killed, crashed): containerd has
        dropped their task, and nothing else would tell us. True when any was."""
        if self.on_gone is None:
            return False
        gone = [
            c for c in containers if c.identity.shim_socket and shim_gone(c.identity.shim_socket)
        ]
        for container in gone:
            self.journal.warning(
                f"{container.identity.label}: its shim is gone; forgetting it",
                **container.journal_fields(),
            )
            with contextlib.suppress(ControlError):  # unregistered meanwhile
                await self.on_gone(container.identity.container_id, "its shim is gone")
        return bool(gone)

    async def _retry_wake(self, life: PodLife) -> None:
        """A FAILED pod (a restore that timed out, a wake interrupted) is never left stuck:
        the loop wakes it again, backing off 10 s, 20 s, ... at most 30 min."""
        if not life.wake_retry.ready():
            return
        try:
            await life.wake("retrying a failed wake")
        except ControlError as err:
            delay = life.wake_retry.delay_for_next(WAKE_RETRY_BASE)
            life.wake_retry.failed(delay, err.message)
            self.journal.warning(
                f"{life.key.label}: wake retry failed, next in {delay:g} s: {err.message}",
                unit=life.key.service,
                wake_failures=life.wake_retry.failures,
            )
        except Exception as err:  # the loop must outlive any one bug
            self.journal.error(
                f"{life.key.label}: wake retry raised {err!r}", unit=life.key.service
            )
        else:
            life.wake_retry.reset()
