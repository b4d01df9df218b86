"""Lazy restores: the page server's helpers, the CRIU config around a lazy restore, and what
the shim does when the page server fails after the app runs (fake runc, fake page server)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import ClassVar

import pytest
from shim_rig import CID, Rig

from zeropod.shim import lazypages, leftovers, pagewatch, procfd, restore, spec
from zeropod.shim.lazypages import LazyPagesError
from zeropod.shim.taskphase import TaskPhase

# --- the page server's helpers ------------------------------------------------------------


def test_the_server_reads_no_default_config_and_reports_ready_on_a_fd() -> None:
    argv = lazypages.server_argv("/usr/sbin/criu", "/img", 9, "/run/x.log")
    assert argv[:3] == ["/usr/sbin/criu", "lazy-pages", "--no-default-config"]
    assert argv[argv.index("--log-file") + 1] == "/run/x.log"  # outside the image
    assert argv[argv.index("--images-dir") + 1] == argv[argv.index("--work-dir") + 1] == "/img"
    assert argv[argv.index("--status-fd") + 1] == "9"


def test_serving_waits_for_every_pages_file_then_lists_the_userfaultfds() -> None:
    pages = {"/img/pages-1.img", "/img/pages-2.img"}
    files = {0: "/dev/null", 3: "/img/pages-1.img", 5: lazypages.UFFD_LINK}
    assert lazypages.serving(files, pages) is None  # pages-2 not open yet
    files |= {4: "/img/pages-2.img", 7: lazypages.UFFD_LINK}
    assert lazypages.serving(files, pages) == [5, 7]
    assert lazypages.serving({4: "/img/pages-2.img"}, {"/img/pages-2.img"}) is None
    assert lazypages.serving(files, set()) is None  # no pages file: nothing to wait for


def test_pages_files_and_the_servers_open_fds(tmp_path: Path) -> None:
    for name in ("pages-1.img", "pages-12.img", "pagemap-1.img", "restore.log"):
        (tmp_path / name).write_bytes(b"x")
    assert lazypages.pages_files(str(tmp_path)) == {
        str(tmp_path / "pages-1.img"),
        str(tmp_path / "pages-12.img"),
    }
    assert lazypages.pages_files(str(tmp_path / "gone")) == set()
    fd_dir = tmp_path / "proc" / "42" / "fd"
    fd_dir.mkdir(parents=True)
    os.symlink(str(tmp_path / "pages-1.img"), fd_dir / "3")
    os.symlink(lazypages.UFFD_LINK, fd_dir / "6")
    found = procfd.open_fds(42, tmp_path / "proc")
    assert found == {3: str(tmp_path / "pages-1.img"), 6: lazypages.UFFD_LINK}
    assert procfd.open_fds(43, tmp_path / "proc") == {}
    assert procfd.fd_holders([42, 43], lambda t: t == lazypages.UFFD_LINK, tmp_path / "proc") == [
        42
    ]


async def test_readable_is_data_or_eof_not_silence() -> None:
    for written, closed, ready in ((b"\0", False, True), (b"", True, True), (b"", False, False)):
        r, w = os.pipe()
        try:
            os.write(w, written) if written else None
            if closed:
                os.close(w)
            assert await lazypages._readable(r, 0.05) is ready
            assert not ready or os.read(r, 1) == written  # EOF reads b"": not the status byte
        finally:
            os.close(r)
            if not closed:
                os.close(w)


def test_the_lazy_option_is_in_a_containers_own_config_only_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(spec.CRIU_CONFIG_ENV, str(tmp_path / "criu.conf"))
    path = spec.criu_config_for("abc")
    assert path == tmp_path / "criu.d" / "abc.conf"
    spec.write_criu_config(path, lazy=True)
    assert "lazy-pages" in path.read_text().splitlines()
    spec.write_criu_config(path)
    assert "lazy-pages" not in path.read_text()
    spec.forget_criu_config("abc")
    assert not path.exists()


# --- the shim around a lazy restore ----------------------------------------------------------


class FakeServer:
    """Stands in for PageServer: records its steps, ends as told."""

    started: ClassVar[list[FakeServer]] = []
    fail_hold: ClassVar[bool] = False

    def __init__(self, image_dir: str) -> None:
        self.image_dir = image_dir
        self.steps: list[str] = []
        self.exit = asyncio.get_running_loop().create_future()
        self.config_at_hold = ""

    @classmethod
    async def start(cls, image_dir: str, log_path: str) -> FakeServer:
        server = cls(image_dir)
        cls.started.append(server)
        return server

    async def hold(self) -> None:
        self.config_at_hold = spec.criu_config_for(CID).read_text()
        self.steps.append("hold")
        if self.fail_hold:
            raise LazyPagesError("criu lazy-pages failed: exit 1")

    async def ended(self) -> int:
        return await self.exit

    def close(self) -> None:
        self.steps.append("close")

    async def stop(self) -> None:
        self.steps.append("stop")

    async def kill(self) -> None:
        self.steps.append("server killed")

    def why(self) -> str:
        return "exit 1; CRIU: cannot read pages (log: lazy-pages.log)"


@pytest.fixture
def lazy_rig(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> Rig:
    FakeServer.started = []
    FakeServer.fail_hold = False
    monkeypatch.setattr(restore, "PageServer", FakeServer)
    rig.runc.writes_image = True  # an intact image: a lazy restore is allowed

    def kill(container_id: str) -> list[int]:
        task = rig.runc.tasks.get(container_id)
        if task is not None and task.status is None:
            task.exit(137)
        rig.killed.append(container_id)
        if FakeServer.started:
            FakeServer.started[-1].steps.append("kill")
        return [task.pid] if task else []

    rig.killed = []  # type: ignore[attr-defined]
    monkeypatch.setattr(leftovers, "kill_container_processes", kill)
    return rig


async def asleep(rig: Rig) -> str:
    await rig.run_container()
    image = str(rig.tmp / "img")
    await rig.checkpoint(image_dir=image)
    return image


async def test_a_lazy_restore_asks_criu_for_lazy_pages_then_takes_it_back(lazy_rig: Rig) -> None:
    image = await asleep(lazy_rig)
    woke = await lazy_rig.control.handle(lazy_rig.op("restore", image_dir=image, lazy=True))
    assert woke["lazy"] is True and woke["cold"] is False
    server = FakeServer.started[-1]
    assert "lazy-pages" in server.config_at_hold.splitlines()  # what runc's CRIU read
    assert "lazy-pages" not in spec.criu_config_for(CID).read_text()  # what the next dump reads
    c = lazy_rig.ctx.tracker.get(CID)
    assert c is not None and c.pages is not None and not c.pages.done()
    server.exit.set_result(0)
    await asyncio.wait_for(c.pages, 5)
    assert server.steps == ["hold", "close"] and c.phase is TaskPhase.RUNNING


async def test_a_failed_page_server_kills_the_app_then_starts_it_cold(
    lazy_rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = await asleep(lazy_rig)
    reported: list[tuple[str, int, str]] = []
    monkeypatch.setattr(
        lazy_rig.ctx.daemon, "restarted_cold", lambda c, e: reported.append((c.id, c.pid, e))
    )
    wake_over_at: list[list[str]] = []  # runc's calls when the shim waited for the daemon

    async def wake_over(c: object) -> None:
        wake_over_at.append(list(lazy_rig.runc.calls[calls:]))

    monkeypatch.setattr(lazy_rig.ctx.daemon, "wake_over", wake_over)
    woke = await lazy_rig.control.handle(lazy_rig.op("restore", image_dir=image, lazy=True))
    c = lazy_rig.ctx.tracker.get(CID)
    assert c is not None and c.pages is not None
    calls = len(lazy_rig.runc.calls)
    server = FakeServer.started[-1]
    server.exit.set_result(1)
    await asyncio.wait_for(c.pages, 5)
    # killed first, our userfaultfd copies closed only after: no fault ever got a zero page
    assert server.steps == ["hold", "kill", "close"]
    assert lazy_rig.runc.calls[calls:] == ["Delete", "Create", "Start"]
    # the cold app binds its ports afresh: created only once the daemon's wake released them
    assert wake_over_at == [["Delete"]]
    assert lazy_rig.runc.created[-1].checkpoint == ""  # cold
    assert c.phase is TaskPhase.RUNNING and c.pid not in (0, woke["pid"])
    assert reported and reported[0][:2] == (CID, c.pid) and "page server failed" in reported[0][2]


async def test_no_lazy_restore_from_a_damaged_image(lazy_rig: Rig) -> None:
    image = await asleep(lazy_rig)
    Path(image, "pages-1.img").write_bytes(b"")  # truncated: the page server would fail later
    lazy_rig.runc.fail_restore = True
    woke = await lazy_rig.control.handle(
        lazy_rig.op("restore", image_dir=image, lazy=True, fallback=True)
    )
    assert FakeServer.started == [] and woke["lazy"] is False and woke["cold"] is True


async def test_a_page_server_that_never_serves_fails_the_first_attempt_only(
    lazy_rig: Rig,
) -> None:
    image = await asleep(lazy_rig)
    FakeServer.fail_hold = True
    woke = await lazy_rig.control.handle(lazy_rig.op("restore", image_dir=image, lazy=True))
    assert [s.steps for s in FakeServer.started] == [["hold", "kill", "stop"]]
    assert woke["lazy"] is False and woke["cold"] is False  # the eager second attempt
    assert "lazy-pages" not in spec.criu_config_for(CID).read_text()


async def test_a_page_server_that_never_finishes_is_killed_at_its_bound(
    lazy_rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stuck, not dead: the app would wait on a missing page forever. Past the bound the
    server is killed (our copies kept), then the app, then the copies closed."""
    image = await asleep(lazy_rig)
    monkeypatch.setattr(pagewatch, "stream_bound", lambda files: 0.05)
    reported: list[str] = []
    monkeypatch.setattr(lazy_rig.ctx.daemon, "restarted_cold", lambda c, e: reported.append(e))
    await lazy_rig.control.handle(lazy_rig.op("restore", image_dir=image, lazy=True))
    c = lazy_rig.ctx.tracker.get(CID)
    assert c is not None and c.pages is not None
    await asyncio.wait_for(c.pages, 5)  # the fake server never ends by itself
    assert FakeServer.started[-1].steps == ["hold", "server killed", "kill", "close"]
    assert c.phase is TaskPhase.RUNNING and lazy_rig.runc.created[-1].checkpoint == ""
    assert reported and "did not finish in 0.05 s" in reported[0]
