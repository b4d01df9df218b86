"""zeropod's CRIU extracts a tmpfs tarball itself (tmpfs-untar-inline) exactly as tar would.

The extractor (scripts/criu-patches/tmpfs-untar-inline.patch, criu/tmpfs-untar.c of the
host's patched CRIU tree) is compiled here into a small program and run against GNU tar on
the same tarballs: a tree like a container's /dev (device nodes, FIFOs, symlinks, a setuid
file, a hard link, other owners, old times) in tar's gnu and POSIX ustar formats must come
out identical (type, mode, owner, size, time, target, device numbers, content). Tarballs it
must leave to tar (long names, sparse files, pax headers, names that leave the mount,
truncated or not tarballs at all) must be refused before anything is written, and a file
beneath a symlink is never written through it.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

CACHE = Path(os.environ.get("ZEROPOD_CACHE", "/var/cache/zeropod"))
TREE = CACHE / "criu-4.2.1"
SOURCE = TREE / "criu" / "tmpfs-untar.c"
HARNESS = r"""
#include <stdio.h>
#include <stdarg.h>
void print_on_level(unsigned int level, const char *fmt, ...)
{
	va_list args;
	va_start(args, fmt);
	vfprintf(stderr, fmt, args);
	va_end(args);
}
#include "tmpfs-untar.c"
int main(int argc, char **argv)
{
	int ret = tmpfs_untar(open(argv[1], O_RDONLY), argv[2]);
	return ret < 0 ? 2 : ret;
}
"""
CREATE = [  # what CRIU's tmpfs_dump runs, with tmpfs-no-gzip
    "tar",
    "--create",
    "--no-unquote",
    "--no-wildcards",
    "--one-file-system",
    "--check-links",
    "--preserve-permissions",
    "--numeric-owner",
]
EXTRACTED, LEFT_TO_TAR, FAILED = 0, 1, 2


@pytest.fixture(scope="module")
def untar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.geteuid() != 0:
        pytest.skip("needs root (device nodes, owners)")
    if not SOURCE.exists():
        pytest.skip(f"no patched CRIU tree at {TREE} (make setup)")
    build = tmp_path_factory.mktemp("untar")
    (build / "harness.c").write_text(HARNESS)
    binary = build / "untar"
    include = ["-iquote", str(TREE / "criu"), "-iquote", str(TREE / "criu" / "include")]
    subprocess.run(
        ["gcc", "-O2", "-Wall", "-Werror", *include, "-iquote", str(TREE / "include"),
         "-o", str(binary), str(build / "harness.c")],
        check=True,
    )  # fmt: skip
    return binary


def dev_like(root: Path) -> Path:
    """A tree like a container's /dev tmpfs, with what else a small tmpfs may hold."""
    root.mkdir()
    for name, kind, major, minor in (("null", 0o20666, 1, 3), ("zero", 0o20666, 1, 5)):
        os.mknod(root / name, kind, os.makedev(major, minor))
        os.chmod(root / name, 0o666)
    os.mknod(root / "loop0", 0o60660, os.makedev(7, 0))
    os.mkfifo(root / "fifo")
    os.chown(root / "fifo", 1000, 1001)
    for d in ("pts", "shm", "mqueue", "deep/er/est"):
        (root / d).mkdir(parents=True)
    os.chmod(root / "shm", 0o1777)
    os.chown(root / "deep/er", 65534, 65534)
    (root / "fd").symlink_to("/proc/self/fd")
    (root / "ptmx").symlink_to("pts/ptmx")
    (root / "deep/er/rel").symlink_to("../../null")
    log = root / "termination-log"
    log.write_text("terminated\n")
    os.chown(log, 1000, 1000)
    os.chmod(log, 0o4755)
    (root / "empty").touch()
    (root / "deep/er/est/big").write_bytes(os.urandom(300_000))
    os.link(root / "deep/er/est/big", root / "hard")
    for path, when in (("fd", 1577934245), ("deep/er/rel", 1577934245)):
        os.utime(root / path, (when, when), follow_symlinks=False)
    for path in ("deep/er", "deep", "termination-log", "."):
        os.utime(root / path, (1620284889, 1620284889))
    return root


def archive(tmp: Path, source: Path, name: str, *extra: str) -> Path:
    out = tmp / name
    with open(out, "wb") as f:
        subprocess.run([*CREATE, *extra, "--directory", str(source), "."], stdout=f, check=True)
    return out


