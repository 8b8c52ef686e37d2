"""The binary layout of a quicraft LevelDB store: keys, and the records stored under them.

Rules of this module:
- Every value is `crc32 (4 bytes, big-endian) || payload`, and the checksum covers the key
  followed by the payload. A damaged value fails it, and so does an intact value that ended up
  under another key (a log entry "moved" to another index), because the key takes part.
- CRC-32 (zlib's, in C) is the right strength here: it catches accidental damage — bit rot,
  torn or misdirected writes, a hand edit — at gigabytes a second, and the standard library has
  it. It is not meant to stop someone who can write the files on purpose; nothing here is.
- Integers are fixed-width big-endian (struct); log keys are `E || index (8 bytes)` so that key
  order is index order and a range of the log is a range of keys.
- Decoding raises RecordError naming the record ("log entry 42: checksum mismatch"); the backend
  adds the path and turns it into a CorruptionError.
- Encoding is on the hot path (one call per entry per Ready): one struct pack, one CRC pass
  over the data and one concatenation per entry, nothing more.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from zlib import crc32

from quicraft.core import Entry, EntryType, HardState, Snapshot, SnapshotMeta
from quicraft.core.types import decode_membership, encode_membership

FORMAT_VERSION = 1
MAGIC = b"quicraft-store"
#: Snapshot data is stored in pieces of this size, so no single LevelDB value is huge.
CHUNK_SIZE = 1 << 20

VERSION_KEY = b"V"  # MAGIC || format version
HARD_STATE_KEY = b"H"  # term, commit, vote
SNAPSHOT_KEY = b"S"  # snapshot index, term, chunk count, length, data crc, membership
CHUNK_PREFIX = b"C"  # C || snapshot index (8) || chunk number (4) -> chunk bytes
ENTRY_PREFIX = b"E"  # E || index (8) -> term, type, data
META_PREFIX = b"M"  # M || UTF-8 name -> value

_CRC = struct.Struct(">I")
_U32 = struct.Struct(">I")
_ENTRY_KEY = struct.Struct(">cQ")
_CHUNK_KEY = struct.Struct(">cQI")
_ENTRY = struct.Struct(">IQB")  # crc, term, type; data follows
_ENTRY_BODY = struct.Struct(">QB")
_HARD_STATE = struct.Struct(">QQB")  # term, commit, has vote; vote follows
_SNAPSHOT = struct.Struct(">QQIQI")  # index, term, chunks, length, data crc; membership follows
_LAST_U64 = (1 << 64) - 1
_ENTRY_TYPES = {int(t): t for t in EntryType}


class RecordError(ValueError):
    """A stored record is damaged; the message names it but not the store."""


@dataclass(frozen=True, slots=True)
class SnapshotHeader:
    """The snapshot record: what the chunks must add up to."""

    meta: SnapshotMeta
    chunks: int
    length: int
    crc: int


def seal(key: bytes, payload: bytes) -> bytes:
    return _CRC.pack(crc32(payload, crc32(key))) + payload


def unseal(key: bytes, value: bytes, what: str) -> memoryview:
    """The payload of a record, once its checksum (over key and payload) is verified."""
    if len(value) < _CRC.size:
        raise RecordError(f"{what}: truncated record")
    view = memoryview(value)
    if crc32(view[_CRC.size :], crc32(key)) != _CRC.unpack_from(value)[0]:
        raise RecordError(f"{what}: checksum mismatch")
    return view[_CRC.size :]


# -- version ----------------------------------------------------------------------------------


def encode_version() -> bytes:
    return seal(VERSION_KEY, MAGIC + _U32.pack(FORMAT_VERSION))


def decode_version(value: bytes) -> int | None:
    """The format version, or None if the record is not quicraft's at all.

    A record of exactly our length whose magic does not match is ours, damaged: another
    program's value under the one-byte key "V" is not likely to be 22 bytes long.
    """
    if value[_CRC.size : _CRC.size + len(MAGIC)] != MAGIC:
        if len(value) == _CRC.size + len(MAGIC) + _U32.size:
            unseal(VERSION_KEY, value, "format version")  # fails: says checksum mismatch
            raise RecordError("format version: damaged magic")
        return None
    payload = unseal(VERSION_KEY, value, "format version")
    if len(payload) != len(MAGIC) + _U32.size:
        raise RecordError("format version: malformed record")
    return int(_U32.unpack_from(payload, len(MAGIC))[0])


# -- log entries ------------------------------------------------------------------------------


def entry_key(index: int) -> bytes:
    return _ENTRY_KEY.pack(ENTRY_PREFIX, index)


def entry_index(key: bytes) -> int:
    if len(key) != _ENTRY_KEY.size:
        raise RecordError(f"log entry key {key.hex()}: malformed key")
    return int(_ENTRY_KEY.unpack(key)[1])


def encode_entry(entry: Entry) -> tuple[bytes, bytes]:
    key = _ENTRY_KEY.pack(ENTRY_PREFIX, entry.index)
    data = entry.data
    crc = crc32(data, crc32(_ENTRY_BODY.pack(entry.term, entry.type), crc32(key)))
    return key, _ENTRY.pack(crc, entry.term, entry.type) + data


def decode_entry(key: bytes, value: bytes) -> Entry:
    index = entry_index(key)
    what = f"log entry {index}"
    if len(value) < _ENTRY.size:
        raise RecordError(f"{what}: truncated record")
    payload = unseal(key, value, what)
    term, type_ = _ENTRY_BODY.unpack_from(payload)
    entry_type = _ENTRY_TYPES.get(type_)
    if entry_type is None:
        raise RecordError(f"{what}: unknown entry type {type_}")
    return Entry(term, index, entry_type, value[_ENTRY.size :])


# -- hard state -------------------------------------------------------------------------------


def encode_hard_state(hs: HardState) -> bytes:
    vote = b"" if hs.vote is None else hs.vote.encode()
    payload = _HARD_STATE.pack(hs.term, hs.commit, hs.vote is not None) + vote
    return seal(HARD_STATE_KEY, payload)


def decode_hard_state(value: bytes) -> HardState:
    payload = unseal(HARD_STATE_KEY, value, "hard state")
    if len(payload) < _HARD_STATE.size:
        raise RecordError("hard state: truncated record")
    term, commit, has_vote = _HARD_STATE.unpack_from(payload)
    vote = bytes(payload[_HARD_STATE.size :])
    if has_vote not in (0, 1) or (not has_vote and vote):
        raise RecordError("hard state: malformed record")
    try:
        return HardState(term, vote.decode() if has_vote else None, commit)
    except UnicodeDecodeError:
        raise RecordError("hard state: vote is not UTF-8") from None


# -- snapshots --------------------------------------------------------------------------------


def chunk_key(snapshot_index: int, number: int) -> bytes:
    return _CHUNK_KEY.pack(CHUNK_PREFIX, snapshot_index, number)


def encode_snapshot(snapshot: Snapshot, chunk_size: int = CHUNK_SIZE) -> list[tuple[bytes, bytes]]:
    """The snapshot record followed by its chunk records, as (key, value) pairs."""
    chunks = encode_chunks(snapshot.meta.index, snapshot.data, chunk_size)
    return [encode_snapshot_record(snapshot, len(chunks), data_crc(snapshot.data)), *chunks]


def encode_chunks(index: int, data: bytes, chunk_size: int) -> list[tuple[bytes, bytes]]:
    """The chunk records of the snapshot at `index` whose data is `data`."""
    view = memoryview(data)
    records = []
    for number, start in enumerate(range(0, len(data), chunk_size)):
        key = chunk_key(index, number)
        records.append((key, seal(key, bytes(view[start : start + chunk_size]))))
    return records


def chunk_count(data: bytes, chunk_size: int) -> int:
    """How many chunk records encode_chunks() makes of `data`."""
    return (len(data) + chunk_size - 1) // chunk_size


def data_crc(data: bytes) -> int:
    """The CRC-32 of a snapshot's data, as its snapshot record holds it."""
    return crc32(data)


