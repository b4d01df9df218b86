"""The CRIU config file and the org.criu.config annotation written into config.json."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from zeropod.shim import criubinary, spec


def bundle(tmp_path: Path, content: dict) -> Path:
    (tmp_path / "config.json").write_text(json.dumps(content))
    os.chmod(tmp_path / "config.json", 0o640)
    return tmp_path


def test_criu_config_written_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(criubinary, "zeropod_options", lambda: ())  # whatever criu this host has
    path = spec.write_criu_config(tmp_path / "sub" / "criu.conf")
    lines = [x for x in path.read_text().splitlines() if not x.startswith("#")]
    assert lines == ["skip-in-flight", "network-lock skip"]
    mtime = path.stat().st_mtime_ns
    spec.write_criu_config(path)
    assert path.stat().st_mtime_ns == mtime


def test_annotation_added_and_spec_kept(tmp_path: Path) -> None:
    original = {"ociVersion": "1.1.0", "process": {"args": ["sh"]}, "annotations": {"a": "b"}}
    b = bundle(tmp_path, original)
    assert spec.annotate_criu_config(b, "/run/zeropod/criu.conf") is None
    got = json.loads((b / "config.json").read_text())
    assert got["annotations"] == {"a": "b", "org.criu.config": "/run/zeropod/criu.conf"}
    assert {k: v for k, v in got.items() if k != "annotations"} == {
        k: v for k, v in original.items() if k != "annotations"
    }
    assert (b / "config.json").stat().st_mode & 0o777 == 0o640
    assert spec.annotate_criu_config(b, "/run/zeropod/criu.conf") is None  # idempotent
    assert not list(b.glob(".config.json*"))


def test_annotation_without_annotations_object(tmp_path: Path) -> None:
    b = bundle(tmp_path, {"ociVersion": "1.1.0"})
    spec.annotate_criu_config(b, "/c.conf")
    assert spec.read_spec(b)["annotations"] == {"org.criu.config": "/c.conf"}


@pytest.mark.parametrize("theirs", ["", "/tmp/evil.conf", "/run/zeropod/criu.conf.d/../x"])
def test_a_pods_own_criu_config_is_never_used(tmp_path: Path, theirs: str) -> None:
    """A CRIU config can name action scripts that CRIU runs as root on the node."""
    b = bundle(tmp_path, {"annotations": {"org.criu.config": theirs}})
    assert spec.annotate_criu_config(b, "/c.conf") == theirs
    assert spec.read_spec(b)["annotations"] == {"org.criu.config": "/c.conf"}


@pytest.mark.parametrize("text", ["not json", "[1, 2]"])
def test_bad_spec_names_the_file(tmp_path: Path, text: str) -> None:
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(ValueError, match=r"config\.json"):
        spec.annotate_criu_config(tmp_path, "/c.conf")
