"""What a failed restore left in the container's cgroup is found by the cgroup path, and an
image is intact only while every file the dump wrote keeps its size."""

from __future__ import annotations

from pathlib import Path

from zeropod.shim import imagefiles, leftovers

CID = "c0ffee" * 10


def fake_proc(root: Path, procs: dict[int, tuple[str, str]]) -> Path:
    """PID -> (state, /proc/PID/cgroup text)."""
    for pid, (state, cgroup) in procs.items():
        d = root / str(pid)
        d.mkdir(parents=True)
        (d / "stat").write_text(f"{pid} (counter) {state} 1 1 1 0 -1\n")
        (d / "cgroup").write_text(cgroup)
    (root / "self").mkdir()
    return root


def test_the_containers_processes_are_found_by_their_cgroup_whatever_the_driver(
    tmp_path: Path,
) -> None:
    scope = f"/kubepods.slice/kubepods-pod1.slice/cri-containerd-{CID}.scope"
    proc = fake_proc(
        tmp_path,
        {
            10: ("S", f"9:pids:{scope}\n8:memory:{scope}\n1:name=systemd:{scope}\n"),  # v1
            11: ("S", f"0::{scope}\n"),  # cgroup v2
            12: ("R", f"4:pids:/kubepods/besteffort/pod1/{CID}\n"),  # cgroupfs driver
            13: ("Z", f"0::{scope}\n"),  # dead already, its parent not done reaping
            14: ("S", f"0::/kubepods.slice/cri-containerd-{CID}x.scope\n"),  # another id
            15: ("S", f"0::/kubepods/pod1/{CID[:12]}\n"),  # a prefix is not the id
            16: ("S", "0::/system.slice/containerd.service\n"),
        },
    )
    assert leftovers.container_pids(CID, proc) == [10, 11, 12]


def test_nothing_to_kill_returns_at_once(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, {20: ("S", "0::/system.slice/x.service\n")})
    assert leftovers.kill_container_processes(CID, timeout=0.1, proc=proc) == []


def test_an_image_is_intact_while_its_files_keep_their_sizes(tmp_path: Path) -> None:
    (tmp_path / "pages-1.img").write_bytes(b"x" * 4096)
    (tmp_path / "core-1.img").write_bytes(b"core")
    (tmp_path / "dump.log").write_text("log")
    (tmp_path / ".criu.cgyard.x").mkdir()
    recorded = imagefiles.sizes(str(tmp_path))
    assert recorded == {"pages-1.img": 4096, "core-1.img": 4}
    (tmp_path / "restore.log").write_text("a restore writes its log")
    (tmp_path / "stats-restore.img").write_bytes(b"and its stats")
    assert imagefiles.intact(str(tmp_path), recorded)
    (tmp_path / "pages-1.img").write_bytes(b"")
    assert not imagefiles.intact(str(tmp_path), recorded)
    (tmp_path / "pages-1.img").unlink()
    assert not imagefiles.intact(str(tmp_path), recorded)


def test_without_a_record_no_image_counts_as_intact(tmp_path: Path) -> None:
    assert not imagefiles.intact(str(tmp_path), {})
    assert imagefiles.sizes(str(tmp_path / "missing")) == {}


def test_a_group_is_abandoned_once_every_tasks_bundle_is_gone(tmp_path: Path) -> None:
    from zeropod.shim import runcshim

    sandbox, app = tmp_path / "sandbox", tmp_path / "app"
    sandbox.mkdir()
    app.mkdir()
    assert not runcshim.abandoned([])  # no task yet: containerd has not created any
    assert not runcshim.abandoned([str(sandbox), str(app)])
    app.rmdir()  # one container deleted: the pod goes on
    assert not runcshim.abandoned([str(sandbox), str(app)])
    sandbox.rmdir()  # containerd cleaned the whole group up without us
    assert runcshim.abandoned([str(sandbox), str(app)])


async def test_the_watch_needs_the_group_abandoned_on_consecutive_checks(tmp_path: Path) -> None:
    """A bundle missing for one check (containerd between two steps) is not enough."""
    import asyncio

    from zeropod.shim import runcshim

    bundle = tmp_path / "sandbox"
    seen: list[bool] = []

    def bundles() -> list[str]:
        # present, gone, present again, then gone for good
        step = len(seen)
        if step in (0, 2):
            bundle.mkdir(exist_ok=True)
        elif bundle.exists():
            bundle.rmdir()
        seen.append(bundle.exists())
        return [str(bundle)]

    async with asyncio.timeout(5):
        await runcshim.watch_abandoned(bundles, interval=0.01, checks=2)
    assert seen == [True, False, True, False, False]
