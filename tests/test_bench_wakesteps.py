"""A wake's journal entries, as the node writes them, become its steps in milliseconds."""

from __future__ import annotations

from bench import wakesteps

CID = "9e5b531a16e7242c9330c7421d0e8e80d0876b09873dfea3c3262ef6cdfc9064"


def entry(ms: float, message: str) -> dict[str, str]:
    return {"__MONOTONIC_TIMESTAMP": str(int(ms * 1000)), "MESSAGE": message}


JOURNAL = [
    entry(1000.0, "default/web-10/app: SCALED_DOWN -> RESTORING (another pod)"),
    entry(1006.0, "default/web-1/app: SCALED_DOWN -> RESTORING (connection 10.88.255.254:1 ...)"),
    entry(1007.0, f"container {CID}: scaled_down -> restoring (from /var/lib/zeropod/images)"),
    {
        **entry(1060.0, f"container {CID} restored in 53 ms, pid 1830"),
        "STEP_CREATE_MS": "9.0",
        "STEP_START_MS": "43.5",
    },
    entry(1071.0, "default/web-1/app: RESTORING -> RUNNING (woken (connection ...))"),
    {
        **entry(1079.0, "default/web-1/app: woke in 73.0 ms (restore 53 ms)"),
        "STEP_PROBE_CHECK_MS": "3.5",
        "STEP_LISTENING_MS": "6.5",
        "STEP_RELEASE_MS": "4.0",
    },
    entry(1990.0, f"container {CID} restored lazily in 40 ms, pid 1900"),
    entry(2000.0, "default/web-1/app: woke in 80.0 ms (a later wake: not this one)"),
]


def test_the_marks_of_one_wake_and_the_steps_between_them() -> None:
    found = wakesteps.marks(JOURNAL, "web-1", CID)
    assert list(found) == list(wakesteps.MARKS)
    assert found["restoring"] == 1006.0 and found["woke"] == 1079.0
    assert wakesteps.steps(found) == {
        "restoring->shim_restoring": 1.0,
        "shim_restoring->shim_restored": 53.0,
        "shim_restored->running": 11.0,
        "running->woke": 8.0,
        "total": 73.0,
    }


def test_the_daemons_and_the_shims_own_timings_inside_the_steps() -> None:
    assert wakesteps.daemon_steps(JOURNAL, "web-1", CID) == {
        "(create)": 9.0,
        "(start)": 43.5,
        "(probe_check)": 3.5,
        "(listening)": 6.5,
        "(release)": 4.0,
    }
    assert wakesteps.daemon_steps(JOURNAL[:3], "web-1", CID) == {}
    # only the first entry of each kind is this wake's
    assert (
        wakesteps.daemon_steps([*JOURNAL, {**JOURNAL[3], "STEP_START_MS": "1"}], "web-1", CID)[
            "(start)"
        ]
        == 43.5
    )


def test_missing_marks_are_skipped_not_invented() -> None:
    found = wakesteps.marks(JOURNAL[2:4], "web-1", CID)
    assert wakesteps.steps(found) == {
        "shim_restoring->shim_restored": 53.0,
    }


def test_steps_over_several_wakes_and_their_table() -> None:
    from bench import report

    runs = [
        {"restoring->shim_restoring": 4.0, "total": 70.0, "outside_journal": 20.0},
        {"restoring->shim_restoring": 6.0, "total": 90.0, "outside_journal": 22.0},
        {"total": 80.0, "outside_journal": 21.0},
    ]
    summary = wakesteps.summaries(runs)
    assert summary["restoring->shim_restoring"] == {"median": 5.0, "min": 4.0, "max": 6.0, "n": 2}
    assert summary["total"]["median"] == 80.0 and summary["outside_journal"]["n"] == 3
    lazy = {"total": {"median": 60.0, "min": 55.0, "max": 66.0, "n": 3}}
    doc = {
        "measures": [
            {"name": "wake_latency_lazy", "size_mb": 100, "wake_steps": lazy},
            {"name": "wake_latency", "size_mb": 100, "wake_steps": summary},
            {"name": "wake_latency", "size_mb": 5, "wake_steps": summary},
        ]
    }
    text = report.wake_steps(doc)
    assert "| step | 5 MB | 100 MB | 100 MB lazy |" in text  # eager by size, then lazy
    assert "| restoring->shim_restoring | 5 (4-6) | 5 (4-6) | - |" in text
    assert "| total | 80 (70-90) | 80 (70-90) | 60 (55-66) |" in text


def test_a_lazy_or_cold_restore_is_the_shims_mark_too() -> None:
    for how in ("lazily ", "cold ", ""):
        message = f"container {CID} restored {how}in 40 ms, pid 1900"
        assert wakesteps.marks([entry(5.0, message)], "web-1", CID) == {"shim_restored": 5.0}
