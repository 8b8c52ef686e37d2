"""Backups: the frames of a mgmt backup answer and the backup file; any damage is caught."""

from __future__ import annotations

import contextlib
import hashlib
import io
from dataclasses import replace
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wire_strategies import MGMT_RESULTS, mgmt_errors

from quicraft.wire import (
    BACKUP_CHUNK,
    BackupError,
    BackupInfo,
    BackupReader,
    BackupReceiver,
    BackupSender,
    BackupTrailer,
    BackupWriter,
    MgmtErrorInfo,
    MgmtResponse,
    ProtocolError,
    backup_frames,
    backup_info,
    decode_backup_frame,
    decode_mgmt_response,
    encode_backup_chunk,
    encode_backup_trailer,
    encode_mgmt_response,
    verify_backup,
    write_backup,
)
from quicraft.wire.backup import MAGIC, MAX_HEADER

DATA = bytes(range(256)) * 5
HEADER: dict[str, Any] = {
    "cluster_id": "c-1",
    "index": 90,
    "term": 3,
    "size": len(DATA),
    "membership": {"voters": ["a", "b", "c"], "learners": ["d"]},
}
INFO = BackupInfo("prod", "c-1", 90, 3, frozenset("abc"), frozenset("d"), 1_700_000_000_000, 1280)


def _pieces(data: bytes, sizes: list[int]) -> list[bytes]:
    out, at = [], 0
    for size in sizes:
        out.append(data[at : at + size])
        at += size
    return [*out, data[at:]]


# -- the stream -----------------------------------------------------------------------------


@given(
    data=st.binary(max_size=3000),
    sizes=st.lists(st.integers(0, 700), max_size=6),
    chunk_size=st.integers(1, 1000),
    rid=st.integers(0, (1 << 64) - 1),
)
@settings(max_examples=60)
def test_a_backup_answer_round_trips(
    data: bytes, sizes: list[int], chunk_size: int, rid: int
) -> None:
    header = {**HEADER, "size": len(data)}
    pieces = list(_pieces(data, sizes))
    first, *rest = backup_frames(header, pieces, id=rid, chunk_size=chunk_size)
    response = decode_mgmt_response(first, "backup")
    assert response == MgmtResponse(rid, header)
    assert response.result is not None
    receiver = BackupReceiver(response.result)
    assert receiver.size == len(data)
    got = []
    for frame in rest:
        assert not receiver.ended
        piece = receiver.feed(frame)
        assert isinstance(piece, bytes) and len(piece) <= chunk_size
        got.append(piece)
    assert receiver.complete and receiver.ended
    assert b"".join(got) == data
    # Each piece is cut into chunks of its own (no piece waits for the next), then the trailer.
    assert len(rest) == sum(-(-len(p) // chunk_size) for p in pieces) + 1


def test_the_frames_on_the_wire() -> None:
    frames = list(backup_frames({**HEADER, "size": 5}, [b"hello"], id=4, chunk_size=2))
    assert cbor2.loads(frames[0]) == {"v": 1, "id": 4, "ok": True, "result": {**HEADER, "size": 5}}
    assert [cbor2.loads(f) for f in frames[1:4]] == [b"he", b"ll", b"o"]
    assert frames[1] == b"\x42he"  # a byte string's head and the data, nothing else
    assert cbor2.loads(frames[4]) == {"v": 1, "sha256": hashlib.sha256(b"hello").digest()}


def _receiver(size: int = 4) -> BackupReceiver:
    return BackupReceiver({**HEADER, "size": size})


def test_an_error_can_end_the_backup_part_way() -> None:
    receiver = _receiver()
    assert receiver.feed(encode_backup_chunk(b"ab")) == b"ab"
    stopping = MgmtErrorInfo("unavailable", "stopping", hint="retry on another node")
    assert receiver.feed(encode_mgmt_response(id=4, ok=False, error=stopping)) == stopping
    assert receiver.ended and not receiver.complete
    with pytest.raises(ProtocolError, match="after the end"):
        receiver.feed(encode_backup_chunk(b"cd"))


def test_damage_on_the_way_is_caught() -> None:
    receiver = _receiver()
    receiver.feed(encode_backup_chunk(b"abcd"))
    with pytest.raises(ProtocolError, match="SHA-256 mismatch"):
        receiver.feed(encode_backup_trailer(hashlib.sha256(b"abce").digest()))
    assert not receiver.complete

    early = _receiver()
    early.feed(encode_backup_chunk(b"abc"))
    with pytest.raises(ProtocolError, match="trailer after 3 of 4 bytes"):
        early.feed(encode_backup_trailer(hashlib.sha256(b"abc").digest()))

    too_much = _receiver()
    too_much.feed(encode_backup_chunk(b"abc"))
    with pytest.raises(ProtocolError, match="beyond the announced 4 bytes"):
        too_much.feed(encode_backup_chunk(b"de"))

    with pytest.raises(ProtocolError, match="a second header"):
        _receiver().feed(encode_mgmt_response(id=1, ok=True, result=HEADER, op="backup"))


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (cbor2.dumps(b""), "a chunk of 0 bytes"),
        (cbor2.dumps(b"x" * (BACKUP_CHUNK + 1)), "a chunk of 1048577 bytes"),
        (b"\x5f\x41a\xff", "invalid CBOR"),  # an indefinite-length byte string
        (b"\x44ab", "invalid CBOR"),  # a chunk cut short
        (b"\x42abc", "trailing bytes"),
        (cbor2.dumps({"v": 1, "sha256": b"x" * 31}), "'sha256' must be 32 bytes"),
        (cbor2.dumps({"v": 1, "sha256": b"x" * 33}), "'sha256' must be bytes of at most 32"),
        (cbor2.dumps({"v": 1, "sha256": "x" * 32}), "'sha256' must be bytes"),
        (cbor2.dumps({"v": 1, "sha256": b"x" * 32, "id": 1}), "holds only 'sha256'"),
        (cbor2.dumps({"v": 1, "sha256": b"x" * 32, "size": 1}), "unknown field"),
        (cbor2.dumps({"v": 2, "sha256": b"x" * 32}), "unsupported version 2"),
        (cbor2.dumps("chunk"), "expected a map"),
        (cbor2.dumps({"v": 1, "id": 1, "ok": False}), "missing field 'error'"),
        (b"", "invalid CBOR"),
    ],
)
def test_bad_backup_frames_are_refused(payload: bytes, error: str) -> None:
    with pytest.raises(ProtocolError, match=error):
        decode_backup_frame(payload)


