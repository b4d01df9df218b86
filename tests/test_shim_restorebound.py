"""The restore bound: its size, finding one container's restoring CRIU, capping its log."""

from __future__ import annotations

from pathlib import Path

from zeropod.contract import timeouts
from zeropod.shim import restorebound

CID = "c0ffee"


def test_bound_grows_with_the_pages_and_stays_below_the_daemon(tmp_path: Path) -> None:
    assert restorebound.bound_for(str(tmp_path)) == timeouts.BASE
    (tmp_path / "pages-1.img").write_bytes(b"")
    with open(tmp_path / "pages-2.img", "wb") as f:
        f.truncate(500_000_000)  # sparse: 500 MB
    bound = restorebound.bound_for(str(tmp_path))
    assert bound == timeouts.BASE + 5
    assert restorebound.bound_for(str(tmp_path / "missing")) == timeouts.BASE
    # The daemon waits for the shim's answer longer than the shim takes at most: each
    # attempt's bound, then the Start that a killed CRIU makes fail.
    attempts = timeouts.RESTORE_ATTEMPTS * (bound + timeouts.AFTER_KILL)
    assert attempts < timeouts.daemon_wait(timeouts.restore(500_000_000))


def fake_proc(root: Path, procs: list[tuple[int, int, str, list[str]]]) -> Path:
    for pid, ppid, comm, argv in procs:
        d = root / str(pid)
        d.mkdir(parents=True)
        (d / "stat").write_text(f"{pid} ({comm}) S {ppid} 1 1 0 -1\n")
        (d / "cmdline").write_bytes(b"".join(a.encode() + b"\0" for a in argv))
    (root / "self").mkdir()
    return root


def test_finds_only_this_containers_restoring_criu(tmp_path: Path) -> None:
    runc = ["runc", "--root", "/r", "restore", "--image-path", "/i", "--detach"]
    proc = fake_proc(
        tmp_path,
        [
            (10, 1, "containerd-shim", ["containerd-shim-runc-v2"]),
            (11, 10, "runc", [*runc, CID]),
            (12, 11, "criu", ["criu", "swrk", "3"]),
            (13, 12, "criu", ["criu", "swrk", "3"]),  # the restored tree, still "criu"
            (14, 13, "criu) x", []),  # a kernel-side name with a parenthesis: not criu
            (20, 10, "runc", [*runc, "other"]),
            (21, 20, "criu", ["criu", "swrk", "3"]),
            (30, 1, "criu", ["criu", "dump"]),
        ],
    )
    assert restorebound.restore_criu_pids(CID, proc) == [12, 13]
    assert restorebound.restore_criu_pids("nobody", proc) == []


def test_cap_log_keeps_the_head(tmp_path: Path) -> None:
    log = tmp_path / "restore.log"
    log.write_bytes(b"start\n" + b"loop\n" * 100)
    assert restorebound.cap_log(str(log), keep=10) == 506
    assert log.read_bytes() == b"start\nloop"
    assert restorebound.cap_log(str(tmp_path / "missing")) == 0


def test_release_cgyards_removes_plain_dirs(tmp_path: Path) -> None:
    (tmp_path / ".criu.cgyard.abc").mkdir()
    (tmp_path / "keep").mkdir()
    assert restorebound.release_cgyards(str(tmp_path)) == [str(tmp_path / ".criu.cgyard.abc")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep"]
