"""The interposer's record of each container it created, and the one place phases change.

A :class:`TaskRecord` holds what the scale-to-zero logic needs to answer for a task that has
no process: the original CreateTaskRequest (to re-create the task), the last pid, the exit
status when it ended asleep, the events held back, the stdio FIFO writers kept across a
checkpoint. :class:`Tracker` owns every record; :meth:`Tracker.move` is the only way to
change a phase (checked against :data:`zeropod.shim.taskphase.TRANSITIONS`, logged, and
announced to whoever waits for it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from google.protobuf.message import Message

from zeropod.shim import spec
from zeropod.shim.taskapi import TaskAPI
from zeropod.shim.taskphase import HIDDEN, TaskPhase, check
from zeropod.ttrpc import Call

log = logging.getLogger(__name__)


@dataclass(eq=False)
class TaskRecord:
    """One task of the runc shim (not an exec), as containerd created it."""

    id: str
    api: TaskAPI
    request: Message  # the original CreateTaskRequest, decoded with ``api``
    metadata: list[tuple[str, str]]  # the ttrpc metadata of containerd's Create
    phase: TaskPhase = TaskPhase.CREATED
    pid: int = 0  # the running process, or the last one while scaled down
    generation: int = 0  # checkpoints started so far; > 0 means events may be our own
    image_dir: str | None = None  # the last checkpoint's image (None after a "stop")
    image_files: dict[str, int] = field(default_factory=dict)  # its files' sizes when written
    exit_status: int = 0
    exited_at: float = 0.0  # seconds since the epoch, when it ended asleep
    registered: bool = False  # the daemon was told (so it must be told it ended)
    criu_config_set: bool = True  # org.criu.config names zeropod's file (else: never dumped)
    held: list[Call] = field(default_factory=list)  # events held back while hidden
    stdio_fds: list[int] = field(default_factory=list)  # FIFO ends kept across the gap
    # Serialises the multi-step sequences (checkpoint, restore, kill/delete while asleep).
    # Held by an op, not a coroutine: a checkpoint replies, then its clean-up task releases it.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    finishing: asyncio.Task[None] | None = None  # the last checkpoint's clean-up after its reply
    # A lazy restore's page-server watch (zeropod.shim.restore); done once every page is in.
    pages: asyncio.Task[None] | None = None

    @property
    def bundle(self) -> str:
        return self.request.bundle

    @property
    def hidden(self) -> bool:
        return self.phase in HIDDEN

    def status(self) -> dict[str, object]:
        """A JSON-friendly summary for the control socket's ``status`` op."""
        return {
            "container_id": self.id,
            "phase": self.phase.value,
            "pid": self.pid if self.phase in (TaskPhase.RUNNING, TaskPhase.CREATED) else 0,
            "last_pid": self.pid,
            "generation": self.generation,
            "image_dir": self.image_dir,
            "task_api": self.api.version,
        }

    def hold_stdio(self) -> None:
        """Open our own ends on the stdio FIFOs so containerd's readers never see EOF.

        A writer on stdout/stderr (containerd reads them), a reader on stdin (containerd
        writes it). Non-blocking opens: a FIFO whose other side is gone is skipped.
        """
        req = self.request
        wanted = [(req.stdout, os.O_WRONLY), (req.stderr, os.O_WRONLY), (req.stdin, os.O_RDONLY)]
        for path, mode in wanted:
            if not path or path.startswith(("binary://", "file://")):
                continue
            try:
                self.stdio_fds.append(os.open(path, mode | os.O_NONBLOCK | os.O_CLOEXEC))
            except OSError as err:
                log.warning("container %s: cannot hold stdio FIFO %s: %s", self.id, path, err)

    def release_stdio(self) -> None:
        fds, self.stdio_fds = self.stdio_fds, []
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)

    def end(self, exit_status: int) -> None:
        """Record how a task that has no process ended (killed asleep, failed wake)."""
        self.exit_status = exit_status
        self.exited_at = time.time()


class Tracker:
    """Every container of this interposer by id; phase changes and waiting for them."""

    def __init__(self) -> None:
        self._containers: dict[str, TaskRecord] = {}
        self._changed = asyncio.Event()  # set and replaced on every phase change
        self.attention = 0
        """How many containers need the event filter's attention (hidden or restored)."""

    def get(self, container_id: str) -> TaskRecord | None:
        return self._containers.get(container_id)

    def add(self, container: TaskRecord) -> None:
        old = self._containers.get(container.id)
        if old is not None:
            log.warning("container %s created again; dropping the old record", container.id)
            self._forget(old)
        self._containers[container.id] = container

    def all(self) -> list[TaskRecord]:
        return list(self._containers.values())

    def move(self, container: TaskRecord, phase: TaskPhase, why: str = "") -> None:
        """Change ``container``'s phase; raises TaskPhaseError for a transition not in the table."""
        check(container.id, container.phase, phase)
        before = container.phase
        if phase is TaskPhase.CHECKPOINTING:
            container.generation += 1
        container.phase = phase
        log.info(
            "container %s: %s -> %s%s",
            container.id,
            before.value,
            phase.value,
            f" ({why})" if why else "",
            extra={"CONTAINER_ID": container.id, "STATE": phase.value},
        )
        if phase is TaskPhase.DELETED:
            self._forget(container)
        self._count()
        self._notify()

    def _forget(self, container: TaskRecord) -> None:
        container.release_stdio()
        with contextlib.suppress(OSError):
            spec.forget_criu_config(container.id)
        if self._containers.get(container.id) is container:
            del self._containers[container.id]

    def _count(self) -> None:
        self.attention = sum(1 for c in self._containers.values() if c.hidden or c.generation)

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _wait_for(self, done: Callable[[], bool]) -> None:
        while not done():
            await self._changed.wait()

    async def settled(self, container: TaskRecord) -> TaskPhase:
        """Wait until ``container`` is in no transitional phase (CHECKPOINTING, RESTORING)."""
        busy = (TaskPhase.CHECKPOINTING, TaskPhase.RESTORING)
        await self._wait_for(lambda: container.phase not in busy)
        return container.phase

    async def visible(self, container: TaskRecord) -> TaskPhase:
        """Wait until ``container`` is in no hidden phase; return that phase."""
        await self._wait_for(lambda: not container.hidden)
        return container.phase
