"""SysV segments a dump leaves in the pod's IPC namespace: finding and removing them."""

from __future__ import annotations

import ctypes
import os
import struct

import pytest

from zeropod.shim.sysvipc import (
    dumped_segments,
    ipc_namespace_path,
    parse_proc_shm,
    remove_unattached,
)

_COLUMNS = "key shmid perms size cpid lpid nattch uid gid cuid cgid atime dtime ctime rss swap"
PROC_SHM = "\n".join(
    [
        _COLUMNS,
        "1755235 0 600 56 412 412 0 102 102 102 102 1764967421 1764967421 1764967421 4096 0",
        "-1 32769 600 1048576 500 501 2 0 0 0 0 0 0 1764967421 0 0",
    ]
)


def test_parse_proc_shm_reads_key_id_and_attachments() -> None:
    assert parse_proc_shm(PROC_SHM) == [(1755235, 0, 0), (0xFFFFFFFF, 32769, 2)]
    assert parse_proc_shm("") == []


@pytest.mark.parametrize(
    ("namespaces", "path"),
    [
        ([{"type": "ipc", "path": "/proc/42/ns/ipc"}, {"type": "pid"}], "/proc/42/ns/ipc"),
        ([{"type": "ipc"}], None),  # its own: it ends with the container
        ([], None),
    ],
)
def test_the_pods_ipc_namespace_comes_from_the_spec(namespaces: list, path: str | None) -> None:
    assert ipc_namespace_path({"linux": {"namespaces": namespaces}}) == path


def test_only_unattached_listed_segments_are_removed() -> None:
    """In our own IPC namespace (setns to it needs no privilege beyond the caller's)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.shmat.restype = ctypes.c_void_p
    ids = [libc.shmget(0, 4096, 0o600 | 0o1000) for _ in range(3)]  # IPC_PRIVATE, IPC_CREAT
    if min(ids) < 0:
        pytest.skip("no SysV shared memory here")
    attached = libc.shmat(ids[1], None, 0)
    try:
        try:
            removed = remove_unattached("/proc/self/ns/ipc", [(0, i) for i in ids[:2]])
        except PermissionError:
            pytest.skip("setns into our own IPC namespace needs CAP_SYS_ADMIN here")
        assert removed == [ids[0]]  # ids[1] is attached, ids[2] not listed
        with open("/proc/sysvipc/shm") as f:
            left = {ident for _, ident, _ in parse_proc_shm(f.read())}
        assert ids[0] not in left and {ids[1], ids[2]} <= left
    finally:
        libc.shmdt(ctypes.c_void_p(attached))
        for ident in ids:
            libc.shmctl(ident, 0, None)
    assert os.path.exists("/proc/self/ns/ipc")


def _varint(value: int) -> bytes:
    out = b""
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out += bytes([byte | 0x80])
        else:
            return out + bytes([byte])


def _shm_entry(key: int, ident: int, size: int, in_pagemaps: bool) -> bytes:
    desc = b"\x08" + _varint(key) + b"\x10" + _varint(102) + b"\x38" + _varint(ident)
    entry = b"\x0a" + _varint(len(desc)) + desc + b"\x10" + _varint(size)
    if in_pagemaps:
        entry += b"\x18\x01"
    data = struct.pack("<I", len(entry)) + entry
    if not in_pagemaps:
        data += b"\xaa" * size + b"\0" * (-size % 4)
    return data


def test_dumped_segments_read_both_image_layouts(tmp_path) -> None:
    header = struct.pack("<II", 0x54564319, 0x52150427)
    (tmp_path / "ipcns-shm-9.img").write_bytes(
        header
        + _shm_entry(1755235, 0, 56, in_pagemaps=True)
        + _shm_entry(0xFFFFFFFF, 32769, 6, in_pagemaps=False)  # contents inline
        + _shm_entry(7, 65538, 300, in_pagemaps=True)
    )
    assert dumped_segments(str(tmp_path)) == {(1755235, 0), (0xFFFFFFFF, 32769), (7, 65538)}
    (tmp_path / "ipcns-shm-9.img").write_bytes(header + struct.pack("<I", 99) + b"\x08")
    with pytest.raises(ValueError, match="past the end"):
        dumped_segments(str(tmp_path))
    assert dumped_segments(str(tmp_path / "none")) == set()