@given(error=mgmt_errors)
@settings(max_examples=20)
def test_every_backup_frame_kind_decodes(error: dict[str, Any]) -> None:
    assert decode_backup_frame(encode_backup_chunk(b"x")) == b"x"
    digest = bytes(range(32))
    assert decode_backup_frame(encode_backup_trailer(digest)) == BackupTrailer(digest)
    response = decode_backup_frame(encode_mgmt_response(id=9, ok=False, error=error))
    assert response == MgmtResponse(9, error=MgmtErrorInfo(**error))


def test_the_sender_keeps_to_the_size_it_announced() -> None:
    sender = BackupSender({**HEADER, "size": 3}, id=1, chunk_size=2)
    assert decode_mgmt_response(sender.header, "backup").ok
    assert [cbor2.loads(f) for f in sender.chunks(b"ab")] == [b"ab"]
    assert sender.chunks(b"") == []
    with pytest.raises(ProtocolError, match="more data than the 3 bytes"):
        sender.chunks(b"cd")
    with pytest.raises(ProtocolError, match="2 of the 3 bytes"):
        sender.trailer()
    with pytest.raises(ProtocolError, match="'membership'"):
        BackupSender({**HEADER, "membership": {"voters": [], "learners": []}}, id=1)
    with pytest.raises(ValueError, match="chunk_size"):
        BackupSender(HEADER, id=1, chunk_size=BACKUP_CHUNK + 1)
    with pytest.raises(ProtocolError, match="bytes, 1 to 1048576 of them"):
        encode_backup_chunk(b"")
    with pytest.raises(ProtocolError, match="bytes, 1 to 1048576 of them"):
        sender.chunks(bytearray(b"c"))  # type: ignore[arg-type]
    assert sender.sent == 2  # a refused piece is not counted
    with pytest.raises(ProtocolError, match="'sha256' must be 32 bytes"):
        encode_backup_trailer(b"short")


def test_the_receiver_checks_its_header() -> None:
    with pytest.raises(ProtocolError, match="missing field 'size'"):
        BackupReceiver({k: v for k, v in HEADER.items() if k != "size"})
    with pytest.raises(ProtocolError, match="unknown field"):
        BackupReceiver({**HEADER, "extra": 1})


# -- the file -------------------------------------------------------------------------------


def _file(info: BackupInfo = INFO, data: bytes = DATA) -> bytes:
    out = io.BytesIO()
    write_backup(out, replace(info, size=len(data)), [data[:100], data[100:]])
    return out.getvalue()


def test_a_backup_file_round_trips_in_bounded_chunks() -> None:
    raw = _file()
    assert raw.startswith(MAGIC)
    assert raw[-32:] == hashlib.sha256(raw[:-32]).digest()
    reader = BackupReader(io.BytesIO(raw), chunk_size=100)
    assert reader.info == INFO
    chunks = list(reader.chunks())
    assert b"".join(chunks) == DATA
    assert max(map(len, chunks)) == 100
    assert verify_backup(io.BytesIO(raw)) == INFO


