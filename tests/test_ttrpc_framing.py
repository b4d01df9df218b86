"""Unit tests for ttrpc framing and the hand-coded google.rpc.Status."""

import struct

import pytest

from zeropod.ttrpc import MAX_MESSAGE, FrameDecoder, FrameError, FrameType, encode_frame
from zeropod.ttrpc.status import (
    Code,
    TtrpcError,
    decode_status,
    encode_status,
    error_response,
    ok_response,
    parse_response,
)

FRAMES = [
    (1, FrameType.REQUEST, b"hello", 0),
    (2, FrameType.RESPONSE, b"", 0),
    (3, FrameType.DATA, b"x" * 70000, 4),
    (0xFFFFFFFF, FrameType.REQUEST, bytes(range(256)), 2),
]


def test_header_layout() -> None:
    assert encode_frame(7, FrameType.RESPONSE, b"ab", 1) == b"\0\0\0\x02\0\0\0\x07\x02\x01ab"


@pytest.mark.parametrize("chunk", [1, 3, 10, 11, 4096, 1 << 20], ids=lambda c: f"chunk{c}")
def test_decoder_any_split(chunk: int) -> None:
    stream = b"".join(encode_frame(s, t, p, f) for s, t, p, f in FRAMES)
    dec = FrameDecoder()
    got = []
    for i in range(0, len(stream), chunk):
        got.extend(dec.feed(stream[i : i + chunk]))
    assert [(f.stream_id, f.type, f.payload, f.flags) for f in got] == FRAMES
    assert dec.buffered == 0


def test_several_frames_in_one_read() -> None:
    dec = FrameDecoder()
    stream = b"".join(encode_frame(s, t, p, f) for s, t, p, f in FRAMES)
    assert len(dec.feed(stream + stream[:5])) == len(FRAMES)
    assert dec.buffered == 5


def test_max_size_accepted() -> None:
    dec = FrameDecoder()
    (frame,) = dec.feed(encode_frame(1, FrameType.REQUEST, b"\0" * MAX_MESSAGE))
    assert len(frame.payload) == MAX_MESSAGE


@pytest.mark.parametrize(
    ("header", "match"),
    [
        (struct.pack(">IIBB", MAX_MESSAGE + 1, 1, 1, 0), "limit"),
        (struct.pack(">IIBB", 0xFFFFFFFF, 1, 2, 0), "limit"),
        (struct.pack(">IIBB", 4, 1, 0, 0), "unknown type 0"),
        (struct.pack(">IIBB", 4, 1, 9, 0), "unknown type 9"),
    ],
    ids=["oversize", "huge", "type0", "type9"],
)
def test_malformed_header(header: bytes, match: str) -> None:
    with pytest.raises(FrameError, match=match):
        FrameDecoder().feed(header)


def test_encode_oversize() -> None:
    with pytest.raises(FrameError):
        encode_frame(1, FrameType.REQUEST, b"\0" * (MAX_MESSAGE + 1))


@pytest.mark.parametrize(
    ("code", "message"),
    [(0, ""), (5, "not found"), (12, ""), (-1, "negative"), (2, "ünïcode ✓")],
)
def test_status_round_trip(code: int, message: str) -> None:
    assert decode_status(encode_status(code, message)) == (code, message)


def test_response_helpers() -> None:
    assert parse_response(ok_response(b"pay")) == b"pay"
    with pytest.raises(TtrpcError) as info:
        parse_response(error_response(Code.NOT_FOUND, "container x: not found"))
    assert (info.value.code, info.value.message) == (5, "container x: not found")
    assert "NOT_FOUND" in str(info.value)


def test_truncated_status() -> None:
    assert decode_status(b"\x08")[0] == Code.UNKNOWN
