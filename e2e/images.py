"""The locally built test images: names, references, archive paths and archive reading.

images/build writes build/images/<name>.tar (OCI image layout); the node imports them into
containerd's k8s.io namespace. Tests use `ref("counter")` for the CRI image reference and
`read_archive` to look inside an archive without containerd.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO / "images" / "build"
ARCHIVE_DIR = Path(os.environ.get("ZEROPOD_IMAGES") or REPO / "build" / "images")
REGISTRY = "localhost/zeropod-test"
TAG = "1"
NAMES = ("counter", "memhog", "pause", "warmup")
# The port the counter and memhog apps listen on unless PORT says otherwise.
APP_PORT = 8080
SANDBOX_IMAGE = f"{REGISTRY}/pause:{TAG}"


def ref(name: str) -> str:
    """The image reference CRI knows a test image by, e.g. localhost/zeropod-test/counter:1."""
    if name not in NAMES:
        raise ValueError(f"unknown test image {name!r}; known: {', '.join(NAMES)}")
    return f"{REGISTRY}/{name}:{TAG}"


def archive_path(name: str, archive_dir: Path = ARCHIVE_DIR) -> Path:
    """Where images/build writes the archive of test image NAME."""
    ref(name)
    return archive_dir / f"{name}.tar"


def ensure_built(names: tuple[str, ...] = NAMES, timeout: float = 300.0) -> list[Path]:
    """Run images/build for NAMES (a no-op for up-to-date images); return the archive paths."""
    cmd = [sys.executable, str(BUILD_SCRIPT), *names]
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=timeout)
    except subprocess.CalledProcessError as err:
        raise RuntimeError(f"{' '.join(cmd)} failed: {err.stderr.strip()}") from err
    return [archive_path(n) for n in names]


@dataclasses.dataclass(frozen=True)
class Archive:
    """An OCI image-layout archive, parsed: its JSON documents and every blob by digest."""

    layout: dict
    index: dict
    manifest: dict
    config: dict
    blobs: dict[str, bytes]
    members: tuple[str, ...]

    def blob(self, descriptor: dict) -> bytes:
        """The bytes a descriptor ({"digest": "sha256:...", ...}) points at."""
        return self.blobs[descriptor["digest"]]


def read_archive(path: Path) -> Archive:
    """Read an OCI image-layout tar with one manifest; raise ValueError if it is malformed."""
    blobs: dict[str, bytes] = {}
    docs: dict[str, bytes] = {}
    with tarfile.open(path) as tar:
        members = tuple(m.name for m in tar.getmembers())
        for member in tar.getmembers():
            if not member.isfile():
                continue
            f = tar.extractfile(member)
            if f is None:
                raise ValueError(f"{path}: cannot read {member.name}")
            data = f.read()
            if member.name.startswith("blobs/sha256/"):
                blobs["sha256:" + member.name.rsplit("/", 1)[1]] = data
            else:
                docs[member.name] = data
    try:
        layout = json.loads(docs["oci-layout"])
        index = json.loads(docs["index.json"])
        (mdesc,) = index["manifests"]
        manifest = json.loads(blobs[mdesc["digest"]])
        config = json.loads(blobs[manifest["config"]["digest"]])
    except (KeyError, ValueError) as err:
        raise ValueError(f"{path}: not a one-manifest OCI image layout: {err!r}") from err
    return Archive(layout, index, manifest, config, blobs, members)


def extract_app(name: str, dest: Path) -> Path:
    """Copy test image NAME's program (/<name> in its layer) to DEST/<name>; return that path."""
    archive = read_archive(archive_path(name))
    (layer,) = archive.manifest["layers"]
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(archive.blob(layer)))) as tar:
        member = tar.extractfile(name)
        if member is None:
            raise ValueError(f"{archive_path(name)}: no /{name} in the image")
        target = dest / name
        target.write_bytes(member.read())
    target.chmod(0o755)
    return target
