"""Lazy restore: a ``criu lazy-pages`` process serves a restored container's memory.

With ``lazy-pages`` in the container's CRIU config (:mod:`zeropod.shim.spec`), runc's restore
builds the process tree without copying its anonymous memory: each restored task's private
memory is registered with a userfaultfd, the fds go over ``lazy-pages.socket`` in CRIU's work
dir (the image dir) to the page server, and the app runs at once. The server answers each
page fault from the image and streams the other pages in the background; it exits 0 when
every page is in (or the app ended), non-zero when it could not serve one.

One :class:`PageServer` per lazy restore, a child of the interposer (the process that asked
for the restore supervises it), in four steps:

1. :meth:`PageServer.start` while the restore's Create runs: the server is ready when it writes
   its status byte (``--status-fd``), i.e. its socket listens. No config file but our flags
   (``--no-default-config``: a node's ``/etc/criu/default.conf`` can name action scripts).
2. :meth:`PageServer.hold` after the restore's Start: wait (bounded) until the server has
   the image's ``pages-*.img`` open (from then on the image dir can be removed: the server
   reads through its fds) and take copies of its userfaultfds. If the server dies, the
   kernel releases a userfaultfd only with its last fd: while the shim holds a copy, a fault
   on a page not yet served waits instead of being filled with zeros. A silent zero page
   would be a corrupted app; a waiting one is killed whole (3).
3. :meth:`PageServer.ended` waits for its exit. Exit 0: the copies are closed at once (a
   registered range with no reader would make the app's next fork or unmapped page wait).
   Anything else: the caller kills the container, then :meth:`close`; the app never ran on
   a page it did not get. A server still running past the image's bound (stuck reading the
   image, say) is killed (:meth:`kill`, copies kept) and handled as a failed one: the app
   waits on a missing page at most that long, never forever.
4. :meth:`stop` ends a server whose restore failed (it would wait for a restore forever).

A fork after the restore gets its own userfaultfd from the kernel, read by the server; the
shim holds no copy of those, so a child forked while pages still stream is not covered by 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from zeropod.contract import timeouts
from zeropod.criulog import first_error
from zeropod.shim import procfd
from zeropod.shim.criubinary import find_criu
from zeropod.sockets.pidfd import pidfd_getfd

log = logging.getLogger(__name__)

READY_TIMEOUT = 5.0
"""Seconds for the server to listen (it reads the image's process tree first)."""
HOLD_TIMEOUT = 2.0
"""Seconds after the restore for the server to have opened every pages file."""
HOLD_POLL = 0.002
UFFD_LINK = "anon_inode:[userfaultfd]"
PAGES_PREFIX, PAGES_SUFFIX = "pages-", ".img"


class LazyPagesError(Exception):
    """The page server could not be started or did not take up the restored memory."""


def server_argv(criu: str, image_dir: str, status_fd: int, log_path: str) -> list[str]:
    """The page server's command line for IMAGE_DIR (images and work dir), logging to
    LOG_PATH (outside the image, which the daemon deletes while the server still runs)."""
    return [
        criu,
        "lazy-pages",
        "--no-default-config",
        "--images-dir",
        image_dir,
        "--work-dir",
        image_dir,
        "--log-file",
        log_path,
        "--status-fd",
        str(status_fd),
    ]


def pages_files(image_dir: str) -> set[str]:
    """The image's memory pages files, by path."""
    try:
        names = os.listdir(image_dir)
    except OSError:
        return set()
    return {
        os.path.join(image_dir, n)
        for n in names
        if n.startswith(PAGES_PREFIX) and n.endswith(PAGES_SUFFIX)
    }


def stream_bound(image_files: Mapping[str, int]) -> float:
    """Seconds a page server may take to bring every page of an image of these files in:
    a restore's bound for it (a healthy one streams 500 MB in well under a second)."""
    return timeouts.scaled(sum(image_files.values()))


def serving(files: dict[int, str], pages: set[str]) -> list[int] | None:
    """The userfaultfds among FILES once every one of PAGES is open too, else None."""
    if not pages or not pages <= set(files.values()):
        return None
    uffds = [fd for fd, target in files.items() if target == UFFD_LINK]
    return sorted(uffds) or None


@dataclass(eq=False)
class PageServer:
    """One ``criu lazy-pages`` for one restore from ``image_dir``."""

    image_dir: str
    log_path: str
    process: subprocess.Popen[bytes]
    held: list[int] = field(default_factory=list)  # our copies of its userfaultfds

    @classmethod
    async def start(cls, image_dir: str, log_path: str) -> PageServer:
        """Start the server for IMAGE_DIR and wait until it listens; LazyPagesError if not."""
        try:
            criu = find_criu()
        except FileNotFoundError as err:
            raise LazyPagesError(str(err)) from err
        Path(log_path).unlink(missing_ok=True)
        ready_r, ready_w = os.pipe()
        try:
            process = subprocess.Popen(
                server_argv(criu, image_dir, ready_w, log_path),
                pass_fds=(ready_w,),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=image_dir,
                start_new_session=True,
            )
        except OSError as err:
            os.close(ready_r)
            os.close(ready_w)
            raise LazyPagesError(f"cannot start {criu} lazy-pages: {err}") from err
        os.close(ready_w)
        server = cls(image_dir, log_path, process)
        try:
            ready = await _readable(ready_r, READY_TIMEOUT) and os.read(ready_r, 1) == b"\0"
        finally:
            os.close(ready_r)
        if not ready:  # EOF (it died) or silence
            await server.stop()
            raise LazyPagesError(f"criu lazy-pages did not listen: {server.why()}")
        return server

    async def hold(self) -> None:
        """After the restore: wait until the server serves the image, take its userfaultfds."""
        pages = pages_files(self.image_dir)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + HOLD_TIMEOUT
        while (uffds := serving(procfd.open_fds(self.process.pid), pages)) is None:
            if (code := self.process.poll()) == 0:
                return  # every page is in already (a small app): nothing left to guard
            if code is not None:
                raise LazyPagesError(f"criu lazy-pages failed: {self.why()}")
            if loop.time() > deadline:
                raise LazyPagesError(
                    f"criu lazy-pages did not open {sorted(pages)} in {HOLD_TIMEOUT:g} s"
                )
            await asyncio.sleep(HOLD_POLL)
        pidfd = os.pidfd_open(self.process.pid)
        try:
            for fd in uffds:
                try:
                    self.held.append(pidfd_getfd(pidfd, fd))
                except OSError as err:
                    if self.process.poll() not in (None, 0):
                        raise LazyPagesError(f"criu lazy-pages failed: {self.why()}") from err
                    # closed meanwhile: a task that ended already, nothing to guard
        finally:
            os.close(pidfd)

    async def ended(self) -> int:
        """Wait for the server's exit; its status (negative: the signal that ended it)."""
        if (code := self.process.poll()) is not None:
            return code  # reaped already (by hold or stop)
        pidfd = os.pidfd_open(self.process.pid)  # our unreaped child: it cannot be gone
        try:
            await _readable(pidfd, None)  # a pidfd turns readable when its process exits
        finally:
            os.close(pidfd)
        return self.process.wait()

    def close(self) -> None:
        """Close our userfaultfd copies (after a clean exit, or once the app is killed);
        after a clean exit its log goes too (a failed one's stays until the next restore)."""
        held, self.held = self.held, []
        for fd in held:
            with contextlib.suppress(OSError):
                os.close(fd)
        if self.process.poll() == 0:
            Path(self.log_path).unlink(missing_ok=True)

    async def kill(self) -> None:
        """Kill the server and reap it; our copies stay open (the app is killed first)."""
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(self.process.wait)

    async def stop(self) -> None:
        """Kill the server (its restore failed) and reap it; close our copies."""
        await self.kill()
        self.close()

    def why(self) -> str:
        """The server's exit and first CRIU error, for a log line."""
        code = self.process.poll()
        status = "running" if code is None else f"exit {code}" if code >= 0 else f"signal {-code}"
        cause = first_error(self.log_path)
        return f"{status}{f'; CRIU: {cause}' if cause else ''} (log: {self.log_path})"


async def _readable(fd: int, timeout: float | None) -> bool:
    """Wait in the event loop until FD is readable; False after TIMEOUT seconds (None: no
    limit)."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    loop.add_reader(fd, lambda: ready.done() or ready.set_result(True))
    try:
        return await asyncio.wait_for(ready, timeout)
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(fd)
