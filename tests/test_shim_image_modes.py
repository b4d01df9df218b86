"""A dump's image files are root's alone: 0600 files in a 0700 directory."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from zeropod.shim.checkpoint import owner_only


def test_criu_images_become_owner_only(tmp_path: Path) -> None:
    image = tmp_path / "image"
    image.mkdir(mode=0o755)
    for name in ("pages-1.img", "files.img", "dump.log"):
        (image / name).write_text("memory")
        os.chmod(image / name, 0o644)  # as CRIU writes them
    owner_only(str(image))
    assert stat.S_IMODE(image.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in image.iterdir()} == {0o600}