def encode_snapshot_record(snapshot: Snapshot, chunks: int, crc: int) -> tuple[bytes, bytes]:
    """The snapshot record: metadata, and what its `chunks` chunk records must add up to,
    the data's length and `crc` (data_crc of the data)."""
    data, meta = snapshot.data, snapshot.meta
    head = _SNAPSHOT.pack(meta.index, meta.term, chunks, len(data), crc)
    return SNAPSHOT_KEY, seal(SNAPSHOT_KEY, head + encode_membership(meta.membership))


def decode_snapshot_header(value: bytes) -> SnapshotHeader:
    payload = unseal(SNAPSHOT_KEY, value, "snapshot metadata")
    if len(payload) < _SNAPSHOT.size:
        raise RecordError("snapshot metadata: truncated record")
    index, term, chunks, length, crc = _SNAPSHOT.unpack_from(payload)
    if index == _LAST_U64:  # no log reaches it; and chunks of a newer one could not be keyed
        raise RecordError(f"snapshot metadata: index {index} is out of range")
    try:
        membership = decode_membership(bytes(payload[_SNAPSHOT.size :]))
    except (ValueError, KeyError, TypeError):
        raise RecordError("snapshot metadata: malformed membership") from None
    return SnapshotHeader(SnapshotMeta(index, term, membership), chunks, length, crc)


def decode_chunk(key: bytes, value: bytes) -> tuple[int, int, bytes]:
    """(snapshot index, chunk number, bytes) of one chunk record."""
    if len(key) != _CHUNK_KEY.size:
        raise RecordError(f"snapshot chunk key {key.hex()}: malformed key")
    _, index, number = _CHUNK_KEY.unpack(key)
    payload = unseal(key, value, f"snapshot chunk {number} (snapshot at {index})")
    return index, number, bytes(payload)


def assemble_snapshot(header: SnapshotHeader, chunks: list[tuple[int, int, bytes]]) -> Snapshot:
    """The snapshot, once its chunks (in key order) are found to be exactly the header's."""
    index = header.meta.index
    for position, (at, number, _) in enumerate(chunks):
        if at != index:
            raise RecordError(
                f"snapshot chunk {number}: belongs to a snapshot at {at}, not {index}"
            )
        if number != position:
            raise RecordError(f"snapshot chunk {position} of {header.chunks}: missing")
    if len(chunks) < header.chunks:
        raise RecordError(f"snapshot chunk {len(chunks)} of {header.chunks}: missing")
    if len(chunks) > header.chunks:
        raise RecordError(f"snapshot: {len(chunks)} chunks stored, {header.chunks} expected")
    data = b"".join(chunk for _, _, chunk in chunks)
    if len(data) != header.length:
        raise RecordError(f"snapshot: {len(data)} bytes stored, {header.length} expected")
    if data_crc(data) != header.crc:
        raise RecordError("snapshot: data checksum mismatch")
    return Snapshot(header.meta, data)


# -- node metadata ----------------------------------------------------------------------------


def meta_key(name: bytes) -> bytes:
    return META_PREFIX + name
