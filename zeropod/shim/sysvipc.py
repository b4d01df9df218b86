"""SysV shared memory that a dump leaves behind in the pod's IPC namespace.

A pod's containers share the sandbox's IPC namespace, and runc declares only the network and
PID namespaces external to CRIU: CRIU dumps the IPC namespace's SysV segments with the
container, and at restore re-creates them under the same ids in the namespace it finds.
The segments themselves outlive the dumped processes (a segment lives until it is removed),
so the restore fails with ``Failed to create shm set: File exists`` (criu/ipc_ns.c). Measured
with PostgreSQL 15, whose postmaster keeps a 56-byte SysV interlock segment: every restore
failed that way and the database came back cold.

After a successful dump :func:`release_dumped_segments` removes, from the pod's namespace,
exactly the segments the image holds (key and id) that no process has
attached any more; CRIU re-creates them with their contents at restore, and meanwhile their
memory is free like the rest of the sleeping app's. A segment another container still uses
(attached) is left alone; its restore would then fail and the container comes back cold.
"""

from __future__ import annotations

import ctypes
import glob
import os
import struct
import threading
from collections.abc import Callable, Iterable

CLONE_NEWIPC = 0x08000000
IPC_RMID = 0
SHM_IMAGE_GLOB = "ipcns-shm-*.img"
_COMMON_MAGICS = (0x54564319, 0x55105940)
"""CRIU's IMG_COMMON and IMG_SERVICE magics, which precede an image's own."""


def dumped_segments(image_dir: str) -> set[tuple[int, int]]:
    """(key, id) of every SysV segment in the image's IPC namespace images.

    Read here rather than with pycriu, whose 4.2.1 loader reads ``size`` bytes of inline
    contents after every entry while CRIU 4.x keeps them in the pages images
    (``in_pagemaps``). Raises OSError, or ValueError for a malformed image.
    """
    found: set[tuple[int, int]] = set()
    for path in glob.glob(os.path.join(image_dir, SHM_IMAGE_GLOB)):
        with open(path, "rb") as f:
            data = f.read()
        pos = 4
        if len(data) >= 4 and struct.unpack_from("<I", data)[0] in _COMMON_MAGICS:
            pos = 8  # the common magic, then the image's own
        while pos + 4 <= len(data):
            (size,) = struct.unpack_from("<I", data, pos)
            pos += 4
            if pos + size > len(data):
                raise ValueError(f"{path}: entry of {size} bytes past the end at {pos}")
            entry = _fields(data[pos : pos + size], path)  # ipc_shm_entry
            pos += size
            desc = _fields(entry.get(1, b""), path)  # ipc_desc_entry: key = 1, id = 7
            found.add((int(desc.get(1, 0)), int(desc.get(7, 0))))
            if not entry.get(3, 0):  # not in_pagemaps: the contents follow, 4-byte aligned
                pos += -(-int(entry.get(2, 0)) // 4) * 4
    return found


def _fields(message: bytes | int, path: str) -> dict[int, int | bytes]:
    """The varint and length-delimited fields of a protobuf message (last one wins)."""
    if not isinstance(message, bytes):
        raise ValueError(f"{path}: expected a message, found a number")
    fields: dict[int, int | bytes] = {}
    pos = 0
    while pos < len(message):
        tag, pos = _varint(message, pos, path)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            fields[number], pos = _varint(message, pos, path)
        elif wire == 2:
            length, pos = _varint(message, pos, path)
            fields[number] = message[pos : pos + length]
            pos += length
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise ValueError(f"{path}: unexpected protobuf wire type {wire}")
    return fields


def _varint(data: bytes, pos: int, path: str) -> tuple[int, int]:
    value = shift = 0
    while pos < len(data):
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise ValueError(f"{path}: truncated protobuf varint")


def parse_proc_shm(text: str) -> list[tuple[int, int, int]]:
    """(key, id, nattch) of each row of /proc/sysvipc/shm."""
    rows: list[tuple[int, int, int]] = []
    lines = text.splitlines()
    if not lines:
        return rows
    header = lines[0].split()
    at = {name: header.index(name) for name in ("key", "shmid", "nattch")}
    for line in lines[1:]:
        fields = line.split()
        if len(fields) < len(header):
            continue
        key = int(fields[at["key"]]) & 0xFFFFFFFF  # printed signed
        rows.append((key, int(fields[at["shmid"]]), int(fields[at["nattch"]])))
    return rows


def remove_unattached(ns_path: str, segments: Iterable[tuple[int, int]]) -> list[int]:
    """Remove each of SEGMENTS (key, id) that is unattached in the IPC namespace at NS_PATH.

    Runs in a thread of its own that joins the namespace and ends (setns applies to the
    calling thread only). Returns the removed ids; raises OSError.
    """
    wanted = {(key & 0xFFFFFFFF, ident) for key, ident in segments}
    result: dict[str, object] = {}

    def work() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(ns_path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if libc.setns(fd, CLONE_NEWIPC) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({ns_path}): {os.strerror(err)}")
            finally:
                os.close(fd)
            with open("/proc/sysvipc/shm") as f:
                rows = parse_proc_shm(f.read())
            removed = []
            for key, ident, nattch in rows:
                if (key, ident) in wanted and nattch == 0:
                    if libc.shmctl(ident, IPC_RMID, None) != 0:
                        err = ctypes.get_errno()
                        raise OSError(err, f"shmctl({ident}, IPC_RMID): {os.strerror(err)}")
                    removed.append(ident)
            result["removed"] = removed
        except OSError as err:
            result["error"] = err

    thread = threading.Thread(target=work, name="zeropod-sysvipc")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result.get("removed", [])  # type: ignore[return-value]


def ipc_namespace_path(spec: dict) -> str | None:
    """The IPC namespace the container joins (the pod's), from its OCI spec; None when it
    has one of its own (which ends with it, so nothing is left behind)."""
    for ns in spec.get("linux", {}).get("namespaces", ()):
        if ns.get("type") == "ipc":
            return ns.get("path") or None
    return None


def release_dumped_segments(image_dir: str, read_spec: Callable[[], dict]) -> list[int]:
    """After a dump into IMAGE_DIR: free the pod's copies of the segments it holds (the
    container's spec, read by READ_SPEC, says which IPC namespace; read only if needed)."""
    segments = dumped_segments(image_dir)
    if not segments:
        return []
    ns_path = ipc_namespace_path(read_spec())
    return remove_unattached(ns_path, segments) if ns_path is not None else []
