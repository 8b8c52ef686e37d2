"""Backups in motion and at rest: the frames of a mgmt backup response, and the backup file.

A backup answer on the quicraft-mgmt/1 stream (send the request on a stream of its own):

    header   = the mgmt response to "backup" (wire/mgmt.py): {"v": 1, "id", "ok": true, "result":
               {cluster_id, index, term, size, membership: {voters, learners}}}
             | an error response, and nothing follows
    chunk    = one CBOR byte string of 1 to BACKUP_CHUNK bytes: the data itself behind a head of at
               most 5 bytes, no map (a frame's first byte says chunk or map; see why below)
    ...        chunks in order, exactly `size` bytes in all, then
    trailer  = {"v": 1, "sha256": 32 bytes}     the SHA-256 of the `size` snapshot bytes
             | an error response (same id): the server failed part-way; drop what came

Why chunks are CBOR byte strings and not bare payloads: a frame then says what it is, so the
server can still end a backup that fails part-way with an error a person can read, and the
client tells that from data without counting. The head costs at most 5 bytes per chunk.

The backup file, as `quicraft mgmt backup FILE` writes it and an offline restore reads it:

    magic    8 bytes   MAGIC (as PNG's: a high byte, CR LF and ^Z show 7-bit or text-mode damage)
    version  2 bytes   big-endian FORMAT_VERSION (the layout's; the map has its own "v")
    length   4 bytes   big-endian length of the header map, 1 to MAX_HEADER
    header   a CBOR map {"v": 1, "cluster": str, "cluster_id": str|null, "index", "term",
             "membership": {voters, learners}, "created_ms", "size"}
    body     `size` bytes: the snapshot, as the state machine wrote it
    digest   32 bytes: SHA-256 of every byte before it

Rules:
- A backup may be larger than memory: writers take and readers give the body in chunks of at
  most `chunk_size`; nothing here holds more than one chunk and the header.
- A reader checks the digest only at the end: a restore must not commit anything until
  BackupReader.chunks() has run out without an error.
- Every failure to read is a BackupError (a ProtocolError) that says what is wrong: a foreign
  file, an unknown version, truncated (and where), corrupted, or bytes after the end. Writers
  check with the reader's rules, so a file that writes is a file that reads.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import BinaryIO

from .errors import ProtocolError
from .fields import (
    VERSION,
    as_bytes,
    as_map,
    as_str,
    decode_item,
    encode_item,
    open_envelope,
    wrong,
)
from .mgmt import (
    RESPONSE_FIELDS,
    RESULTS,
    MgmtErrorInfo,
    MgmtResponse,
    encode_mgmt_response,
    response_from_map,
)
from .schema import (
    MAX_NAME,
    MEMBERSHIP,
    OPT_CLUSTER_ID,
    UINT,
    Args,
    Field,
    Schema,
    check_fields,
    check_map,
)

#: Data bytes per chunk, on the stream and in files: large enough to amortise the framing.
BACKUP_CHUNK = 1024 * 1024
DIGEST_SIZE = 32
MAGIC = b"\x89QRB\r\n\x1a\n"
FORMAT_VERSION = 1
MAX_HEADER = 64 * 1024
_HEAD = len(MAGIC) + 2 + 4
_BYTE_STRING = 2  # CBOR major type of a byte string: the top three bits of its first byte


class BackupError(ProtocolError):
    """A backup file that cannot be read or trusted (or written): the message says why."""


# -- the stream ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BackupTrailer:
    sha256: bytes  #: SHA-256 of all the snapshot bytes of the backup


def encode_backup_chunk(data: bytes) -> bytes:
    if type(data) is not bytes or not 1 <= len(data) <= BACKUP_CHUNK:
        raise wrong("backup chunk", "its data", data, f"bytes, 1 to {BACKUP_CHUNK} of them")
    return encode_item(data)


def encode_backup_trailer(sha256: bytes) -> bytes:
    digest = as_bytes(sha256, "backup trailer", "'sha256'", max_len=DIGEST_SIZE)
    if len(digest) != DIGEST_SIZE:
        raise ProtocolError(f"backup trailer: 'sha256' must be {DIGEST_SIZE} bytes")
    return encode_item({"v": VERSION, "sha256": digest})


def decode_backup_frame(payload: bytes) -> bytes | BackupTrailer | MgmtResponse:
    """A frame after the header: chunk data, the trailer, or the error that ends the backup."""
    where = "backup frame"
    if payload[:1] and payload[0] >> 5 == _BYTE_STRING:
        data = decode_item(payload)
        assert type(data) is bytes  # a byte-string head decodes to bytes or fails
        if not 1 <= len(data) <= BACKUP_CHUNK:
            raise ProtocolError(f"{where}: a chunk of {len(data)} bytes (1 to {BACKUP_CHUNK})")
        return data
    raw = open_envelope(payload, where, RESPONSE_FIELDS | {"sha256"})
    if "sha256" in raw:
        if raw.keys() != {"v", "sha256"}:
            raise ProtocolError(f"{where}: a trailer holds only 'sha256'")
        digest = as_bytes(raw["sha256"], where, "'sha256'", max_len=DIGEST_SIZE)
        if len(digest) != DIGEST_SIZE:
            raise ProtocolError(f"{where}: 'sha256' must be {DIGEST_SIZE} bytes")
        return BackupTrailer(digest)
    response = response_from_map(raw, "backup", where)
    if response.ok:
        raise ProtocolError(f"{where}: a second header (a success response) in the stream")
    return response


def _check_header(result: Mapping[str, object], where: str) -> Args:
    schema = RESULTS["backup"]
    return check_fields(as_map(dict(result), where, "'result'", frozenset(schema)), schema, where)


class BackupSender:
    """The server's side of backup request `id`: the header (with `result`), then `chunks` of
    the data as it is read, then the trailer.

    It cuts data into chunks of at most `chunk_size`, counts it against the header's size and
    hashes it; ProtocolError if the data comes to more or less than the size announced (send an
    error response in place of the trailer then).
    """

    __slots__ = ("_digest", "chunk_size", "header", "sent", "size")

    def __init__(
        self,
        result: Mapping[str, object],
        *,
        id: int,
        chunk_size: int = BACKUP_CHUNK,
        traceparent: str | None = None,
    ) -> None:
        if not 1 <= chunk_size <= BACKUP_CHUNK:
            raise ValueError(f"chunk_size must be within 1..{BACKUP_CHUNK}")
        self.chunk_size = chunk_size
        self.header = encode_mgmt_response(
            id=id, ok=True, result=result, op="backup", traceparent=traceparent
        )
        self.size: int = _check_header(result, "backup header")["size"]
        self.sent = 0
        self._digest = hashlib.sha256()

    def chunks(self, data: bytes) -> list[bytes]:
        """The chunk frames of the next `data` (none for b"")."""
        if self.sent + len(data) > self.size:
            raise ProtocolError(f"backup: more data than the {self.size} bytes announced")
        step = self.chunk_size
        frames = [encode_backup_chunk(data[at : at + step]) for at in range(0, len(data), step)]
        self.sent += len(data)  # only once all of it encoded: a refusal leaves no gap
        self._digest.update(data)
        return frames

    def trailer(self) -> bytes:
        if self.sent != self.size:
            raise ProtocolError(f"backup: {self.sent} of the {self.size} bytes announced")
        return encode_backup_trailer(self._digest.digest())


def backup_frames(
    result: Mapping[str, object],
    data: Iterable[bytes],
    *,
    id: int,
    chunk_size: int = BACKUP_CHUNK,
    traceparent: str | None = None,
) -> Iterator[bytes]:
    """Every payload of the answer to backup request `id` in order (frame each): the header
    with `result`, chunks of `data`, the trailer."""
    sender = BackupSender(result, id=id, chunk_size=chunk_size, traceparent=traceparent)
    yield sender.header
    for piece in data:
        yield from sender.chunks(piece)
    yield sender.trailer()


class BackupReceiver:
    """The client's side: built from the header's result, fed every later frame of the stream."""

    __slots__ = ("_digest", "complete", "ended", "header", "received", "size")

    def __init__(self, result: Mapping[str, object]) -> None:
        self.header = _check_header(result, "backup header")
        self.size: int = self.header["size"]
        self.received = 0
        self.ended = False  #: a trailer or an error came: the stream is over
        self.complete = False  #: the trailer came and the data matches it
        self._digest = hashlib.sha256()

    def feed(self, payload: bytes) -> bytes | MgmtErrorInfo:
        """Data to keep (b"" for the trailer, which sets `complete`) or the server's error.

        ProtocolError for a malformed frame, data beyond the size, a trailer too early or one
        that does not match the data.
        """
        if self.ended:
            raise ProtocolError("backup: a frame after the end of the backup")
        frame = decode_backup_frame(payload)
        if type(frame) is bytes:
            if len(frame) > self.size - self.received:
                raise ProtocolError(f"backup: data beyond the announced {self.size} bytes")
            self.received += len(frame)
            self._digest.update(frame)
            return frame
        self.ended = True
        if isinstance(frame, MgmtResponse):
            assert frame.error is not None  # decode_backup_frame refuses a success here
            return frame.error
        assert isinstance(frame, BackupTrailer)
        if self.received != self.size:
            raise ProtocolError(f"backup: trailer after {self.received} of {self.size} bytes")
        if frame.sha256 != self._digest.digest():
            raise ProtocolError("backup: SHA-256 mismatch: the data was damaged on its way")
        self.complete = True
        return b""


# -- the file -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BackupInfo:
    """What a backup file says about its snapshot."""

    cluster: str  #: the cluster's name
    cluster_id: str | None  #: the formed cluster's id, when it was known
    index: int  #: the last log index the snapshot covers
    term: int  #: the term of that entry
    voters: frozenset[str]
    learners: frozenset[str]
    created_ms: int  #: wall-clock ms when the backup was taken
    size: int  #: bytes of snapshot data in the body


_INFO: Schema = {
    "cluster": Field("str", lambda v, w, n: as_str(v, w, n, max_len=MAX_NAME, min_len=1)),
    "cluster_id": OPT_CLUSTER_ID,
    "index": UINT,
    "term": UINT,
    "membership": MEMBERSHIP,
    "created_ms": UINT,
    "size": UINT,
}


def backup_info(result: Mapping[str, object], *, cluster: str, created_ms: int) -> BackupInfo:
    """The file header of the backup whose stream header had `result`."""
    header = _check_header(result, "backup header")
    membership = header["membership"]
    return BackupInfo(
        cluster,
        header["cluster_id"],
        header["index"],
        header["term"],
        frozenset(membership["voters"]),
        frozenset(membership["learners"]),
        created_ms,
        header["size"],
    )


def _info_map(info: BackupInfo) -> dict[str, object]:
    raw: dict[str, object] = {
        "cluster": info.cluster,
        "cluster_id": info.cluster_id,
        "index": info.index,
        "term": info.term,
        "membership": {"voters": sorted(info.voters), "learners": sorted(info.learners)},
        "created_ms": info.created_ms,
        "size": info.size,
    }
    check_map(raw, "backup file", "header", _INFO)  # the reader's rules, at the writer
    return {"v": VERSION, **raw}


def _info(data: bytes) -> BackupInfo:
    try:
        raw = open_envelope(data, "header", frozenset(_INFO))
        if "tp" in raw:
            raise ProtocolError("header: trace context has no place in a file")
        info = check_fields(raw, _INFO, "header")
    except ProtocolError as exc:
        # Read before the digest at the end can be checked: say what is likeliest.
        raise BackupError(f"backup file corrupted, or not made by quicraft: {exc}") from exc
    membership = info["membership"]
    return BackupInfo(
        info["cluster"],
        info["cluster_id"],
        info["index"],
        info["term"],
        frozenset(membership["voters"]),
        frozenset(membership["learners"]),
        info["created_ms"],
        info["size"],
    )


class BackupWriter:
    """Writes one backup file to `fp`: the head at once, the body by write(), then finish()."""

    __slots__ = ("_digest", "_fp", "finished", "info", "written")

    def __init__(self, fp: BinaryIO, info: BackupInfo) -> None:
        try:
            header = encode_item(_info_map(info))
        except ProtocolError as exc:
            raise BackupError(f"backup file: cannot write {exc}") from exc
        if len(header) > MAX_HEADER:
            raise BackupError(f"backup file: a {len(header)}-byte header (at most {MAX_HEADER})")
        head = MAGIC + FORMAT_VERSION.to_bytes(2, "big") + len(header).to_bytes(4, "big") + header
        self._fp, self.info, self.written, self.finished = fp, info, 0, False
        self._digest = hashlib.sha256(head)
        fp.write(head)

    def write(self, data: bytes) -> None:
        """The next bytes of the snapshot; BackupError beyond the size the header gives."""
        if self.finished or self.written + len(data) > self.info.size:
            raise BackupError(f"backup file: more data than the {self.info.size} bytes announced")
        self.written += len(data)
        self._digest.update(data)
        self._fp.write(data)

    def finish(self) -> bytes:
        """Write the digest (after exactly `size` bytes of body) and return it."""
        if self.finished or self.written != self.info.size:
            raise BackupError(f"backup file: {self.written} of the {self.info.size} bytes written")
        self.finished = True
        digest = self._digest.digest()
        self._fp.write(digest)
        return digest


def write_backup(fp: BinaryIO, info: BackupInfo, data: Iterable[bytes]) -> bytes:
    """A whole backup file from the snapshot in pieces; the file's digest."""
    writer = BackupWriter(fp, info)
    for piece in data:
        writer.write(piece)
    return writer.finish()


