"""Raft messages: every field of every type survives the wire; what is not a message is refused."""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wire_strategies import messages, traceparents

from quicraft.core.types import (
    Entry,
    EntryType,
    Membership,
    Message,
    MessageType,
    Snapshot,
    SnapshotMeta,
)
from quicraft.wire import (
    MAX_NODE_ID,
    ProtocolError,
    RaftEnvelope,
    decode_envelope,
    decode_message,
    encode_message,
)

TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.mark.parametrize("mtype", list(MessageType), ids=lambda t: t.value)
@given(data=st.data())
@settings(max_examples=25)
def test_every_message_type_round_trips(mtype: MessageType, data: st.DataObject) -> None:
    m = data.draw(messages(st.just(mtype)))
    tp = data.draw(traceparents)
    payload = encode_message(m, traceparent=tp)
    assert decode_envelope(payload) == RaftEnvelope(m, tp)
    assert decode_message(payload) == m


def test_append_entries_are_compact_arrays_in_one_map() -> None:
    entries = [Entry(7, 11 + i, EntryType(i % 3), bytes([i % 256]) * (i % 50)) for i in range(300)]
    m = Message(MessageType.APPEND, "b", "a", 7, log_term=6, index=10, entries=entries, commit=9)
    raw = cbor2.loads(encode_message(m))
    assert raw["entries"][:2] == [[7, 11, 0, b""], [7, 12, 1, b"\x01"]]
    assert set(raw) == {"v", "type", "to", "from", "term", "log_term", "index", "commit", "entries"}
    assert decode_message(encode_message(m)) == m


def test_defaults_stay_off_the_wire() -> None:
    hb = Message(MessageType.HEARTBEAT, "b" * 16, "a" * 16, 3)
    assert cbor2.loads(encode_message(hb)) == {
        "v": 1,
        "type": "heartbeat",
        "to": "b" * 16,
        "from": "a" * 16,
        "term": 3,
    }
    assert len(encode_message(hb)) < 70  # 32 bytes of it are the two ids


def test_snapshot_meta_membership_and_data_round_trip() -> None:
    meta = SnapshotMeta(40, 6, Membership(frozenset({"n2", "n1"}), frozenset({"n3"})))
    m = Message(MessageType.SNAPSHOT, "n3", "n1", 6, snapshot=Snapshot(meta, b"state" * 1000))
    raw = cbor2.loads(encode_message(m))
    assert raw["snapshot"]["voters"] == ["n1", "n2"]  # sorted: one message, one encoding
    assert decode_message(encode_message(m)) == m


def test_traceparent_is_carried_beside_the_message() -> None:
    m = Message(MessageType.VOTE, "b", "a", 2, index=5, log_term=1)
    assert decode_envelope(encode_message(m, traceparent=TP)).traceparent == TP
    assert decode_envelope(encode_message(m)).traceparent is None
    with pytest.raises(ProtocolError, match="traceparent"):
        encode_message(m, traceparent="X" * 56)


def _mutated(m: Message, **changes: object) -> bytes:
    raw = cbor2.loads(encode_message(m))
    for key, value in changes.items():
        if value is _DELETE:
            del raw[key]
        else:
            raw[key] = value
    return cbor2.dumps(raw)


