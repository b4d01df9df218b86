"""The test image archives: valid OCI layout, matching digests, expected rootfs, reproducible."""

from __future__ import annotations

import gzip
import hashlib
import importlib.machinery
import importlib.util
import io
import sys
import tarfile
from pathlib import Path

import pytest

from e2e import images

BUILD = images.BUILD_SCRIPT


def load_build_module():
    """images/build has no .py suffix: load it as a module to call its functions."""
    loader = importlib.machinery.SourceFileLoader("zeropod_images_build", str(BUILD))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[loader.name] = module  # dataclasses look their module up while defining
    loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def archives() -> dict[str, images.Archive]:
    paths = images.ensure_built()
    return {name: images.read_archive(p) for name, p in zip(images.NAMES, paths, strict=True)}


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("name", images.NAMES)
def test_archive_is_a_valid_oci_layout(archives: dict[str, images.Archive], name: str) -> None:
    a = archives[name]
    assert a.layout == {"imageLayoutVersion": "1.0.0"}
    assert {"oci-layout", "index.json"} <= set(a.members)
    for digest, data in a.blobs.items():
        assert sha256(data) == digest
    (mdesc,) = a.index["manifests"]
    assert mdesc["annotations"] == {
        "io.containerd.image.name": images.ref(name),
        "org.opencontainers.image.ref.name": images.ref(name),
    }
    assert mdesc["platform"] == {"architecture": "amd64", "os": "linux"}
    for desc in [mdesc, a.manifest["config"], *a.manifest["layers"]]:
        assert len(a.blob(desc)) == desc["size"]
    assert a.manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert a.config["os"] == "linux"
    assert a.config["architecture"] == "amd64"
    assert a.config["config"]["Entrypoint"] == [f"/{name}"]
    assert a.config["config"]["WorkingDir"] == "/"
    assert "PATH=/bin" in a.config["config"]["Env"]
    ports = {} if name == "pause" else {"8080/tcp": {}}
    assert a.config["config"]["ExposedPorts"] == ports
    (layer,) = a.manifest["layers"]
    assert a.config["rootfs"] == {
        "type": "layers",
        "diff_ids": [sha256(gzip.decompress(a.blob(layer)))],
    }


@pytest.mark.parametrize("name", images.NAMES)
def test_rootfs_has_app_busybox_and_users(archives: dict[str, images.Archive], name: str) -> None:
    a = archives[name]
    (layer,) = a.manifest["layers"]
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(a.blob(layer)))) as tar:
        members = tar.getmembers()
        by_name = {m.name: m for m in members}
        passwd = tar.extractfile("etc/passwd").read().decode()  # type: ignore[union-attr]
        group = tar.extractfile("etc/group").read().decode()  # type: ignore[union-attr]
    assert [m.name for m in members] == sorted(m.name for m in members)
    assert all(m.uid == 0 and m.gid == 0 and m.mtime == members[0].mtime for m in members)
    assert by_name[name].isfile() and by_name[name].mode & 0o111
    assert by_name["bin/busybox"].isfile() and by_name["bin/busybox"].mode & 0o111
    for applet in ("sh", "echo", "cat", "ls", "kill", "sleep", "ps", "wget", "env", "id"):
        assert by_name[f"bin/{applet}"].issym() and by_name[f"bin/{applet}"].linkname == "busybox"
    assert by_name["tmp"].isdir() and by_name["tmp"].mode == 0o1777
    assert passwd.startswith("root:x:0:0:")
    assert group.startswith("root:x:0:")


def test_build_is_reproducible_and_cached(tmp_path: Path) -> None:
    build = load_build_module()
    image = build.IMAGES["counter"]
    first, built = build.build(image, tmp_path / "a")
    assert built
    second, built = build.build(image, tmp_path / "b", force=True)
    assert built
    assert first.read_bytes() == second.read_bytes()
    again, built = build.build(image, tmp_path / "a")
    assert not built and again == first


def test_refs_and_paths() -> None:
    assert images.ref("pause") == images.SANDBOX_IMAGE == "localhost/zeropod-test/pause:1"
    assert images.archive_path("memhog").name == "memhog.tar"
    with pytest.raises(ValueError, match="unknown test image"):
        images.ref("nginx")
