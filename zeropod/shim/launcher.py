"""The ``start`` action: start (or find) the interposer for a container's pod.

containerd runs ``start`` with the bundle as working directory and ``TTRPC_ADDRESS`` (its
event socket) in the environment, and reads the shim's address from stdout. On the first
start of a group this binds the interposer's two sockets, runs the runc shim's own ``start``
with ``TTRPC_ADDRESS`` pointing at the events socket, hands both sockets to a detached
interposer daemon, and prints the runc shim's answer with the interposer's address in it.
Later starts of the same group print the running interposer's answer again.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import zeropod
from zeropod.shim import bootstrap, detached, mountns, paths, templateclient
from zeropod.shim.commandline import ShimArgs
from zeropod.shim.config import Config

log = logging.getLogger(__name__)

RUNC_SHIM = "containerd-shim-runc-v2"
RUNC_START_TIMEOUT = 30.0
READY_TIMEOUT = 15.0
NOBODY = "nobody runs it"


class StartError(RuntimeError):
    """The interposer or the runc shim could not be started."""


CRIU_DIR = paths.CRIU_DIR


def runc_shim_env(events: Path, criu_dir: str = CRIU_DIR) -> dict[str, str]:
    """The runc shim's environment: ours, its events socket, zeropod's CRIU first on PATH."""
    env = dict(os.environ, TTRPC_ADDRESS=str(events))
    if os.path.exists(os.path.join(criu_dir, "criu")):
        env["PATH"] = os.pathsep.join(p for p in (criu_dir, env.get("PATH")) if p)
    return env


def find_runc_shim() -> str:
    path = shutil.which(RUNC_SHIM)
    if path is None:
        raise StartError(f"{RUNC_SHIM} not found on PATH ({os.environ.get('PATH', '')})")
    return path


def start(args: ShimArgs) -> int:
    bundle = Path(args.bundle or os.getcwd())
    group = paths.group_id(bundle, args.id)
    gp = paths.GroupPaths.for_group(args.address, args.namespace, group)
    gp.socket.parent.mkdir(parents=True, exist_ok=True, mode=0o711)
    with open(gp.lock, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if gp.bootstrap.exists() and paths.connectable(gp.socket):
            answer = bootstrap.parse(gp.bootstrap.read_text())
            log.info("container %s joins interposer %s of group %s", args.id, gp.socket, group)
        else:
            answer = start_group(args, bundle, group, gp)
    bootstrap.write_address_file(bundle, answer.address)
    sys.stdout.write(answer.render())
    sys.stdout.flush()
    return 0


def start_group(
    args: ShimArgs, bundle: Path, group: str, gp: paths.GroupPaths
) -> bootstrap.Bootstrap:
    """Start the runc shim and the interposer for a new group; return what to print."""
    gp.remove()
    runc = find_runc_shim()
    listeners = [paths.bind_listener(p) for p in gp.sockets()]
    try:
        upstream = run_runc_start(runc, args, bundle, gp.events)
        gp.upstream.write_text(upstream.render())
        ours = upstream.with_address(f"unix://{gp.socket}")
        gp.bootstrap.write_text(ours.render())
        cfg = Config(
            id=args.id,
            namespace=args.namespace,
            group=group,
            upstream=bootstrap.unix_path(upstream.address),
            containerd_events=os.environ.get("TTRPC_ADDRESS", ""),
            socket=str(gp.socket),
            events=str(gp.events),
            bootstrap=str(gp.bootstrap),
            lock=str(gp.lock),
            log=str(gp.log),
            control=str(gp.control),
            socket_fd=listeners[0].fileno(),
            events_fd=listeners[1].fileno(),
            ready_fd=-1,
            debug=args.debug,
        )
        try:
            spawn_interposer(cfg, gp.log)
        except StartError:
            stop_runc_shim(upstream, args.id)
            raise
    except BaseException:
        gp.remove()
        raise
    finally:
        for s in listeners:
            s.close()
    log.info(
        "interposer %s started for group %s (runc shim %s)", gp.socket, group, upstream.address
    )
    return ours


def run_runc_start(runc: str, args: ShimArgs, bundle: Path, events: Path) -> bootstrap.Bootstrap:
    """Run the runc shim's ``start`` with our events socket, in a mount namespace of its own
    (:mod:`zeropod.shim.mountns`); parse what it prints.

    Output goes to files, not pipes: a daemon that inherits a pipe would hold it open and
    make reading until EOF hang.
    """
    env = runc_shim_env(events)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.run(
                mountns.wrap([runc, *args.argv], env),
                cwd=bundle,
                env=env,
                stdout=out,
                stderr=err,
                timeout=RUNC_START_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise StartError(f"{runc} start did not finish in {RUNC_START_TIMEOUT}s") from exc
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise StartError(
            f"{runc} start failed with status {proc.returncode}: "
            f"{(stderr or stdout).decode(errors='replace').strip()}"
        )
    return bootstrap.parse(stdout)


INTERPOSER_MAIN = detached.WITHOUT_SSL + "from zeropod.shim.interposer import main; main()"


def spawn_interposer(cfg: Config, log_path: Path) -> None:
    """Start the detached daemon and wait until it serves (or says why it cannot).

    The node's interposer template forks it when it can (pages shared between pods,
    :mod:`.template`); else, or if that child fails to start, a fresh process runs it.
    Whether a forked one runs is told by the ready pipe, not by the template's answer: when
    every copy of its write end is closed with no word, nobody runs the interposer, and a
    fresh one cannot end up serving the sockets next to a forked one."""
    pkg_root = str(Path(zeropod.__file__).resolve().parent.parent)
    message = _start_and_wait(cfg, log_path, pkg_root, forked=True)
    if message == NOBODY or message.startswith("error"):  # nothing serves the sockets
        if message != NOBODY:
            log.warning("forked interposer failed (%s): spawning a fresh one", message)
        message = _start_and_wait(cfg, log_path, pkg_root, forked=False)
    if message != "ready":
        detail = message or f"no answer within {READY_TIMEOUT}s"
        with contextlib.suppress(OSError):
            detail += "; log: " + log_path.read_text()[-2000:]
        raise StartError(f"interposer did not start: {detail}")


def _start_and_wait(cfg: Config, log_path: Path, pkg_root: str, forked: bool) -> str:
    """Start the interposer (forked by the template, or fresh); what it said on the ready
    pipe: NOBODY if no process held the pipe any more, "" if none spoke in time."""
    ready_r, ready_w = os.pipe()
    cfg = replace(cfg, ready_fd=ready_w)
    try:
        with open(log_path, "ab") as logf:
            if forked:
                templateclient.fork_interposer(cfg, logf.fileno(), pkg_root)
            else:
                fds = (cfg.socket_fd, cfg.events_fd, cfg.ready_fd)
                detached.spawn(INTERPOSER_MAIN, [cfg.to_json()], fds, logf, pkg_root)
        os.close(ready_w)
        ready_w = -1
        word = detached.read_word(ready_r, READY_TIMEOUT)
        return "" if word is None else word or NOBODY
    finally:
        os.close(ready_r)
        if ready_w >= 0:
            os.close(ready_w)


def stop_runc_shim(upstream: bootstrap.Bootstrap, container_id: str) -> None:
    """Best effort: ask a runc shim we started but cannot interpose to exit."""
    import asyncio  # only on this failure path

    from zeropod.shim.taskapi import V2, V3
    from zeropod.ttrpc import Client, TtrpcError

    api = V3 if upstream.task_api_version == 3 else V2

    async def shutdown() -> None:
        client = await Client.connect(bootstrap.unix_path(upstream.address))
        try:
            req = api.messages.ShutdownRequest(id=container_id, now=True)
            await client.call(api.service, "Shutdown", req.SerializeToString(), timeout=5)
        finally:
            await client.close()

    try:
        asyncio.run(shutdown())
    except (ConnectionError, TtrpcError) as err:
        log.warning("could not shut down runc shim %s: %s", upstream.address, err)
