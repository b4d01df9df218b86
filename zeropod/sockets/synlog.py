"""Who knocked on a sleeping pod's held ports: the kernel records each SYN, no walk needed.

A wake's first step is the probe check: is the connection a kubelet probe from the node
(answer it, stay asleep) or a client (wake)? Reading who is queued with sock_diag makes the
kernel walk its whole TCP connection hash, which every netns shares by default: ~3 ms on a
24 GiB node with nothing in it, more on a busy one, on every wake's critical path.

:class:`SynLog` is a socket filter program attached to the daemon's copies of a pod's held
listeners (``SO_ATTACH_BPF``: the filter is the socket's, systemd's fd sees it too). For a
listener the kernel runs it on each SYN and on the ACK that completes a handshake. For every
pure SYN (SYN set, ACK clear) it writes source address, destination address and port, with
the time (``bpf_ktime_get_ns``, CLOCK_MONOTONIC), into an LRU hash map of the pod; it always
returns "keep the whole packet", so it never drops or changes anything. Reading the map
costs tens of microseconds.

What the map does not know, and so what stays with sock_diag: a SYN that reached another
socket of the reuseport group (the app's, before it was dumped, whose queue moved to the
held socket) or came before the filter was attached. The watch therefore takes only a
*recent client SYN* as proof (wake at once); anything else (probes, an empty map) is
judged by sock_diag exactly as before.

Connections accepted from a listener inherit its filter: the queued clients handed to the
woken app run it on each of their packets, which exits after two loads unless the packet
is a pure SYN. Connections the app accepts on its own listener later never see it.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from dataclasses import dataclass

from zeropod.sockets import bpf
from zeropod.sockets.bpf import (
    ADD64_IMM,
    AND64_IMM,
    CALL,
    EXIT,
    FP,
    JA,
    JEQ_IMM,
    JNE_IMM,
    LOAD_BYTE,
    MOV32_IMM,
    MOV64_IMM,
    MOV64_REG,
    RSH64_IMM,
    STORE_DW_IMM,
    STORE_DW_REG,
    STORE_H_IMM,
    Asm,
    insn,
)

SO_ATTACH_BPF = 50
ENTRIES = 256
"""Distinct (source, destination, port) a pod's map keeps: the least recently seen go."""
KEY = struct.Struct("<16s16sH6x")
"""Source and destination as IPv6 (IPv4 mapped), destination port (network order)."""
VALUE = struct.Struct("<Q")
"""When the last such SYN came: CLOCK_MONOTONIC nanoseconds."""

FN_MAP_UPDATE_ELEM, FN_KTIME_GET_NS, FN_SKB_LOAD_BYTES, FN_SKB_LOAD_BYTES_RELATIVE = 2, 5, 26, 68
HDR_START_NET = 1
TCP_SYN, TCP_ACK = 0x02, 0x10
# Stack: the key at FP-40 (source -40, destination -24, port -8, padding -6), the value at
# FP-48, one scratch byte at FP-56.
K_SRC, K_DST, K_PORT, VAL, SCRATCH = -40, -24, -8, -48, -56
CTX = 6
"""The register that keeps the packet (r1 at entry; r1-r5 are clobbered by calls)."""


@dataclass(frozen=True)
class Syn:
    """The last SYN from ``source`` to ``destination``:``port``, at ``at_ns`` (monotonic)."""

    source: ipaddress.IPv4Address | ipaddress.IPv6Address
    destination: ipaddress.IPv4Address | ipaddress.IPv6Address
    port: int
    at_ns: int

    def describe(self) -> str:
        return f"a SYN from {self.source} to port {self.port}"


def _plain(raw: bytes) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    address = ipaddress.IPv6Address(raw)
    return address.ipv4_mapped or address


def decode(key: bytes, value: bytes) -> Syn:
    """A map entry as a :class:`Syn`."""
    source, destination, port = KEY.unpack(key)
    (at_ns,) = VALUE.unpack(value)
    return Syn(_plain(source), _plain(destination), socket.ntohs(port), at_ns)


def _load(asm: Asm, helper: int, offset: int, to: int, size: int, relative: bool) -> None:
    """r0 = helper(packet, offset, FP+to, size[, from the network header]); jump to "keep"
    unless it returned 0."""
    asm.add(
        insn(MOV64_REG, 1, CTX),
        insn(MOV64_IMM, 2, imm=offset),
        insn(MOV64_REG, 3, FP),
        insn(ADD64_IMM, 3, imm=to),
        insn(MOV64_IMM, 4, imm=size),
    )
    if relative:
        asm.add(insn(MOV64_IMM, 5, imm=HDR_START_NET))
    asm.add(insn(CALL, imm=helper))
    asm.jump(JNE_IMM, "keep", dst=0, imm=0)


