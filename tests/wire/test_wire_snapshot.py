"""Chunked snapshots: header + chunks rebuild the exact message; gaps, overlaps, excess fail."""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wire_strategies import messages, traceparents

from quicraft.core.types import Membership, Message, MessageType, Snapshot, SnapshotMeta
from quicraft.wire import (
    ProtocolError,
    SnapshotAssembler,
    decode_message,
    decode_snapshot_chunk,
    encode_message,
    encode_snapshot_chunk,
    encode_snapshot_header,
    snapshot_frames,
)

META = SnapshotMeta(100, 7, Membership(frozenset({"a", "b"}), frozenset({"c"})))
SNAP = Message(MessageType.SNAPSHOT, "c", "a", 7, snapshot=Snapshot(META, bytes(range(256)) * 40))


@given(data=st.data(), chunk_size=st.integers(1, 3000))
@settings(max_examples=60)
def test_header_and_chunks_rebuild_the_message(data: st.DataObject, chunk_size: int) -> None:
    m = data.draw(messages(st.just(MessageType.SNAPSHOT)))
    tp = data.draw(traceparents)
    header, *chunks = snapshot_frames(m, traceparent=tp, chunk_size=chunk_size)
    assembler = SnapshotAssembler(header)
    assert assembler.traceparent == tp
    assert m.snapshot is not None and assembler.size == len(m.snapshot.data)
    for chunk in chunks:
        assert not assembler.complete
        assembler.feed(chunk)
    assert assembler.complete
    assert assembler.message() == m
    assert assembler.message() == m  # asking twice is fine


def test_the_header_is_the_message_map_with_a_size_instead_of_data() -> None:
    raw = cbor2.loads(encode_snapshot_header(SNAP))
    assert raw["snapshot"] == {
        "index": 100,
        "term": 7,
        "voters": ["a", "b"],
        "learners": ["c"],
        "size": 10240,
    }
    with pytest.raises(ProtocolError, match="unknown field"):
        decode_message(encode_snapshot_header(SNAP))  # a header is not an inline message


def test_an_inline_snapshot_is_not_a_header() -> None:
    with pytest.raises(ProtocolError, match="unknown field"):
        SnapshotAssembler(encode_message(SNAP))


def test_only_snapshot_messages_have_headers() -> None:
    with pytest.raises(ProtocolError):
        encode_snapshot_header(Message(MessageType.HEARTBEAT, "b", "a", 1))
    raw = cbor2.loads(encode_snapshot_header(SNAP))
    raw["type"] = "append"
    with pytest.raises(ProtocolError, match="must be 'snapshot'"):
        SnapshotAssembler(cbor2.dumps(raw))


def test_an_empty_snapshot_is_complete_at_once() -> None:
    m = Message(MessageType.SNAPSHOT, "c", "a", 7, snapshot=Snapshot(META))
    frames = list(snapshot_frames(m))
    assert len(frames) == 1
    assert SnapshotAssembler(frames[0]).message() == m


def test_the_size_limit_is_checked_on_the_header() -> None:
    with pytest.raises(ProtocolError, match="exceeds the limit of 100"):
        SnapshotAssembler(encode_snapshot_header(SNAP), max_size=100)


def _assembler() -> tuple[SnapshotAssembler, list[bytes]]:
    header, *chunks = snapshot_frames(SNAP, chunk_size=4096)
    return SnapshotAssembler(header), chunks


def test_chunks_out_of_order_or_repeated_are_refused() -> None:
    assembler, chunks = _assembler()
    with pytest.raises(ProtocolError, match="offset 4096, expected 0"):
        assembler.feed(chunks[1])
    assembler.feed(chunks[0])
    with pytest.raises(ProtocolError, match="offset 0, expected 4096"):
        assembler.feed(chunks[0])


def test_data_past_the_announced_size_is_refused() -> None:
    assembler, chunks = _assembler()
    for chunk in chunks:
        assembler.feed(chunk)
    with pytest.raises(ProtocolError, match="beyond the announced"):
        assembler.feed(encode_snapshot_chunk(10240, b"x"))


def test_an_unfinished_snapshot_has_no_message() -> None:
    assembler, chunks = _assembler()
    assembler.feed(chunks[0])
    with pytest.raises(ProtocolError, match="4096 of 10240 bytes"):
        assembler.message()


@pytest.mark.parametrize(
    "chunk",
    [
        {"v": 1, "offset": 0, "data": b""},
        {"v": 1, "offset": -1, "data": b"x"},
        {"v": 1, "offset": 0, "data": "x"},
        {"v": 1, "offset": 0},
        {"v": 1, "offset": 0, "data": b"x", "tp": "00"},
        {"v": 2, "offset": 0, "data": b"x"},
    ],
)
def test_malformed_chunks(chunk: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError):
        decode_snapshot_chunk(cbor2.dumps(chunk))


def test_chunk_round_trip_and_encoder_checks() -> None:
    assert decode_snapshot_chunk(encode_snapshot_chunk(5, b"abc")) == (5, b"abc")
    with pytest.raises(ProtocolError):
        encode_snapshot_chunk(0, b"")
    with pytest.raises(ProtocolError):
        encode_snapshot_chunk(-1, b"x")
    with pytest.raises(ValueError):
        next(snapshot_frames(SNAP, chunk_size=0))