def _read(fp: BinaryIO, size: int) -> bytes:
    """`size` bytes, or fewer only at the end of the file (a read may return less than asked)."""
    data = fp.read(size)
    if len(data) == size or not data:
        return data
    parts = [data]
    have = len(data)
    while have < size:
        more = fp.read(size - have)
        if not more:
            break
        parts.append(more)
        have += len(more)
    return b"".join(parts)


class BackupReader:
    """Reads one backup file from `fp`: `info` at once, the body from chunks(), checked at its end.

    BackupError for a file that is not a quicraft backup, of an unknown version, truncated,
    corrupted (the digest does not match), or followed by more bytes.
    """

    __slots__ = ("_digest", "_fp", "chunk_size", "info")

    def __init__(self, fp: BinaryIO, *, chunk_size: int = BACKUP_CHUNK) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        self._fp, self.chunk_size = fp, chunk_size
        head = _read(fp, _HEAD)
        if not head:
            raise BackupError("backup file is empty")
        if head[: len(MAGIC)] != MAGIC[: len(head)]:
            raise BackupError("not a quicraft backup file (its first bytes are not the magic)")
        if len(head) < _HEAD:
            raise BackupError(f"backup file truncated: it ends {len(head)} bytes into its head")
        version = int.from_bytes(head[8:10], "big")
        if version != FORMAT_VERSION:
            raise BackupError(f"backup file of format version {version}: this reads only 1")
        length = int.from_bytes(head[10:14], "big")
        if not 1 <= length <= MAX_HEADER:
            raise BackupError(f"backup file corrupted: a header of {length} bytes")
        header = _read(fp, length)
        if len(header) < length:
            raise BackupError(
                f"backup file truncated: it ends {len(header)} bytes into a {length}-byte header"
            )
        self.info = _info(header)
        self._digest = hashlib.sha256(head + header)

    def chunks(self) -> Iterator[bytes]:
        """The snapshot bytes in pieces of at most `chunk_size`. Only when this runs out without
        a BackupError is the data known to be whole: check the digest before you trust it.
        """
        left = self.info.size
        while left:
            piece = _read(self._fp, min(left, self.chunk_size))
            if not piece:
                raise BackupError(
                    f"backup file truncated: {self.info.size - left} of {self.info.size} "
                    "snapshot bytes, then the end"
                )
            left -= len(piece)
            self._digest.update(piece)
            yield piece
        digest = _read(self._fp, DIGEST_SIZE)
        if len(digest) < DIGEST_SIZE:
            raise BackupError(
                f"backup file truncated: {len(digest)} of the {DIGEST_SIZE} digest bytes"
            )
        if digest != self._digest.digest():
            raise BackupError("backup file corrupted: the SHA-256 digest does not match")
        if self._fp.read(1):
            raise BackupError("backup file has bytes after its end (the digest)")


def verify_backup(fp: BinaryIO, *, chunk_size: int = BACKUP_CHUNK) -> BackupInfo:
    """Read a whole backup file, chunk by chunk, and check it; its info if it is sound."""
    reader = BackupReader(fp, chunk_size=chunk_size)
    for _ in reader.chunks():
        pass
    return reader.info
