"""ttrpc over asyncio unix sockets.

A small implementation of containerd's ttrpc wire protocol: 10-byte framed protobuf
``ttrpc.Request``/``ttrpc.Response`` messages on a stream socket. It knows nothing of
containerd: services and methods are plain strings and payloads plain bytes.
"""

from zeropod.ttrpc.client import Client, ConnectionClosed
from zeropod.ttrpc.framing import MAX_MESSAGE, FrameDecoder, FrameError, FrameType, encode_frame
from zeropod.ttrpc.server import Call, RawResponse, Server
from zeropod.ttrpc.status import Code, TtrpcError

__all__ = [
    "MAX_MESSAGE",
    "Call",
    "Client",
    "Code",
    "ConnectionClosed",
    "FrameDecoder",
    "FrameError",
    "FrameType",
    "RawResponse",
    "Server",
    "TtrpcError",
    "encode_frame",
]