@given(
    data=st.binary(max_size=2000),
    sizes=st.lists(st.integers(0, 500), max_size=5),
    chunk_size=st.integers(1, 700),
    stream=MGMT_RESULTS["backup"],
    cluster=st.text(min_size=1, max_size=20),
    created_ms=st.integers(0, (1 << 64) - 1),
)
@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
def test_any_backup_round_trips(
    data: bytes,
    sizes: list[int],
    chunk_size: int,
    stream: dict[str, Any],
    cluster: str,
    created_ms: int,
) -> None:
    info = backup_info({**stream, "size": len(data)}, cluster=cluster, created_ms=created_ms)
    assert sorted(info.voters) == stream["membership"]["voters"]
    out = io.BytesIO()
    digest = write_backup(out, info, _pieces(data, sizes))
    assert out.getvalue()[-32:] == digest
    reader = BackupReader(io.BytesIO(out.getvalue()), chunk_size=chunk_size)
    assert reader.info == info
    assert b"".join(reader.chunks()) == data


class _Trickle(io.RawIOBase):
    """A file that hands out at most 3 bytes per read and records the largest read asked for."""

    def __init__(self, data: bytes) -> None:
        self._data, self._at, self.largest = data, 0, 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        self.largest = max(self.largest, size)
        piece = self._data[self._at : self._at + min(size, 3)]
        self._at += len(piece)
        return piece


def test_short_reads_are_read_through_and_no_read_is_larger_than_a_chunk() -> None:
    raw = _file()
    trickle = _Trickle(raw)
    reader = BackupReader(trickle, chunk_size=64)  # type: ignore[arg-type]
    assert b"".join(reader.chunks()) == DATA
    header_size = int.from_bytes(raw[10:14], "big")
    assert trickle.largest <= max(64, header_size)


def test_truncation_at_every_boundary_is_named() -> None:
    raw = _file()
    header_end = 14 + int.from_bytes(raw[10:14], "big")
    says = {  # where the file ends -> what the error says
        4: "4 bytes into its head",  # in the magic
        8: "8 bytes into its head",  # after the magic
        9: "9 bytes into its head",  # in the version
        12: "12 bytes into its head",  # in the header's length
        14: "0 bytes into a",  # before the header
        20: "6 bytes into a",  # in the header
        header_end: "0 of 1280 snapshot bytes",
        header_end + 500: "500 of 1280 snapshot bytes",
        len(raw) - 32: "0 of the 32 digest bytes",
        len(raw) - 10: "22 of the 32 digest bytes",
        len(raw) - 1: "31 of the 32 digest bytes",
    }
    for cut, message in says.items():
        with pytest.raises(BackupError, match=f"truncated: .*{message}"):
            verify_backup(io.BytesIO(raw[:cut]))
    with pytest.raises(BackupError, match="empty"):
        verify_backup(io.BytesIO(b""))


def test_truncation_anywhere_is_caught() -> None:
    raw = _file(data=DATA[:200])
    for cut in range(len(raw)):
        with pytest.raises(BackupError):
            verify_backup(io.BytesIO(raw[:cut]))


def test_a_flipped_byte_anywhere_is_caught() -> None:
    raw = _file(data=DATA[:200])
    for at in range(len(raw)):
        for flip in (0x01, 0x80, 0xFF):
            damaged = bytearray(raw)
            damaged[at] ^= flip
            with pytest.raises(BackupError):
                verify_backup(io.BytesIO(bytes(damaged)))


def test_body_damage_is_reported_as_corruption_after_the_data() -> None:
    raw = bytearray(_file())
    raw[-100] ^= 1
    reader = BackupReader(io.BytesIO(bytes(raw)), chunk_size=1000)
    first = next(reader.chunks())  # data comes before the digest can be checked
    assert len(first) == 1000
    with pytest.raises(BackupError, match="corrupted: the SHA-256 digest does not match"):
        verify_backup(io.BytesIO(bytes(raw)))


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not a quicraft backup"),
        (b"PK\x03\x04" + b"\x00" * 40, "not a quicraft backup"),
        (b"hello, world\n", "not a quicraft backup"),
        (MAGIC.replace(b"\r\n", b"\n") + b"\x00" * 40, "not a quicraft backup"),  # text mode
        (MAGIC[:5], "truncated: it ends 5 bytes into its head"),
        (MAGIC + b"\x00\x02" + b"\x00\x00\x00\x05", "format version 2"),
        (MAGIC + b"\x00\x01" + b"\x00\x00\x00\x00", "corrupted: a header of 0 bytes"),
        (MAGIC + b"\x00\x01" + (MAX_HEADER + 1).to_bytes(4, "big"), "corrupted: a header of"),
        (MAGIC + b"\x00\x01" + b"\x00\x00\x01\x00" + b"\xa0", "ends 1 bytes into a 256-byte"),
    ],
)
def test_foreign_and_malformed_files_are_named(raw: bytes, error: str) -> None:
    with pytest.raises(BackupError, match=error):
        verify_backup(io.BytesIO(raw))


