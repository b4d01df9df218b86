"""The SYN record: the eBPF program as assembled, its map entries decoded, and (where this
process may use bpf(2): root, CAP_BPF) the real filter on real listeners."""

from __future__ import annotations

import ipaddress
import socket
import struct
import time

import pytest

from zeropod.sockets import bpf, synlog
from zeropod.sockets.synlog import KEY, VALUE, SynLog, decode

NO_BPF = synlog.unavailable()


def instructions(code: bytes) -> list[tuple[int, int, int, int, int]]:
    out = []
    for at in range(0, len(code), 8):
        op, regs, off, imm = struct.unpack("<BBhi", code[at : at + 8])
        out.append((op, regs & 0xF, regs >> 4, off, imm))
    return out


def test_every_path_ends_keeping_the_whole_packet() -> None:
    code = synlog.program(map_fd=7)
    insns = instructions(code)
    assert len(code) % 8 == 0
    assert insns[-2] == (bpf.MOV32_IMM, 0, 0, 0, -1)  # r0 = 0xffffffff: keep every byte
    assert insns[-1][0] == bpf.EXIT
    assert sum(1 for i in insns if i[0] == bpf.EXIT) == 1
    for at, (op, _, _, off, _) in enumerate(insns):
        if op in (bpf.JEQ_IMM, bpf.JNE_IMM, bpf.JA):
            assert 0 <= at + 1 + off < len(insns) - 1, at  # forward, inside the program
            assert off >= 0
    maps = [i for i in insns if i[0] == bpf.LOAD_IMM64]
    assert maps == [(bpf.LOAD_IMM64, 1, bpf.PSEUDO_MAP_FD, 0, 7)]


def test_labels_must_exist_once() -> None:
    asm = bpf.Asm()
    asm.jump(bpf.JA, "nowhere")
    with pytest.raises(ValueError, match="nowhere"):
        asm.code()
    asm.label("here")
    with pytest.raises(ValueError, match="twice"):
        asm.label("here")


def test_map_entries_decode_to_plain_addresses_and_the_port() -> None:
    mapped = ipaddress.IPv6Address("::ffff:10.88.0.9").packed
    key = KEY.pack(mapped, ipaddress.IPv6Address("::ffff:10.88.0.7").packed, socket.htons(8080))
    got = decode(key, VALUE.pack(123))
    assert got.source == ipaddress.IPv4Address("10.88.0.9")
    assert got.destination == ipaddress.IPv4Address("10.88.0.7")
    assert (got.port, got.at_ns) == (8080, 123)
    v6 = ipaddress.IPv6Address("fd00::9")
    assert decode(KEY.pack(v6.packed, v6.packed, socket.htons(443)), VALUE.pack(1)).source == v6


@pytest.mark.skipif(NO_BPF is not None, reason=f"no bpf(2) for this process: {NO_BPF}")
def test_the_kernel_records_each_syn_and_passes_every_byte() -> None:
    log = SynLog()
    listener = socket.socket(socket.AF_INET6)  # dual stack: IPv4 clients too
    try:
        listener.bind(("::", 0))
        listener.listen(8)
        log.attach(listener)
        port = listener.getsockname()[1]
        before = time.monotonic_ns()
        for host in ("127.0.0.1", "::1", "127.0.0.5"):
            with socket.create_connection((host, port), timeout=5) as client:
                client.sendall(b"x" * 100_000)
                conn, _ = listener.accept()
                with conn:
                    got = b""
                    while len(got) < 100_000:
                        got += conn.recv(65536)
                    assert got == b"x" * 100_000  # the filter keeps everything
                    conn.sendall(b"ok")
                assert client.recv(2) == b"ok"
        syns = {(str(s.source), str(s.destination), s.port): s.at_ns for s in log.syns()}
        assert set(syns) == {
            ("127.0.0.1", "127.0.0.1", port),
            ("::1", "::1", port),
            ("127.0.0.1", "127.0.0.5", port),
        }  # one per SYN: neither the handshake's last ACK nor data added any
        assert all(before <= at <= time.monotonic_ns() for at in syns.values())
    finally:
        listener.close()
        log.close()
    assert log.syns() == []


@pytest.mark.skipif(NO_BPF is not None, reason=f"no bpf(2) for this process: {NO_BPF}")
def test_a_full_record_forgets_the_oldest() -> None:
    log = SynLog(entries=4)
    with socket.socket() as listener:
        listener.bind(("0.0.0.0", 0))
        listener.listen(16)
        log.attach(listener)
        port = listener.getsockname()[1]
        for last in range(10, 20):
            with socket.create_connection((f"127.0.0.{last}", port), timeout=5):
                listener.accept()[0].close()
        destinations = {str(s.destination) for s in log.syns()}
    log.close()
    assert 0 < len(destinations) <= 4 and "127.0.0.19" in destinations