def listing(root: Path) -> list[tuple]:
    """Everything tar restores of each entry (not atime, not the hard link's count)."""
    out = []
    for path in sorted([root, *root.rglob("*")]):
        st = os.lstat(path)
        target = os.readlink(path) if path.is_symlink() else ""
        content = path.read_bytes() if path.is_file() and not path.is_symlink() else b""
        rdev = (os.major(st.st_rdev), os.minor(st.st_rdev)) if st.st_rdev else ()
        out.append(
            (str(path.relative_to(root)), st.st_mode, st.st_uid, st.st_gid, st.st_size,
             int(st.st_mtime), target, rdev, content)
        )  # fmt: skip
    return out


def run(untar: Path, tarball: Path, into: Path) -> tuple[int, str]:
    into.mkdir()
    done = subprocess.run([str(untar), str(tarball), str(into)], capture_output=True, text=True)
    return done.returncode, done.stderr


@pytest.mark.parametrize("fmt", ["gnu", "ustar"])
def test_extracts_what_tar_extracts(untar: Path, tmp_path: Path, fmt: str) -> None:
    extra = ["--sparse"] if fmt == "gnu" else []  # CRIU's own call is gnu with --sparse
    tarball = archive(tmp_path, dev_like(tmp_path / "src"), "t.tar", f"--format={fmt}", *extra)
    code, said = run(untar, tarball, tmp_path / "ours")
    assert code == EXTRACTED, said
    assert "entries extracted in process" in said
    (tmp_path / "tar").mkdir()
    with open(tarball, "rb") as f:
        subprocess.run(["tar", "--extract", "-C", str(tmp_path / "tar")], stdin=f, check=True)
    assert listing(tmp_path / "ours") == listing(tmp_path / "tar")
    assert os.stat(tmp_path / "ours" / "hard").st_nlink == 2  # a link, not a copy


def crafted(path: Path, members: list[tuple[tarfile.TarInfo, bytes]], fmt: int) -> Path:
    with tarfile.open(path, "w", format=fmt) as tf:
        for info, data in members:
            info.size = len(data) if info.type == tarfile.REGTYPE else 0
            tf.addfile(info, io.BytesIO(data) if data else None)
    return path


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


def test_leaves_to_tar_what_it_does_not_know_and_writes_nothing(
    untar: Path, tmp_path: Path
) -> None:
    long_tree = tmp_path / "long"
    long_tree.mkdir()
    (long_tree / ("n" * 120)).touch()
    sparse_tree = tmp_path / "sparse"
    sparse_tree.mkdir()
    with open(sparse_tree / "holes", "wb") as f:
        f.truncate(10 << 20)
        f.seek(0, os.SEEK_END)
        f.write(b"x")
    gnu = archive(tmp_path, dev_like(tmp_path / "src"), "gnu.tar", "--sparse")
    cut = tmp_path / "cut.tar"
    cut.write_bytes(gnu.read_bytes()[:1500])
    noise = tmp_path / "noise.tar"
    noise.write_bytes(os.urandom(2048))
    pax = tarfile.TarInfo("./a")
    pax.pax_headers = {"comment": "x"}
    cases = {
        "long name": archive(tmp_path, long_tree, "long.tar", "--sparse"),
        "sparse file": archive(tmp_path, sparse_tree, "sparse.tar", "--sparse"),
        "climbs out": crafted(tmp_path / "up.tar", [(member("../x"), b"x")], tarfile.GNU_FORMAT),
        "absolute": crafted(tmp_path / "abs.tar", [(member("/x"), b"x")], tarfile.GNU_FORMAT),
        "pax header": crafted(tmp_path / "pax.tar", [(pax, b"x")], tarfile.PAX_FORMAT),
        "truncated": cut,
        "not a tarball": noise,
    }
    for case, tarball in cases.items():
        into = tmp_path / f"into-{case.replace(' ', '-')}"
        code, said = run(untar, tarball, into)
        assert code == LEFT_TO_TAR, (case, said)
        assert not any(into.iterdir()), case


def test_never_writes_through_a_symlink(untar: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    tarball = crafted(
        tmp_path / "through.tar",
        [(member("./up", tarfile.SYMTYPE, str(victim)), b""), (member("./up/owned"), b"x")],
        tarfile.GNU_FORMAT,
    )
    code, said = run(untar, tarball, tmp_path / "into")
    assert code == FAILED and "Not a directory" in said, said
    assert not any(victim.iterdir())
    shutil.rmtree(tmp_path / "into")
