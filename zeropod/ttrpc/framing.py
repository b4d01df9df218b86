"""ttrpc message framing: the 10-byte header and an incremental decoder.

Header (big endian): uint32 payload length, uint32 stream id, uint8 type, uint8 flags.
Types: 1 request, 2 response, 3 data. Payloads larger than ttrpc's default limit (4 MiB)
and unknown types are protocol errors and raise :class:`FrameError`.
"""

from __future__ import annotations

import enum
import struct
from typing import NamedTuple

HEADER = struct.Struct(">IIBB")
HEADER_SIZE = HEADER.size  # 10
MAX_MESSAGE = 4 << 20

# Stream flags (ttrpc 1.2 streaming); unary calls use none of them.
FLAG_REMOTE_CLOSED = 0x1
FLAG_REMOTE_OPEN = 0x2
FLAG_NO_DATA = 0x4


class FrameType(enum.IntEnum):
    REQUEST = 1
    RESPONSE = 2
    DATA = 3


_TYPES = frozenset(int(t) for t in FrameType)


class FrameError(Exception):
    """A frame violates the protocol (oversize, unknown type); the connection is unusable."""


class Frame(NamedTuple):
    stream_id: int
    type: int
    flags: int
    payload: bytes


def encode_frame(stream_id: int, frame_type: int, payload: bytes, flags: int = 0) -> bytes:
    """Encode one frame; raises FrameError if the payload exceeds MAX_MESSAGE."""
    if len(payload) > MAX_MESSAGE:
        raise FrameError(f"message of {len(payload)} bytes exceeds limit of {MAX_MESSAGE}")
    return HEADER.pack(len(payload), stream_id, frame_type, flags) + payload


class FrameDecoder:
    """Turns an arbitrary split of the byte stream into whole frames.

    ``feed`` accepts any chunk (one byte, several frames, a frame and a half) and returns the
    frames completed by it. After a FrameError the decoder must not be fed again.
    """

    __slots__ = ("_buf", "_need")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._need: tuple[int, int, int, int] | None = None  # header of the pending frame

    def feed(self, data: bytes) -> list[Frame]:
        buf = self._buf
        buf += data
        frames: list[Frame] = []
        pos = 0
        end = len(buf)
        while True:
            hdr = self._need
            if hdr is None:
                if end - pos < HEADER_SIZE:
                    break
                length, sid, ftype, flags = HEADER.unpack_from(buf, pos)
                if length > MAX_MESSAGE:
                    raise FrameError(
                        f"frame on stream {sid} announces {length} bytes, limit is {MAX_MESSAGE}"
                    )
                if ftype not in _TYPES:
                    raise FrameError(f"frame on stream {sid} has unknown type {ftype}")
                pos += HEADER_SIZE
                hdr = self._need = (length, sid, ftype, flags)
            length = hdr[0]
            if end - pos < length:
                break
            frames.append(Frame(hdr[1], hdr[2], hdr[3], bytes(buf[pos : pos + length])))
            pos += length
            self._need = None
        if pos:
            del buf[:pos]
        return frames

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete frame."""
        return len(self._buf)