_DELETE = object()
APPEND = Message(
    MessageType.APPEND,
    "b",
    "a",
    5,
    log_term=4,
    index=10,
    commit=10,
    entries=[Entry(4, 11, EntryType.NORMAL, b"x"), Entry(5, 12, EntryType.NOOP, b"")],
)


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"v": 2}, "unsupported version 2"),
        ({"v": "1"}, "unsupported version '1'"),
        ({"v": _DELETE}, "no version"),
        ({"colour": "red"}, "unknown field"),
        ({"type": "gossip"}, "unknown message type 'gossip'"),
        ({"type": _DELETE}, "missing field 'type'"),
        ({"term": True}, "'term' must be an unsigned 64-bit int, got bool"),
        ({"term": -1}, "'term' must be an unsigned 64-bit int"),
        ({"term": 1.0}, "'term' must be an unsigned 64-bit int, got float"),
        ({"commit": None}, "'commit' must be"),
        ({"to": ""}, "'to' must be a str of 1 to 128"),
        ({"from": "x" * (MAX_NODE_ID + 1)}, "'from' must be a str"),
        ({"reject": 1}, "'reject' must be a bool"),
        ({"context": "text"}, "'context' must be bytes"),
        ({"entries": [[4, 12, 0, b"x"]]}, "index 11"),  # a gap after index 10
        ({"entries": [[5, 11, 0, b"x"], [4, 12, 0, b""]]}, "term 5..5"),  # terms fall
        ({"entries": [[6, 11, 0, b"x"]]}, "term 4..5"),  # above the leader's term
        ({"entries": [[3, 11, 0, b"x"]]}, "term 4..5"),  # below log_term
        ({"entries": [[4, 11, 7, b"x"]]}, "entry type"),
        ({"entries": [[4, 11, True, b"x"]]}, "entry type"),
        ({"entries": [[4, 11, 0, "x"]]}, "bytes"),
        ({"entries": [[4, 11, 0]]}, "is not \\[term, index, type, data\\]"),
        ({"entries": {"a": 1}}, "'entries' must be a list"),
        ({"snapshot": {}}, "only snapshot messages carry a snapshot"),
    ],
)
def test_malformed_append_is_refused_with_a_clear_reason(
    changes: dict[str, Any], error: str
) -> None:
    with pytest.raises(ProtocolError, match=error):
        decode_message(_mutated(APPEND, **changes))


def test_entries_only_on_append_and_snapshot_required_on_snapshot() -> None:
    vote = Message(MessageType.VOTE, "b", "a", 2)
    with pytest.raises(ProtocolError, match="only append messages carry entries"):
        decode_message(_mutated(vote, entries=[]))
    snap = Message(MessageType.SNAPSHOT, "b", "a", 2, snapshot=Snapshot())
    with pytest.raises(ProtocolError, match="missing field 'snapshot'"):
        decode_message(_mutated(snap, snapshot=_DELETE))


@pytest.mark.parametrize(
    ("snapshot", "error"),
    [
        ({"index": 1, "term": 1, "voters": ["b", "a"], "learners": []}, "sorted without repeats"),
        ({"index": 1, "term": 1, "voters": ["a", "a"], "learners": []}, "sorted without repeats"),
        ({"index": 1, "term": 1, "voters": ["a"], "learners": ["a"]}, "both voter and learner"),
        ({"index": 1, "term": 1, "voters": [1], "learners": []}, "an id in 'voters'"),
        ({"index": 1, "term": 1, "voters": []}, "missing field 'learners'"),
        ({"index": 1, "term": 1, "voters": [], "learners": [], "size": 3}, "unknown field"),
        ({"index": 1, "term": 1, "voters": [], "learners": [], "data": 3}, "'data' must be bytes"),
        ([1, 1, [], []], "'snapshot' must be a map"),
    ],
)
def test_malformed_snapshot_meta_is_refused(snapshot: object, error: str) -> None:
    m = Message(MessageType.SNAPSHOT, "b", "a", 2, snapshot=Snapshot())
    with pytest.raises(ProtocolError, match=error):
        decode_message(_mutated(m, snapshot=snapshot))


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\xa0",  # a map without a version
        b"\x81\x01",  # not a map
        cbor2.dumps({"v": 1}) + b"\x00",  # trailing bytes
        b"\xbf\x61v\x01\xff",  # indefinite-length map
        b"\xa2\x61v\x01\x61v\x01",  # duplicate key
        b"\xa1\x01\x01",  # integer key
        cbor2.dumps(cbor2.CBORTag(55799, {"v": 1})),  # even the self-describe tag
        b"\x81" * 50 + b"\x00",  # nesting
    ],
)
def test_not_a_message_at_all(payload: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_message(payload)


def test_round_trip_at_the_64_bit_edges() -> None:
    top = (1 << 64) - 1
    m = Message(
        MessageType.APPEND,
        "b",
        "a",
        top,
        log_term=top,
        index=top - 1,
        commit=top,
        entries=[Entry(top, top)],
    )
    assert decode_message(encode_message(m)) == m
    with pytest.raises(ProtocolError, match="invalid CBOR"):  # 2**64 needs a bignum tag
        decode_message(_mutated(m, commit=1 << 64))
