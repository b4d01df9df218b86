"""The interposer template: one process per node that forks the pods' interposers.

A fresh interposer pays its interpreter, asyncio, protobuf and our modules in private memory:
~15 MB of a sleeping pod's cost. The template imports all of it once, freezes the garbage
collector's view of it (``gc.freeze``: collections in the children leave those objects'
pages alone) and forks one interposer per pod, so the pods share those pages copy-on-write.

Each interposer is still a process of its own (forked twice: the template is nobody's
parent), so a crash of one pod's interposer, or of the template, touches no other pod; a
``start`` that cannot reach the template spawns a fresh interposer as before
(:mod:`.templateclient`).

Protocol: one SOCK_SEQPACKET request per connection, from a peer of our own uid: JSON
``{"cfg", "env", "pkg_root", "executable"}`` with four fds (task socket, events socket,
ready pipe, log file); the answer is ``{"pid": N}`` or ``{"error": "..."}``. The fds become
the child's ``socket_fd``, ``events_fd``, ``ready_fd`` and stderr; the child reports
"ready" on the pipe as a fresh interposer does.

Life: the template answers ``stale`` and exits when a module it loaded changed on disk (an
upgrade) or the request's interpreter or package is not its own; it also exits
``LINGER`` seconds after the last interposer it forked has exited. While an interposer
lives it waits in ``poll`` on its socket and one pidfd per interposer: no timers.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import select
import socket
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from zeropod.shim import detached
from zeropod.sockets.peercred import peer_credentials

log = logging.getLogger(__name__)

LINGER = 60.0
"""Seconds the template stays with no interposer of its own alive."""
MAX_REQUEST = 256 * 1024
REQUEST_FDS = 4  # task socket, events socket, ready pipe, log file
REQUEST_TIMEOUT = 5.0
MAIN = detached.WITHOUT_SSL + "from zeropod.shim.template import main; main()"


@dataclass(frozen=True, slots=True)
class Request:
    cfg: str  # Config as JSON; its fd fields are replaced by the received fds
    env: dict[str, str]
    pkg_root: str
    executable: str

    def encode(self) -> bytes:
        return json.dumps(
            {"cfg": self.cfg, "env": self.env, "pkg_root": self.pkg_root,
             "executable": self.executable}
        ).encode()  # fmt: skip

    @classmethod
    def decode(cls, data: bytes) -> Request:
        raw = json.loads(data)
        return cls(str(raw["cfg"]), dict(raw["env"]), str(raw["pkg_root"]), str(raw["executable"]))


def package_root() -> str:
    """The directory that holds the ``zeropod`` package in use."""
    import zeropod

    return str(Path(zeropod.__file__).resolve().parent.parent)


class LoadedCode:
    """The files this process runs: our loaded modules and the interpreter, as stat()ed."""

    def __init__(self, pkg_root: str) -> None:
        self.pkg_root = pkg_root
        prefix = os.path.join(pkg_root, "zeropod") + os.sep
        files = {sys.executable}
        for module in list(sys.modules.values()):
            path = getattr(module, "__file__", None)
            if path and os.path.realpath(path).startswith(prefix):
                files.add(path)
        self.seen = {path: self._stat(path) for path in files}

    @staticmethod
    def _stat(path: str) -> tuple[int, int, int] | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def changed(self) -> str | None:
        """The first file that is not as loaded, or None."""
        for path, before in self.seen.items():
            if self._stat(path) != before:
                return path
        return None

    def stale_for(self, request: Request) -> str | None:
        """Why this template must not fork REQUEST's interposer, or None."""
        if request.executable != sys.executable:
            return f"interpreter {request.executable}, the template runs {sys.executable}"
        if request.pkg_root != self.pkg_root:
            return f"package at {request.pkg_root}, the template's is at {self.pkg_root}"
        path = self.changed()
        return f"{path} changed since the template loaded it" if path else None


def preload() -> None:
    """Import what an interposer runs, before any fork."""
    from zeropod.shim import interposer, proctitle  # noqa: F401
    from zeropod.shim import log as shimlog

    shimlog.setup(debug=False, group="template")  # imports the journal binding, if any


