"""zeropodctl sleep and wake: requests, one-line errors, and the summary line."""

from __future__ import annotations

import pytest

from zeropod.cli import main as cli
from zeropod.cli.render import pod_summary
from zeropod.contract.protocol import NOT_FOUND, ControlError


class FakeClient:
    def __init__(self, *args: object, **kwargs: object) -> None:
        self.calls: list[tuple[object, ...]] = []
        FakeClient.last = self

    def sleep(self, pod: str, namespace: str, container: str | None = None) -> dict[str, object]:
        self.calls.append(("sleep", pod, namespace, container))
        if pod == "missing":
            raise ControlError(NOT_FOUND, "pod shop/missing has no scaled containers")
        return {"pod": POD}

    def wake(self, pod: str, namespace: str) -> dict[str, object]:
        self.calls.append(("wake", pod, namespace))
        return {"pod": POD}


POD = {
    "namespace": "shop",
    "name": "web-1",
    "unit": "zeropod@shop_web\\x2d1.service",
    "state": "SCALED_DOWN",
    "containers": [{"container": "app", "last_checkpoint_ms": 180.5, "last_restore_ms": None}],
}


@pytest.fixture(autouse=True)
def fake_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "ControlClient", FakeClient)


def test_sleep_and_wake(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["sleep", "web-1", "app", "-n", "shop"]) == 0
    assert FakeClient.last.calls == [("sleep", "web-1", "shop", "app")]
    out = capsys.readouterr().out
    assert (
        out == "shop/web-1 SCALED_DOWN (zeropod@shop_web\\x2d1.service); app: checkpoint 180.5 ms\n"
    )
    assert cli.main(["wake", "web-1"]) == 0
    assert FakeClient.last.calls == [("wake", "web-1", "default")]


def test_refusal_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["sleep", "missing", "-n", "shop"]) == 1
    err = capsys.readouterr().err
    assert err == (
        "zeropodctl: pod shop/missing has no scaled containers (see 'zeropodctl status')\n"
    )


def test_summary_without_timings() -> None:
    pod = {**POD, "containers": [{"container": "app"}]}
    assert pod_summary(pod).endswith("app: no timings")


def test_status_table_shows_the_last_timings() -> None:
    from datetime import UTC, datetime

    from zeropod.cli.render import millis, status_table

    assert [millis(v) for v in (180.4, 0, None, "x", True)] == ["180ms", "0ms", "-", "-", "-"]
    row = {
        "namespace": "shop",
        "pod": "web-1",
        "container": "app",
        "state": "SCALED_DOWN",
        "managed": True,
        "since": "2026-01-01T00:00:00.000Z",
        "last_checkpoint_ms": 181.2,
        "last_restore_ms": None,
        "image_bytes": 15 * 2**20,
        "ports": [8080],
    }
    lines = status_table([row], datetime(2026, 1, 1, 0, 1, tzinfo=UTC)).splitlines()
    assert lines[1].split() == [
        *("shop", "web-1", "app", "SCALED_DOWN", "1m0s", "181ms", "-", "15.0M", "8080")
    ]


def test_sizes_read_like_ls_h() -> None:
    from zeropod.cli.render import size

    values = (None, True, -1, 0, 1000, 2048, 15 * 2**20 + 300_000, 2**31)
    assert [size(v) for v in values] == ["-", "-", "-", "0B", "1000B", "2.0K", "15.3M", "2.0G"]
