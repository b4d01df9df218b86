"""One timeout policy for daemon and shim: scaled by size, capped, the daemon always later."""

from __future__ import annotations

import os

import pytest

from zeropod.contract import timeouts


@pytest.mark.parametrize(
    ("size", "seconds"),
    [(0, 10.0), (5_000_000, 10.05), (100_000_000, 11.0), (500_000_000, 15.0), (10**12, 100.0)],
)
def test_a_bound_grows_with_the_memory_and_is_capped(size: int, seconds: float) -> None:
    assert timeouts.scaled(size) == pytest.approx(seconds)


@pytest.mark.parametrize("size", [0, 10**6, 10**9, 10**12])
def test_the_daemon_always_waits_longer_than_the_shim(size: int) -> None:
    bound = timeouts.scaled(size)
    # After its bound the shim still deletes the task (one call) or waits for a killed
    # restore's Start (15 s): the daemon's wait covers both.
    assert timeouts.daemon_wait(bound) >= bound + timeouts.CALL
    assert timeouts.daemon_wait(timeouts.cold_start()) > 2 * timeouts.CALL


@pytest.mark.parametrize("size", [0, 10**6, 10**9, 10**12])
def test_a_restore_may_take_two_attempts_and_the_waits_cover_them(size: int) -> None:
    attempt = timeouts.scaled(size) + timeouts.AFTER_KILL
    assert timeouts.restore(size) == pytest.approx(timeouts.RESTORE_ATTEMPTS * attempt)
    assert timeouts.RESTORE_ATTEMPTS == 2
    assert timeouts.daemon_wait(timeouts.restore(size)) > 2 * attempt
    # The shim's wake waits for the daemon's restore and the cold start it may fall back to.
    assert timeouts.wake_wait(size) > timeouts.daemon_wait(timeouts.restore(size))


def test_resident_bytes_of_this_process_tree() -> None:
    mine = timeouts.resident_bytes(os.getpid())
    assert mine > 1_000_000  # a Python process holds megabytes
    assert timeouts.resident_bytes(2**22 + 12345) == 0  # no such process


def test_pages_bytes(tmp_path) -> None:
    (tmp_path / "pages-1.img").write_bytes(b"x" * 4096)
    (tmp_path / "pages-2.img").write_bytes(b"x" * 8192)
    (tmp_path / "core-1.img").write_bytes(b"x" * 100)
    assert timeouts.pages_bytes(str(tmp_path)) == 12288
    assert timeouts.pages_bytes(str(tmp_path / "missing")) == 0
