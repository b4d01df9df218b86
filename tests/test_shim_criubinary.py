"""Which criu runc runs, and which of zeropod's CRIU options it has (read from the binary)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from zeropod.shim import criubinary, spec


def fake_criu(directory: Path, body: bytes) -> Path:
    directory.mkdir(exist_ok=True)
    path = directory / "criu"
    path.write_bytes(b"#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def test_zeropods_criu_first_when_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ours = fake_criu(tmp_path / "opt", b"")
    theirs = fake_criu(tmp_path / "usr", b"")
    monkeypatch.setenv("PATH", str(theirs.parent))
    assert criubinary.find_criu(str(ours.parent)) == str(ours)
    assert criubinary.find_criu(str(tmp_path / "none")) == str(theirs)
    monkeypatch.setenv("PATH", str(tmp_path / "none"))
    with pytest.raises(FileNotFoundError, match="criu not found"):
        criubinary.find_criu(str(tmp_path / "none"))


def test_only_the_options_the_binary_has(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "none"))
    ours = tmp_path / "opt"
    # C strings as CRIU's option table has them: NUL-terminated, the "no-" forms too
    fake_criu(ours, b"\0tcp-close\0no-freeze-poll-fast\0freeze-poll-fast\0")
    assert criubinary.zeropod_options(str(ours)) == ("freeze-poll-fast",)
    fake_criu(ours, b"\0tmpfs-no-gzip\0freeze-poll-fast\0tcp-close\0")
    os.utime(ours / "criu", ns=(2, 2))  # a new binary: another size or mtime, read again
    assert criubinary.zeropod_options(str(ours)) == ("freeze-poll-fast", "tmpfs-no-gzip")
    fake_criu(ours, b"\0tmpfs-untar-inline\0tmpfs-no-gzip\0freeze-poll-fast\0")
    os.utime(ours / "criu", ns=(3, 3))
    assert criubinary.zeropod_options(str(ours)) == criubinary.ZEROPOD_OPTIONS
    # upstream's criu, or a longer name that only starts like ours
    fake_criu(ours, b"\0skip-in-flight\0freeze-poll-fastest\0")
    os.utime(ours / "criu", ns=(1, 1))  # a new binary: another size or mtime, read again
    assert criubinary.zeropod_options(str(ours)) == ()
    assert criubinary.zeropod_options(str(tmp_path / "none")) == ()  # no criu at all


def test_the_container_config_carries_them_only_when_criu_has_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "none"))
    config = tmp_path / "criu.d" / "c1.conf"
    monkeypatch.setattr(criubinary, "zeropod_options", lambda: ())
    plain = spec.write_criu_config(config).read_text().splitlines()[1:]
    assert plain == ["skip-in-flight", "network-lock skip"]
    monkeypatch.setattr(criubinary, "zeropod_options", lambda: criubinary.ZEROPOD_OPTIONS)
    lines = spec.write_criu_config(config, lazy=True).read_text().splitlines()[1:]
    assert lines == [
        *plain,
        "freeze-poll-fast",
        "tmpfs-no-gzip",
        "tmpfs-untar-inline",
        "lazy-pages",
    ]
