"""gRPC status codes and the ``google.rpc.Status`` carried in ttrpc responses.

The ttrpc .proto that Debian ships declares ``Status`` with only its ``code`` field, so the
generated class cannot carry the message. The full message (code = 1, message = 2,
details = 3) is encoded and decoded here by hand; the generated ``Response.status`` keeps the
extra fields as unknown fields, which protobuf preserves on re-serialisation.
"""

from __future__ import annotations

import enum

from zeropod._gen.ttrpc import request_pb2


class Code(enum.IntEnum):
    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class TtrpcError(Exception):
    """A call failed with a non-OK status (from the peer, or to be sent to the peer)."""

    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        try:
            name = Code(self.code).name
        except ValueError:
            name = str(self.code)
        return f"ttrpc error {name}: {self.message}"


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int32 is sent as a 10-byte two's complement varint
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated or overlong varint in status")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def encode_status(code: int, message: str = "") -> bytes:
    """Serialise a google.rpc.Status without details."""
    out = b""
    if code:
        out += b"\x08" + _varint(code)
    if message:
        raw = message.encode("utf-8")
        out += b"\x12" + _varint(len(raw)) + raw
    return out


def decode_status(data: bytes) -> tuple[int, str]:
    """Parse a google.rpc.Status into (code, message); details are skipped."""
    code = 0
    message = ""
    pos = 0
    try:
        while pos < len(data):
            key, pos = _read_varint(data, pos)
            field, wire = key >> 3, key & 7
            if wire == 0:
                value, pos = _read_varint(data, pos)
                if field == 1:
                    code = value - (1 << 64) if value >= 1 << 63 else value
            elif wire == 2:
                size, pos = _read_varint(data, pos)
                if field == 2:
                    message = data[pos : pos + size].decode("utf-8", "replace")
                pos += size
            elif wire == 1:
                pos += 8
            elif wire == 5:
                pos += 4
            else:
                raise ValueError(f"unsupported wire type {wire} in status")
    except ValueError as err:
        return int(Code.UNKNOWN), f"undecodable status: {err}"
    return code, message


def error_response(code: int, message: str) -> bytes:
    """A serialised ttrpc Response carrying only an error status."""
    resp = request_pb2.Response()
    resp.status.MergeFromString(encode_status(code, message))
    return resp.SerializeToString()


def ok_response(payload: bytes) -> bytes:
    """A serialised ttrpc Response carrying a payload and no status (OK)."""
    return request_pb2.Response(payload=payload).SerializeToString()


def parse_response(data: bytes) -> bytes:
    """Return the payload of a serialised Response, or raise TtrpcError for a non-OK status."""
    resp = request_pb2.Response.FromString(data)
    if resp.HasField("status") and resp.status.code:
        raise TtrpcError(*decode_status(resp.status.SerializeToString()))
    return resp.payload