def program(map_fd: int) -> bytes:
    """The filter: record each pure SYN in map ``map_fd``; always keep the packet.

    When a TCP socket's filter runs, the packet's data starts at the TCP header (so the
    flags are byte 13) and the network header is reached with the ``_relative`` helper.
    """
    asm = Asm()
    asm.add(insn(MOV64_REG, CTX, 1))
    _load(asm, FN_SKB_LOAD_BYTES, 13, SCRATCH, 1, relative=False)
    asm.add(insn(LOAD_BYTE, 2, FP, SCRATCH), insn(AND64_IMM, 2, imm=TCP_SYN | TCP_ACK))
    asm.jump(JNE_IMM, "keep", dst=2, imm=TCP_SYN)
    for off in (K_SRC, K_SRC + 8, K_DST, K_DST + 8, K_PORT):
        asm.add(insn(STORE_DW_IMM, FP, off=off, imm=0))
    _load(asm, FN_SKB_LOAD_BYTES, 2, K_PORT, 2, relative=False)  # destination port
    _load(asm, FN_SKB_LOAD_BYTES_RELATIVE, 0, SCRATCH, 1, relative=True)
    asm.add(insn(LOAD_BYTE, 2, FP, SCRATCH), insn(RSH64_IMM, 2, imm=4))  # IP version
    asm.jump(JEQ_IMM, "v6", dst=2, imm=6)
    asm.jump(JNE_IMM, "keep", dst=2, imm=4)
    # IPv4: as ::ffff:a.b.c.d, the addresses at bytes 12 and 16 of the header.
    asm.add(
        insn(STORE_H_IMM, FP, off=K_SRC + 10, imm=0xFFFF),
        insn(STORE_H_IMM, FP, off=K_DST + 10, imm=0xFFFF),
    )
    _load(asm, FN_SKB_LOAD_BYTES_RELATIVE, 12, K_SRC + 12, 4, relative=True)
    _load(asm, FN_SKB_LOAD_BYTES_RELATIVE, 16, K_DST + 12, 4, relative=True)
    asm.jump(JA, "record")
    asm.label("v6")  # both addresses, 32 bytes from byte 8 of the header
    _load(asm, FN_SKB_LOAD_BYTES_RELATIVE, 8, K_SRC, 32, relative=True)
    asm.label("record")
    asm.add(insn(CALL, imm=FN_KTIME_GET_NS), insn(STORE_DW_REG, FP, 0, off=VAL))
    asm.load_map_fd(1, map_fd)
    asm.add(
        insn(MOV64_REG, 2, FP),
        insn(ADD64_IMM, 2, imm=K_SRC),
        insn(MOV64_REG, 3, FP),
        insn(ADD64_IMM, 3, imm=VAL),
        insn(MOV64_IMM, 4, imm=0),  # BPF_ANY: add or overwrite
        insn(CALL, imm=FN_MAP_UPDATE_ELEM),
    )
    asm.label("keep")
    asm.add(insn(MOV32_IMM, 0, imm=-1), insn(EXIT))  # 0xffffffff bytes: the whole packet
    return asm.code()


class SynLog:
    """One pod's SYN record: a map and the filter program writing it (both fds owned here).

    Raises OSError when the kernel refuses (no bpf(2) for this process: seccomp, no
    CAP_BPF; an unknown machine): the caller then judges every wake with sock_diag.
    """

    def __init__(self, entries: int = ENTRIES) -> None:
        self._map_fd = bpf.create_lru_hash(KEY.size, VALUE.size, entries)
        try:
            self._prog_fd = bpf.load_socket_filter(program(self._map_fd))
        except OSError:
            os.close(self._map_fd)
            raise
        self.closed = False

    def attach(self, sock: socket.socket) -> None:
        """Run the filter on ``sock`` (replacing any filter it had)."""
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_BPF, self._prog_fd)

    def syns(self) -> list[Syn]:
        """Every SYN recorded, the last one per (source, destination, port)."""
        if self.closed:
            return []
        return [decode(k, v) for k, v in bpf.map_items(self._map_fd, KEY.size, VALUE.size)]

    def close(self) -> None:
        """Release the fds (sockets the filter is attached to keep the program and map)."""
        if not self.closed:
            self.closed = True
            os.close(self._prog_fd)
            os.close(self._map_fd)


def unavailable() -> str | None:
    """Why a :class:`SynLog` cannot be made here, or None when it can."""
    try:
        SynLog(entries=1).close()
    except OSError as err:
        return str(err)
    return None
