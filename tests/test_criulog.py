"""The first error line of a CRIU log, as the journal and status name it."""

from __future__ import annotations

from pathlib import Path

from zeropod.criulog import first_error

DUMP_LOG = """\
(00.000010) Version: 4.2.1 (gitid 0)
(00.004216) Dumping task (pid: 412)
(00.004300) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: \
Operation not permitted
(00.004400) Error (criu/cr-dump.c:389): Can't get rlimit 0: Operation not permitted
(00.004410) Error (criu/cr-dump.c:1470): Dump core (pid: 412) failed with -1
(00.005000) Dumping finished with error
"""


def test_the_first_error_names_the_cause(tmp_path: Path) -> None:
    log = tmp_path / "dump.log"
    log.write_text(DUMP_LOG)
    assert first_error(str(log)) == (
        "Can't get rlimit 0: Operation not permitted (criu/cr-dump.c:389)"
    )


def test_no_error_or_no_log(tmp_path: Path) -> None:
    log = tmp_path / "dump.log"
    log.write_text("(00.000010) Version: 4.2.1\n(00.1) Dumping finished successfully\n")
    assert first_error(str(log)) is None
    assert first_error(str(tmp_path / "missing.log")) is None


def test_binary_garbage_does_not_raise(tmp_path: Path) -> None:
    log = tmp_path / "restore.log"
    log.write_bytes(b"\xff\xfe" * 1000 + b"\n(00.2) Error (x.c:1): bad \xff page\n")
    assert first_error(str(log)) == "bad \ufffd page (x.c:1)"


RESTORE_LOG = """\
(00.000879) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: \\
Operation not permitted
(00.005104)      1: Collected SysV shmem 0, size 56
(00.005124)      1: Error (criu/ipc_ns.c:867): Failed to create shm set: File exists
(00.005126)      1: Error (criu/ipc_ns.c:927): Failed to prepare shm segment
(00.005532) Error (criu/cr-restore.c:2331): Restoring FAILED.
"""


def test_a_restoring_tasks_error_line_carries_its_pid(tmp_path: Path) -> None:
    log = tmp_path / "restore.log"
    log.write_text(RESTORE_LOG)
    assert first_error(str(log)) == "Failed to create shm set: File exists (criu/ipc_ns.c:867)"
    log.write_text("(00.1) Error (criu/cr-restore.c:2331): Restoring FAILED.\n")
    assert first_error(str(log)) == "Restoring FAILED. (criu/cr-restore.c:2331)"
