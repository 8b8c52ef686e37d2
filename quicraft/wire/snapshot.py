"""Snapshots in chunks: how a SNAPSHOT message too big for one frame crosses a stream.

encode_message() carries snapshot data inline, which suits small and in-memory state machines.
For anything larger the sender opens a stream of its own, writes a header frame, the chunk frames,
and ends the stream:

    header = the raft message map (wire/raft.py) whose snapshot has "size" (total data bytes)
             where the inline form has "data"
    chunk  = {"v": 1, "offset": u64, "data": bytes}

Rules:
- Chunks come in order: each one's offset is the count of bytes before it, none is empty, and
  together they are exactly "size" bytes. (QUIC keeps a stream in order; the offsets catch a
  sender or relay bug, not the network.)
- The receiver bounds the total (`max_size`) on reading the header, before any data arrives.
- SnapshotAssembler yields the whole Message, data joined, once the last byte is in; whether a
  stream that ends early is an error or a retry is the transport's call (`complete` is False).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

from ..core.types import Message, MessageType, Snapshot
from .errors import ProtocolError
from .fields import (
    U64_MAX,
    VERSION,
    encode_item,
    get_bytes,
    get_traceparent,
    get_uint,
    open_envelope,
)
from .raft import SCALAR_FIELDS, message_from_map, message_map

#: Data bytes per chunk frame: well under the 16 MiB frame limit, big enough to amortise framing.
CHUNK_SIZE = 1024 * 1024
#: Default bound of one snapshot's data on the receiving side.
MAX_SNAPSHOT = 1 << 32

_HEADER = "snapshot header"
_CHUNK = "snapshot chunk"
# A header is a raft message map without entries.
_HEADER_FIELDS = SCALAR_FIELDS | {"snapshot"}
_CHUNK_FIELDS = frozenset({"offset", "data"})


def encode_snapshot_header(m: Message, *, traceparent: str | None = None) -> bytes:
    """The first frame of a chunked snapshot: `m` without its snapshot's data, but its size."""
    if m.type is not MessageType.SNAPSHOT or m.snapshot is None:
        raise ProtocolError(f"{_HEADER}: {m.type.value} message without a snapshot")
    return encode_item(message_map(m, traceparent, header=True))


def encode_snapshot_chunk(offset: int, data: bytes) -> bytes:
    if not 0 <= offset <= U64_MAX or not data:
        raise ProtocolError(f"{_CHUNK}: needs an offset in 0..2**64-1 and some data")
    return encode_item({"v": VERSION, "offset": offset, "data": data})


def decode_snapshot_chunk(payload: bytes) -> tuple[int, bytes]:
    """(offset, data) of one chunk frame."""
    raw = open_envelope(payload, _CHUNK, _CHUNK_FIELDS)
    if "tp" in raw:
        raise ProtocolError(f"{_CHUNK}: trace context belongs in the header")
    offset = get_uint(raw, "offset", _CHUNK)
    data = get_bytes(raw, "data", _CHUNK, max_len=U64_MAX)
    if not data:
        raise ProtocolError(f"{_CHUNK}: empty chunk at offset {offset}")
    return offset, data


def snapshot_frames(
    m: Message, *, traceparent: str | None = None, chunk_size: int = CHUNK_SIZE
) -> Iterator[bytes]:
    """Every payload of a chunked snapshot in order, header first (frame each, then end)."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be positive")
    yield encode_snapshot_header(m, traceparent=traceparent)
    assert m.snapshot is not None  # checked by encode_snapshot_header
    data = m.snapshot.data
    for offset in range(0, len(data), chunk_size):
        yield encode_snapshot_chunk(offset, data[offset : offset + chunk_size])


class SnapshotAssembler:
    """The receiving side: built from the header frame, fed each chunk frame."""

    __slots__ = ("_chunks", "_message", "received", "size", "traceparent")

    def __init__(self, header: bytes, *, max_size: int = MAX_SNAPSHOT) -> None:
        raw = open_envelope(header, _HEADER, _HEADER_FIELDS)
        self.traceparent = get_traceparent(raw, _HEADER)
        if raw.get("type") != MessageType.SNAPSHOT.value:
            raise ProtocolError(f"{_HEADER}: message type must be 'snapshot'")
        self._message, self.size = message_from_map(raw, header=True)
        if self.size > max_size:
            raise ProtocolError(f"{_HEADER}: {self.size} bytes exceeds the limit of {max_size}")
        self.received = 0
        self._chunks: list[bytes] = []

    @property
    def complete(self) -> bool:
        return self.received == self.size

    def feed(self, chunk: bytes) -> None:
        """Take the next chunk frame; ProtocolError if it is malformed, out of order or too much."""
        offset, data = decode_snapshot_chunk(chunk)
        if offset != self.received:
            raise ProtocolError(f"{_CHUNK}: offset {offset}, expected {self.received}")
        if len(data) > self.size - self.received:
            raise ProtocolError(f"{_CHUNK}: data beyond the announced {self.size} bytes")
        self._chunks.append(data)
        self.received += len(data)

    def message(self) -> Message:
        """The SNAPSHOT message with all its data; ProtocolError while chunks are missing."""
        if not self.complete:
            raise ProtocolError(f"{_HEADER}: {self.received} of {self.size} bytes received")
        snap = self._message.snapshot
        assert snap is not None  # message_from_map requires one on SNAPSHOT
        data = b"".join(self._chunks)
        self._chunks = [data]  # calling twice costs no second join
        return replace(self._message, snapshot=Snapshot(snap.meta, data))
