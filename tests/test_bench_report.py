"""bench/report.py: summaries, ratios, targets, the JSON document, the table and the chart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import report


def test_summary_of_values() -> None:
    assert report.summary([3, 1, 2, 10]) == {
        "min": 1.0,
        "median": 2.5,
        "p99": 10.0,
        "max": 10.0,
        "n": 4,
    }


def test_p99_is_the_nearest_rank_and_its_ratio() -> None:
    values = list(range(1, 201))  # 200 values: rank ceil(0.99 * 200) = 198
    assert report.p99(values) == 198.0
    assert report.p99([]) is None
    assert report.ratio_p99([10, 20, 30], [10, 15]) == 2.0
    assert report.ratio_p99([10], []) is None


def test_rows_judged_by_p99_and_by_a_strict_limit() -> None:
    density = report.measure("density_wake_latency", "ms", [100, 130], [100, 110])
    density["ratio_p99"] = report.ratio_p99([100, 130], [100, 110])
    assert density["ratio_p99"] == 1.182 and report.target_met(density) is True
    cpu = report.measure("density_daemon_cpu", "% of a core", [0.05, 0.2], digits=3)
    assert cpu["zeropod"]["max"] == 0.2 and report.target_met(cpu) is False  # < 0.2 strictly
    text = report.table({"measures": [density, cpu]})
    assert "p99 1.182" in text and "p99 ratio <= 1.2 ✅" in text and "max < 0.2 ❌" in text


def test_throughput_is_judged_by_its_ratio_and_the_spread_of_its_pairs() -> None:
    row = report.measure("throughput", "req/s", [99, 100], [100, 100])
    row["pair_spread_pct"] = report.spread_pct([0.98, 1.0, 1.04])
    assert row["pair_spread_pct"] == 3.0 and report.target_met(row) is False  # not under 3
    row["pair_spread_pct"] = 1.2
    assert report.target_met(row) is True
    assert report.target_text("throughput") == "ratio >= 0.98 and pairs ± % < 3"


def test_compare_prints_before_and_after_per_measure() -> None:
    before = {
        "machine": {"date": "A"},
        "measures": [
            report.measure("wake_latency", "ms", [100, 110, 90], [50], 5),
            report.measure("footprint", "MB", [36.0], [10.0]),
        ],
    }
    after = {
        "machine": {"date": "B"},
        "measures": [
            report.measure("wake_latency", "ms", [60, 55, 65], [50], 5),
            report.measure("density_footprint", "MB", [9.0]),
        ],
    }
    text = report.compare(before, after)
    assert "Before: A; after: B" in text
    assert "| wake_latency | 5 | ms | 100 (90-110) | 60 (55-65) | -40.0 % | 2 | 1.2 |" in text
    assert "| density_footprint |  | MB | - | 9 (9-9) | - | - | - |" in text
    assert "| footprint |  | MB | 36 (36-36) | - | - | 3.6 | - |" in text


def test_summary_rounds_to_a_tenth_and_is_none_when_empty() -> None:
    assert report.summary([1.04, 1.06])["median"] == 1.1
    assert report.summary([]) is None


def test_ratio_of_medians() -> None:
    z, b = report.summary([110, 120, 130]), report.summary([100, 100, 200])
    assert report.ratio(z, b) == 1.2


@pytest.mark.parametrize("baseline", [None, {"min": 0, "median": 0, "max": 0, "n": 1}])
def test_ratio_without_a_usable_baseline(baseline: dict | None) -> None:
    assert report.ratio(report.summary([1]), baseline) is None


def test_measure_has_the_documented_keys() -> None:
    m = report.measure("wake_latency", "ms", [90, 100], [80, 100], size_mb=5, baseline_is="runc")
    assert list(m) == [
        "name",
        "size_mb",
        "unit",
        "zeropod",
        "baseline",
        "ratio_median",
        "baseline_is",
    ]
    assert m["ratio_median"] == round(95 / 90, 3)


def test_measure_without_size_or_baseline() -> None:
    m = report.measure("resets_during_dump", "failed requests", [0, 0])
    assert "size_mb" not in m and m["baseline"] is None and m["ratio_median"] is None


@pytest.mark.parametrize(
    ("name", "zeropod", "baseline", "met"),
    [
        ("wake_latency", [105], [100], True),
        ("wake_latency", [111], [100], False),
        ("throughput", [98], [100], None),  # its pairs' spread is missing
        ("throughput", [97], [100], False),
        ("resets_sleeping", [0, 0], [50], True),
        ("resets_sleeping", [0, 1], [50], False),
        ("footprint", [14.9], [10], True),
        ("footprint", [15.1], [10], False),
        ("storm_wake_latency", [100], [90], None),  # no single wake to compare with
        ("density_footprint", [9.9], [], True),
        ("density_footprint", [10.1], [], False),
    ],
)
def test_targets(name: str, zeropod: list[float], baseline: list[float], met: bool | None) -> None:
    assert report.target_met(report.measure(name, "x", zeropod, baseline)) is met


def test_target_without_a_number_is_unknown() -> None:
    assert report.target_met(report.measure("wake_latency", "ms", [1], [])) is None


def doc() -> dict:
    return report.document(
        [
            report.measure("wake_latency", "ms", [90, 100, 110], [80, 90, 100], size_mb=5),
            report.measure("memory_freed", "MB", [5.5], size_mb=5),
        ],
        {"date": "2026-01-01 00:00 UTC", "description": "test box", "versions": {"criu": "4.2"}},
    )


def test_json_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "out" / "latest.json"
    report.write_json(path, doc())
    loaded = json.loads(path.read_text())
    assert loaded["machine"]["versions"] == {"criu": "4.2"}
    assert [m["name"] for m in loaded["measures"]] == ["wake_latency", "memory_freed"]


def test_table_rows() -> None:
    text = report.table(doc())
    assert text.startswith("Benchmark of 2026-01-01 00:00 UTC: test box")
    assert "criu 4.2" in text
    row = next(line for line in text.splitlines() if line.startswith("| wake_latency"))
    assert row == (
        "| wake_latency | 5 | ms | 100 (90-110) | 90 (80-100) | 1.111 | 3 | ratio <= 1.1 ❌ |"
    )
    row = next(line for line in text.splitlines() if line.startswith("| memory_freed"))
    assert "| - | - |" in row and row.endswith("|  |")


def test_chart_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / "latest.png"
    report.chart(doc(), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
