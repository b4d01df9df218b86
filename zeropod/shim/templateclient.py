"""``start``'s side of the interposer template (:mod:`.template`): ask it to fork a pod's
interposer, starting the template first when none serves.

Anything that goes wrong here returns None and ``start`` spawns a fresh interposer, as it
did before the template existed: the template saves memory, it is never why a pod cannot
start. A template that takes the request and does not answer within ``ANSWER_TIMEOUT`` is
killed (hung or stopped, it would hold the request's fds). ``ZEROPOD_SHIM_TEMPLATE=off`` in
containerd's environment turns it off.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import select
import signal
import socket
import sys
from pathlib import Path

from zeropod.shim import detached, paths, proctitle
from zeropod.shim.config import Config
from zeropod.shim.template import MAIN, Request
from zeropod.sockets.peercred import peer_credentials

log = logging.getLogger(__name__)

SWITCH_ENV = "ZEROPOD_SHIM_TEMPLATE"
READY_TIMEOUT = 15.0
ANSWER_TIMEOUT = 5.0
STOP_TIMEOUT = 2.0


def template_socket() -> Path:
    return paths.run_dir() / "template.sock"


def enabled() -> bool:
    return os.environ.get(SWITCH_ENV, "on").lower() not in ("off", "0", "no", "false")


def fork_interposer(cfg: Config, log_fd: int, pkg_root: str) -> int | None:
    """The pid of CFG's interposer forked by the template, or None (spawn one yourself).

    CFG's socket, events and ready fds, and LOG_FD, are this process's: they are sent over,
    and stay open here (the caller closes them)."""
    if not enabled():
        return None
    request = Request(cfg.to_json(), dict(os.environ), pkg_root, sys.executable).encode()
    fds = [cfg.socket_fd, cfg.events_fd, cfg.ready_fd, log_fd]
    for _ in range(2):  # a stale template exits on the first; the second starts a new one
        try:
            conn = connect() or start_template(pkg_root)
        except OSError as err:
            log.warning("no interposer template (%s): spawning a fresh interposer", err)
            return None
        with conn:
            pidfd = template_pidfd(conn)
            try:
                conn.settimeout(ANSWER_TIMEOUT)
                socket.send_fds(conn, [request], fds)
                answer = json.loads(conn.recv(65536) or b"{}")
            except (OSError, ValueError) as err:
                # Our fds may sit in its queue, the ready pipe's write end among them: the
                # caller learns from that pipe whether an interposer runs only once no
                # process but the interposer holds it. A template that does not answer is
                # broken (hung, stopped): kill it, which frees what it holds.
                log.warning(
                    "interposer template failed (%s): ending it, spawning a fresh interposer",
                    err,
                )
                kill(pidfd)
                return None
            finally:
                if pidfd is not None:
                    os.close(pidfd)
        if isinstance(answer.get("pid"), int):
            return int(answer["pid"])
        error = str(answer.get("error", "no answer"))
        if not error.startswith("stale"):
            log.warning("interposer template refused (%s): spawning a fresh interposer", error)
            return None
        log.info("interposer template %s; starting a new one", error)
    return None


def template_pidfd(conn: socket.socket) -> int | None:
    """A pidfd of the template at the other end of CONN (it called listen()), or None."""
    try:
        return os.pidfd_open(peer_credentials(conn)[0])
    except OSError:
        return None


def kill(pidfd: int | None) -> None:
    if pidfd is None:
        return
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        select.select([pidfd], [], [], STOP_TIMEOUT)  # gone, with its sockets' queues
    except ProcessLookupError:
        pass


def connect(path: Path | None = None) -> socket.socket | None:
    """A connection to the running template, or None."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        conn.connect(str(path or template_socket()))
    except OSError:
        conn.close()
        return None
    return conn


def start_template(pkg_root: str) -> socket.socket:
    """Start the node's template (one at a time) and connect to it."""
    path = template_socket()
    with open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        conn = connect()  # another start may have won
        if conn is not None:
            return conn
        path.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ready_r, ready_w = os.pipe()
        try:
            listener.bind(str(path))
            os.chmod(path, 0o600)  # listen() is the template's: its pid is the peer's
            spawn(listener.fileno(), ready_w, pkg_root, path.with_suffix(".log"))
        finally:
            listener.close()
            os.close(ready_w)
        try:
            message = detached.read_word(ready_r, READY_TIMEOUT) or ""
        finally:
            os.close(ready_r)
        if message != "ready":
            path.unlink(missing_ok=True)
            raise OSError(f"the template did not start ({message or 'no answer'})")
        log.info("interposer template started on %s", path)
        conn = connect()
        if conn is None:
            raise OSError(f"the template does not answer on {path}")
        return conn


def spawn(listener_fd: int, ready_fd: int, pkg_root: str, log_path: Path) -> None:
    with open(log_path, "ab") as logf:
        args = [str(listener_fd), str(ready_fd), proctitle.PADDING]
        detached.spawn(MAIN, args, (listener_fd, ready_fd), logf, pkg_root)


def stop_template(path: Path | None = None) -> int | None:
    """End the running template (uninstall, tests); its pid, None if none answered."""
    conn = connect(path)
    if conn is None:
        return None
    with conn:
        pid = peer_credentials(conn)[0]
        pidfd = template_pidfd(conn)
    if pidfd is None:
        return None
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGTERM)
        if not select.select([pidfd], [], [], STOP_TIMEOUT)[0]:
            kill(pidfd)
    except ProcessLookupError:
        pass
    finally:
        os.close(pidfd)
    return pid