class Template:
    def __init__(self, listener: socket.socket, code: LoadedCode) -> None:
        self.listener = listener
        self.code = code
        self.children: dict[int, int] = {}  # pidfd -> pid of each interposer we forked
        self.path = listener.getsockname()
        self.inode = os.stat(self.path).st_ino if self.path else 0

    def release_path(self) -> None:
        """Unlink our socket's path, unless a successor's socket is there by now."""
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == self.inode:
                os.unlink(self.path)

    def serve(self) -> None:
        poller = select.poll()
        poller.register(self.listener, select.POLLIN)
        for pidfd in self.children:
            poller.register(pidfd, select.POLLIN)
        while True:
            timeout = None if self.children else int(LINGER * 1000)
            events = poller.poll(timeout)
            if not events:
                log.info("no interposer of this template left for %.0fs: exiting", LINGER)
                return
            for fd, _ in events:
                if fd in self.children:
                    poller.unregister(fd)
                    os.close(fd)
                    self.children.pop(fd)
                elif not self.accept(poller):
                    return

    def accept(self, poller: select.poll) -> bool:
        """Serve one request; False when the template must end (it is stale)."""
        conn, _ = self.listener.accept()
        with conn:
            conn.settimeout(REQUEST_TIMEOUT)
            fds: list[int] = []
            try:
                if peer_credentials(conn)[1] != os.getuid():
                    raise ValueError("peer is not of the template's uid")
                data, fds, _, _ = socket.recv_fds(conn, MAX_REQUEST, REQUEST_FDS)
                if len(fds) != REQUEST_FDS:
                    raise ValueError(f"{len(fds)} fds, expected {REQUEST_FDS}")
                request = Request.decode(data)
                stale = self.code.stale_for(request)
                if stale:
                    log.info("template is stale (%s): exiting", stale)
                    self.release_path()  # first: the next start must not connect to us
                    conn.sendall(json.dumps({"error": f"stale: {stale}"}).encode())
                    return False
                pid = self.fork(request, fds, conn)
            except (OSError, ValueError, KeyError, TypeError) as err:
                log.warning("template request failed: %s", err)
                with contextlib.suppress(OSError):
                    conn.sendall(json.dumps({"error": str(err)}).encode())
                return True
            finally:
                for fd in fds:
                    os.close(fd)
            with contextlib.suppress(ProcessLookupError):
                pidfd = os.pidfd_open(pid)
                self.children[pidfd] = pid
                poller.register(pidfd, select.POLLIN)
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps({"pid": pid}).encode())
        return True

    def fork(self, request: Request, fds: list[int], conn: socket.socket) -> int:
        """Fork twice; the grandchild becomes the interposer. Its pid."""
        sys.stdout.flush()
        sys.stderr.flush()
        pid_r, pid_w = os.pipe()
        middle = os.fork()
        if middle == 0:  # pragma: no cover - runs in the forked children
            try:
                os.close(pid_r)
                pid = os.fork()
                if pid == 0:
                    os.close(pid_w)
                    closing = [self.listener.fileno(), conn.fileno(), *self.children]
                    become_interposer(request, fds, closing)
                os.write(pid_w, str(pid).encode())
            finally:
                os._exit(0)
        os.close(pid_w)
        with open(pid_r, "rb") as reader:
            answer = reader.read()
        os.waitpid(middle, 0)
        if not answer:
            raise OSError("the interposer's fork failed")
        return int(answer)


def become_interposer(request: Request, fds: list[int], closing: list[int]) -> None:
    """In the forked grandchild: take the request's fds and environment, run the interposer,
    and exit; never returns into the template's loop."""
    code = 1
    try:
        from zeropod.shim import interposer, proctitle
        from zeropod.shim.config import Config

        for fd in closing:
            with contextlib.suppress(OSError):
                os.close(fd)
        os.setsid()
        socket_fd, events_fd, ready_fd, log_fd = fds
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        os.dup2(log_fd, 2)
        os.close(devnull)
        os.close(log_fd)
        os.chdir("/")
        os.environ.clear()
        os.environ.update(request.env)
        gc.enable()
        cfg = replace(
            Config.from_json(request.cfg),
            socket_fd=socket_fd, events_fd=events_fd, ready_fd=ready_fd,
        )  # fmt: skip
        proctitle.set_title(
            f"zeropod.shim.interposer id={cfg.id} namespace={cfg.namespace} "
            f"group={cfg.group} socket={cfg.socket}"
        )
        sys.argv = [sys.executable, "-m", "zeropod.shim.interposer", request.cfg]
        code = interposer.run(cfg)
    except BaseException:
        with contextlib.suppress(BaseException):
            import traceback

            traceback.print_exc()
    finally:
        with contextlib.suppress(BaseException):
            sys.stderr.flush()
        os._exit(code)


def main() -> None:
    """``python3 -c MAIN LISTENER_FD READY_FD PADDING``: serve until stale or idle."""
    listener_fd, ready_fd = int(sys.argv[1]), int(sys.argv[2])
    gc.disable()  # no collections while importing: no freed holes in pages to be shared
    preload()
    code = LoadedCode(package_root())
    listener = socket.socket(fileno=listener_fd)
    listener.listen(64)  # here, so that SO_PEERCRED names the template (stop_template)
    template = Template(listener, code)
    gc.freeze()
    with contextlib.suppress(OSError):
        os.write(ready_fd, b"ready\n")
        os.close(ready_fd)
    log.info("interposer template serving %s", template.path)
    try:
        template.serve()
    finally:
        template.release_path()
        listener.close()