def _with_header(header: object) -> bytes:
    body = cbor2.dumps(header)
    head = MAGIC + b"\x00\x01" + len(body).to_bytes(4, "big") + body
    return head + hashlib.sha256(head).digest()


GOOD_HEADER: dict[str, Any] = {
    "v": 1,
    "cluster": "prod",
    "cluster_id": None,
    "index": 1,
    "term": 1,
    "membership": {"voters": ["a"], "learners": []},
    "created_ms": 5,
    "size": 0,
}


@pytest.mark.parametrize(
    ("header", "error"),
    [
        ({**GOOD_HEADER, "v": 2}, "corrupted, or not made by quicraft: header: unsupported "),
        ({**GOOD_HEADER, "cluster": ""}, "'cluster' must be a str of 1"),
        ({**GOOD_HEADER, "index": -1}, "'index' must be an unsigned"),
        ({**GOOD_HEADER, "extra": 1}, "unknown field"),
        ({**GOOD_HEADER, "tp": "00"}, "no place in a file"),
        ({k: v for k, v in GOOD_HEADER.items() if k != "size"}, "missing field 'size'"),
        ({**GOOD_HEADER, "membership": {"voters": [], "learners": []}}, "no voter"),
        ([1, 2], "expected a map"),
    ],
)
def test_bad_headers_are_named(header: object, error: str) -> None:
    with pytest.raises(BackupError, match=error):
        verify_backup(io.BytesIO(_with_header(header)))


def test_a_header_length_past_its_item_is_corruption() -> None:
    """An audit flipped a byte of the length: it said "bad 256 trailing bytes"."""
    body = cbor2.dumps(GOOD_HEADER) + bytes(256)
    head = MAGIC + b"\x00\x01" + len(body).to_bytes(4, "big") + body
    with pytest.raises(BackupError, match=r"^backup file corrupted, or not made by quicraft: "):
        verify_backup(io.BytesIO(head + hashlib.sha256(head).digest()))


def test_a_header_with_no_body_reads() -> None:
    info = verify_backup(io.BytesIO(_with_header(GOOD_HEADER)))
    assert info == BackupInfo("prod", None, 1, 1, frozenset("a"), frozenset(), 5, 0)


def test_bytes_after_the_end_are_refused() -> None:
    with pytest.raises(BackupError, match="bytes after its end"):
        verify_backup(io.BytesIO(_file() + b"\x00"))


def test_the_writer_keeps_to_the_reader_rules() -> None:
    with pytest.raises(BackupError, match="more data than the 1280 bytes"):
        write_backup(io.BytesIO(), INFO, [DATA, b"x"])
    with pytest.raises(BackupError, match="1279 of the 1280 bytes"):
        write_backup(io.BytesIO(), INFO, [DATA[:-1]])
    bad_infos = {
        "no voter": BackupInfo("prod", None, 1, 1, frozenset(), frozenset("a"), 0, 0),
        "both voter and learner": BackupInfo("p", None, 1, 1, frozenset("a"), frozenset("a"), 0, 0),
        "'cluster' must be a str of 1": BackupInfo(
            "", None, 1, 1, frozenset("a"), frozenset(), 0, 0
        ),
        "'term' must be an unsigned": BackupInfo(
            "p", None, 1, -1, frozenset("a"), frozenset(), 0, 0
        ),
    }
    for error, info in bad_infos.items():
        with pytest.raises(BackupError, match=error):
            BackupWriter(io.BytesIO(), info)
    writer = BackupWriter(
        io.BytesIO(), BackupInfo("p", None, 1, 1, frozenset("a"), frozenset(), 0, 0)
    )
    writer.finish()
    with pytest.raises(BackupError):
        writer.finish()  # once only


def test_a_backup_error_is_a_protocol_error() -> None:
    assert issubclass(BackupError, ProtocolError)


@given(data=st.binary(max_size=400))
@settings(max_examples=200)
def test_random_files_fail_only_with_backup_errors(data: bytes) -> None:
    for raw in (data, MAGIC + data, MAGIC + b"\x00\x01" + data):
        with contextlib.suppress(BackupError):
            verify_backup(io.BytesIO(raw))
