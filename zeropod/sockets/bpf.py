"""The little of eBPF that zeropod needs, with no compiler and no library: an assembler for
the instructions :mod:`.synlog` uses, and the ``bpf(2)`` calls to create a hash map, load a
socket filter program and read the map (through ctypes: Python has no binding for it).

An instruction is 8 bytes, ``struct bpf_insn``: opcode, the destination register in the low
nibble and the source register in the high nibble of the second byte (little-endian
machines: x86_64 and aarch64, the two this knows the syscall number of), a signed 16-bit
jump or memory offset and a signed 32-bit immediate. Jumps name a label; :meth:`Asm.code`
turns labels into offsets, counted in instructions after the jump.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import struct
from dataclasses import dataclass, field

SYS_BPF = {"x86_64": 321, "aarch64": 280}
"""bpf(2)'s number per machine (little-endian ones only: the instruction layout below)."""

MAP_CREATE, MAP_LOOKUP_ELEM, MAP_GET_NEXT_KEY, PROG_LOAD = 0, 1, 4, 5
MAP_TYPE_LRU_HASH = 9
PROG_TYPE_SOCKET_FILTER = 1
PSEUDO_MAP_FD = 1

# Opcodes (linux/bpf.h, linux/bpf_common.h): class | size-or-op | source.
MOV64_REG, MOV64_IMM, MOV32_IMM = 0xBF, 0xB7, 0xB4
ADD64_IMM, AND64_IMM, RSH64_IMM = 0x07, 0x57, 0x77
LOAD_BYTE = 0x71  # dst = *(u8 *)(src + off)
STORE_DW_IMM, STORE_H_IMM = 0x7A, 0x6A  # *(size *)(dst + off) = imm
STORE_DW_REG = 0x7B  # *(u64 *)(dst + off) = src
JEQ_IMM, JNE_IMM, JA = 0x15, 0x55, 0x05
CALL, EXIT = 0x85, 0x95
LOAD_IMM64 = 0x18

FP = 10
"""The read-only frame pointer; the program's stack is the 512 bytes below it."""

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


def insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    """One ``struct bpf_insn``."""
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


@dataclass
class Asm:
    """A program being written: instructions, with jumps to labels resolved by :meth:`code`."""

    _insns: list[bytes | tuple[int, int, int, str]] = field(default_factory=list)
    _labels: dict[str, int] = field(default_factory=dict)

    def add(self, *insns: bytes) -> None:
        self._insns.extend(insns)

    def jump(self, code: int, to: str, dst: int = 0, imm: int = 0) -> None:
        """A conditional (``code``: JEQ_IMM, JNE_IMM) or plain (JA) jump to label ``to``."""
        self._insns.append((code, dst, imm, to))

    def label(self, name: str) -> None:
        if name in self._labels:
            raise ValueError(f"label {name!r} defined twice")
        self._labels[name] = len(self._insns)

    def load_map_fd(self, dst: int, map_fd: int) -> None:
        """``dst`` = the map ``map_fd`` (a two-slot instruction the kernel rewrites)."""
        self.add(insn(LOAD_IMM64, dst, PSEUDO_MAP_FD, imm=map_fd), insn(0))

    def code(self) -> bytes:
        out = []
        for at, item in enumerate(self._insns):
            if isinstance(item, bytes):
                out.append(item)
                continue
            code, dst, imm, to = item
            if to not in self._labels:
                raise ValueError(f"jump to undefined label {to!r}")
            out.append(insn(code, dst, off=self._labels[to] - at - 1, imm=imm))
        return b"".join(out)


def _bpf(cmd: int, attr: ctypes.Array[ctypes.c_char], what: str) -> int:
    number = SYS_BPF.get(platform.machine())
    if number is None:
        raise OSError(0, f"bpf(2): no syscall number known for {platform.machine()}")
    result = _syscall(number, cmd, attr, len(attr))
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bpf(2) {what}: {os.strerror(err)}")
    return result


def create_lru_hash(key_size: int, value_size: int, entries: int) -> int:
    """A new LRU hash map's fd (full, it forgets its least recently updated entry)."""
    attr = struct.pack("<IIIII", MAP_TYPE_LRU_HASH, key_size, value_size, entries, 0)
    return _bpf(MAP_CREATE, ctypes.create_string_buffer(attr.ljust(72, b"\0")), "map create")


def load_socket_filter(code: bytes, license_name: str = "Apache-2.0") -> int:
    """Load ``code`` as a socket filter program; its fd. A program the verifier refuses
    raises OSError with the verifier's last lines."""
    insns = ctypes.create_string_buffer(code, len(code))
    license_buf = ctypes.create_string_buffer(license_name.encode())

    def load(log: ctypes.Array[ctypes.c_char] | None) -> int:
        attr = struct.pack(
            "<IIQQIIQ",
            PROG_TYPE_SOCKET_FILTER,
            len(code) // 8,
            ctypes.addressof(insns),
            ctypes.addressof(license_buf),
            1 if log is not None else 0,
            len(log) if log is not None else 0,
            ctypes.addressof(log) if log is not None else 0,
        )
        return _bpf(PROG_LOAD, ctypes.create_string_buffer(attr.ljust(128, b"\0")), "load")

    try:
        return load(None)
    except OSError as err:
        if err.errno != 13 and err.errno != 22:  # EACCES, EINVAL: the verifier says why
            raise
        log = ctypes.create_string_buffer(65536)
        with contextlib.suppress(OSError):  # it fails again; the log says why
            load(log)
        said = log.value.decode(errors="replace").strip().splitlines()[-3:]
        raise OSError(err.errno, f"{err.strerror}: {' / '.join(said)}") from err


def map_items(map_fd: int, key_size: int, value_size: int) -> list[tuple[bytes, bytes]]:
    """Every (key, value) of a hash map (an entry deleted meanwhile is skipped)."""
    items: list[tuple[bytes, bytes]] = []
    key = ctypes.create_string_buffer(key_size)
    next_key = ctypes.create_string_buffer(key_size)
    value = ctypes.create_string_buffer(value_size)
    first = True
    while True:
        attr = struct.pack(
            "<IIQQ", map_fd, 0, 0 if first else ctypes.addressof(key), ctypes.addressof(next_key)
        )
        try:
            _bpf(MAP_GET_NEXT_KEY, ctypes.create_string_buffer(attr), "next key")
        except OSError as err:
            if err.errno == 2:  # ENOENT: past the last key
                return items
            raise
        first = False
        ctypes.memmove(key, next_key, key_size)
        attr = struct.pack("<IIQQQ", map_fd, 0, ctypes.addressof(key), ctypes.addressof(value), 0)
        try:
            _bpf(MAP_LOOKUP_ELEM, ctypes.create_string_buffer(attr), "lookup")
        except OSError as err:
            if err.errno == 2:
                continue
            raise
        items.append((key.raw, value.raw))
