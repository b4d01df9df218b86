"""A bound on one restore's CRIU run, and ending that CRIU when it passes the bound.

A restore from a broken image can make CRIU loop forever (measured with CRIU 4.2.1: a
truncated ``pages-*.img`` makes the restorer re-read the empty file, and restore.log grew to
8.4 GB in two minutes). The shim gives a restore :func:`bound_for` its image, and past that
:func:`kill_restore_criu` kills (SIGKILL) the CRIU processes of this container's ``runc
restore`` only: the runc shim's Start then fails, and the restore is a failed one like any other.

The bound is :mod:`zeropod.contract.timeouts`' (10 s plus 1 s per 100 MB of ``pages-*.img``, at most
100 s), the policy the daemon waits by too, a margin longer. A healthy restore reads its pages
at well over 100 MB/s, so the bound only ends stuck ones.

The log: runc has CRIU log at level 4, and the loop logs two debug lines per re-read (about
40 MB/s). A ``log-level`` in zeropod's ``org.criu.config`` file is no way out: measured with
CRIU 4.2.1 under runc, ``log-level 2`` or ``3`` there makes every dump fail (errno 56). So
after the kill :func:`cap_log` cuts restore.log to its first ``LOG_KEEP`` bytes (where the
restore's start and its first errors are).

A dump stuck past its own bound is ended the same way (:func:`kill_dump_criu`); its CRIU is
found by the files it holds open in the image dir, since the dump's runc parent is not
always recognisable by its argv.

A killed CRIU leaves its cgroup yard mounted in the image dir (``.criu.cgyard.*``, a tmpfs
with the v1 cgroup controllers below it); :func:`release_cgyards` detaches it, or the image
dir could never be removed (the daemon's next checkpoint then fails on the existing dir).
CRIU runs in the runc shim's mount namespace (:mod:`zeropod.shim.mountns`), where the yard
is mounted; here it is a plain directory, and removing it detaches the mounts over it in
every other namespace (Linux >= 3.18).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from zeropod.contract import timeouts
from zeropod.shim import procfd

log = logging.getLogger(__name__)

CRIU_COMM = "criu"
LOG_KEEP = 1 << 20
CGYARD_GLOB = ".criu.cgyard.*"
MNT_DETACH = 2


def bound_for(image_dir: str) -> float:
    """Seconds a restore from ``image_dir`` may take before its CRIU is killed."""
    return timeouts.scaled(timeouts.pages_bytes(image_dir))


def _processes(proc: Path) -> Iterator[tuple[int, int, str, list[str]]]:
    """(pid, ppid, comm, argv) of every process that can still be read."""
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile
        # comm is in parentheses and may itself contain ") ": split at the last one.
        head, _, rest = stat.rpartition(")")
        comm = head.partition("(")[2]
        fields = rest.split()
        if len(fields) < 2:
            continue
        yield int(entry.name), int(fields[1]), comm, [a.decode(errors="replace") for a in argv if a]


def restore_criu_pids(container_id: str, proc: Path = Path("/proc")) -> list[int]:
    """CRIU processes below this container's ``runc ... restore ... <id>`` process.

    runc starts ``criu swrk``; CRIU forks the restored tree, which keeps the name ``criu``
    until its restorer finishes. All of them (and only them) are returned.
    """
    procs = list(_processes(proc))
    children: dict[int, list[int]] = {}
    for pid, ppid, _, _ in procs:
        children.setdefault(ppid, []).append(pid)
    comms = {pid: comm for pid, _, comm, _ in procs}
    roots = [
        pid
        for pid, _, _, argv in procs
        if argv
        and os.path.basename(argv[0]).startswith("runc")
        and "restore" in argv
        and argv[-1] == container_id
    ]
    found: list[int] = []
    todo = list(roots)
    while todo:
        pid = todo.pop()
        for child in children.get(pid, []):
            if comms.get(child) == CRIU_COMM:
                found.append(child)
            todo.append(child)
    return sorted(found)


def kill_restore_criu(container_id: str, proc: Path = Path("/proc")) -> list[int]:
    """SIGKILL this container's restoring CRIU processes; the pids signalled."""
    killed = procfd.kill(restore_criu_pids(container_id, proc))
    log.warning("container %s: killed the restore's CRIU processes %s", container_id, killed)
    return killed


def criu_pids_using(directory: str, proc: Path = Path("/proc")) -> list[int]:
    """CRIU processes with a file open below ``directory`` (a dump's image and work dir: its
    dump.log is there), found by their fds. Used for a dump, whose runc parent is not always
    recognisable by its argv."""
    prefix = os.path.join(os.path.realpath(directory), "")
    criu = [pid for pid, _, comm, _ in _processes(proc) if comm == CRIU_COMM]
    return procfd.fd_holders(criu, lambda target: target.startswith(prefix), proc)


def kill_dump_criu(image_dir: str, proc: Path = Path("/proc")) -> list[int]:
    """SIGKILL the CRIU processes dumping into ``image_dir``; the pids signalled."""
    return procfd.kill(criu_pids_using(image_dir, proc))


def cap_log(path: str, keep: int = LOG_KEEP) -> int:
    """Cut the log at ``path`` to its first ``keep`` bytes; its size before (0 if missing)."""
    try:
        size = os.stat(path).st_size
        if size > keep:
            os.truncate(path, keep)
    except OSError:
        return 0
    return size


def release_cgyards(image_dir: str) -> list[str]:
    """Detach (lazily, with everything below) and remove a killed CRIU's cgroup yards."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    released = []
    for path in Path(image_dir).glob(CGYARD_GLOB):
        if libc.umount2(os.fsencode(path), MNT_DETACH) != 0:
            err = ctypes.get_errno()
            if err != errno.EINVAL:  # EINVAL: mounted in the runc shim's namespace, not ours
                log.warning("umount %s: %s", path, os.strerror(err))
        try:
            path.rmdir()
        except OSError as err:
            log.warning("rmdir %s: %s", path, err)
            continue
        released.append(str(path))
    return released
