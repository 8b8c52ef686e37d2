"""The hello of quicraft-raft/1: round trips, strict refusals, and telling it from the other
first frames of a stream (Raft messages and snapshot headers)."""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from wire_strategies import hellos

from quicraft.core.types import Membership, Message, MessageType, Snapshot, SnapshotMeta
from quicraft.wire import (
    Hello,
    ProtocolError,
    decode_hello,
    encode_hello,
    encode_message,
    encode_snapshot_header,
    peek_hello,
)

GOOD: dict[str, Any] = {"address": "10.0.0.2:7400", "formed": True, "cluster_id": "ab12" * 8}
UNFORMED: dict[str, Any] = {**GOOD, "formed": False, "cluster_id": None}


def frame(body: object, **extra: object) -> bytes:
    return cbor2.dumps({"v": 1, "hello": body, **extra})


@given(hello=hellos)
@settings(max_examples=100)
def test_round_trip(hello: Hello) -> None:
    data = encode_hello(hello)
    assert decode_hello(data) == hello
    assert peek_hello(data) == hello


def test_the_documented_layout() -> None:
    hello = Hello("[fe80::1%eth0]:7400", False)
    assert cbor2.loads(encode_hello(hello)) == {
        "v": 1,
        "hello": {"address": "[fe80::1%eth0]:7400", "formed": False, "cluster_id": None},
    }
    assert decode_hello(frame(GOOD)) == Hello("10.0.0.2:7400", True, "ab12" * 8)
    led = Hello("10.0.0.2:7400", True, "ab12" * 8, leader="10.0.0.3:7400")
    assert cbor2.loads(encode_hello(led))["hello"] == {**GOOD, "leader": "10.0.0.3:7400"}
    named = Hello("10.0.0.2:7400", True, None, leader="10.0.0.3:7400", leader_id="c3")
    assert cbor2.loads(encode_hello(named))["hello"]["leader_id"] == "c3"
    assert decode_hello(encode_hello(named)) == named
    founding = Hello("10.0.0.2:7400", False, founders=("a1", "b2"))
    assert cbor2.loads(encode_hello(founding))["hello"]["founders"] == ["a1", "b2"]
    deciding = Hello("10.0.0.2:7400", False, seen=("a1", "b2"))
    assert cbor2.loads(encode_hello(deciding))["hello"]["seen"] == ["a1", "b2"]
    where = {"b2": "10.0.0.4:7400", "a1": "[fe80::1%eth0]:7400"}
    relaying = Hello("10.0.0.2:7400", False, seen=("a1", "b2"), seen_at=where)
    assert list(cbor2.loads(encode_hello(relaying))["hello"]["seen_at"].items()) == sorted(
        where.items()
    )
    joining = Hello("10.0.0.2:7400", False, joining=True)
    assert cbor2.loads(encode_hello(joining))["hello"]["joining"] is True
    awaiting = Hello("10.0.0.2:7400", False, awaits="a1")
    assert cbor2.loads(encode_hello(awaiting))["hello"]["awaits"] == "a1"
    remembering = Hello("10.0.0.2:7400", True, "ab12" * 8, remembers_you=True)
    assert cbor2.loads(encode_hello(remembering))["hello"] == {**GOOD, "remembers_you": True}
    left_out = Hello("10.0.0.2:7400", True, "ab12" * 8, committed_without_you=41)
    assert cbor2.loads(encode_hello(left_out))["hello"] == {**GOOD, "committed_without_you": 41}
    assert decode_hello(encode_hello(left_out)) == left_out


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (frame({**GOOD, "address": "10.0.0.2"}), "'address'"),
        (frame({**GOOD, "address": "10.0.0.2:0"}), "'address'"),
        (frame({**GOOD, "address": "a b:1"}), "'address'"),
        (frame({**GOOD, "address": 7400}), "'address'"),
        (frame({**GOOD, "address": "a..b:7400"}), "'address'"),  # resolvers refuse these
        (frame({**GOOD, "address": ".a:7400"}), "'address'"),
        (frame({**GOOD, "address": "x" * 64 + ".lan:7400"}), "'address'"),
        (frame({**GOOD, "formed": 1}), "'formed'"),
        (frame({**GOOD, "cluster_id": ""}), "'cluster_id'"),
        (frame({**GOOD, "cluster_id": "x" * 129}), "'cluster_id'"),
        (frame({**GOOD, "cluster_id": b"ab"}), "'cluster_id'"),
        (frame({**GOOD, "formed": False}), "without 'formed'"),
        (frame({k: v for k, v in GOOD.items() if k != "cluster_id"}), "'cluster_id'"),
        (frame({k: v for k, v in GOOD.items() if k != "formed"}), "'formed'"),
        (frame({k: v for k, v in GOOD.items() if k != "address"}), "'address'"),
        (frame({**GOOD, "leader": "10.0.0.3"}), "'leader'"),
        (frame({**GOOD, "leader": None}), "'leader'"),
        (frame({**GOOD, "leader_id": "c3"}), "a leader id without 'leader'"),
        (frame({**GOOD, "leader": "a:1", "leader_id": ""}), "'leader_id'"),
        (frame({**GOOD, "leader": "a:1", "leader_id": 3}), "'leader_id'"),
        (frame({**GOOD, "formed": False, "cluster_id": None, "leader": "a:1"}), "without 'formed'"),
        (frame({**GOOD, "founders": ["b", "a"]}), "sorted without repeats"),
        (frame({**GOOD, "founders": ["a", "a"]}), "sorted without repeats"),
        (frame({**GOOD, "founders": "a"}), "'founders'"),
        (frame({**GOOD, "founders": [""]}), "'founders'"),
        (frame({**GOOD, "remembers_you": 1}), "'remembers_you'"),
        (frame({**GOOD, "formed": False, "cluster_id": None, "remembers_you": True}), "without"),
        (frame({**GOOD, "committed_without_you": -1}), "'committed_without_you'"),
        (frame({**GOOD, "committed_without_you": True}), "'committed_without_you'"),
        (frame({**GOOD, "committed_without_you": "7"}), "'committed_without_you'"),
        (frame({**UNFORMED, "committed_without_you": 7}), "without 'formed'"),
        (frame({**GOOD, "seen": ["a"]}), "with 'formed'"),
        (frame({**GOOD, "joining": True}), "with 'formed'"),
        (frame({**UNFORMED, "seen": ["a"], "joining": True}), "'seen' with 'joining'"),
        (frame({**UNFORMED, "seen": ["b", "a"]}), "sorted without repeats"),
        (frame({**UNFORMED, "seen_at": {"a": "h:1"}}), "'seen_at' without 'seen'"),
        (frame({**UNFORMED, "seen": ["a"], "seen_at": {"b": "h:1"}}), "not in 'seen'"),
        (frame({**UNFORMED, "seen": ["a"], "seen_at": {"a": "h"}}), "an address in 'seen_at'"),
        (frame({**UNFORMED, "seen": ["a"], "seen_at": {"": "h:1"}}), "an id in 'seen_at'"),
        (frame({**UNFORMED, "seen": ["a"], "seen_at": ["a", "h:1"]}), "'seen_at' must be a map"),
        (frame({**UNFORMED, "joining": "yes"}), "'joining'"),
        (frame({**UNFORMED, "awaits": ""}), "'awaits'"),
        (frame({**UNFORMED, "awaits": "a", "joining": True}), "'joining' with 'awaits'"),
        (frame({**GOOD, "awaits": "a"}), "'awaits' with 'formed'"),
        (frame({**GOOD, "name": "n1"}), "unknown field"),
        (frame(GOOD, extra=1), "unknown field"),
        (frame(GOOD, tp="00-" + "1" * 32 + "-" + "2" * 16 + "-01"), "trace context"),
        (frame([GOOD]), "a map"),
        (cbor2.dumps({"v": 2, "hello": GOOD}), "unsupported version 2"),
        (cbor2.dumps({"hello": GOOD}), "no version"),
    ],
)
def test_refusals(data: bytes, why: str) -> None:
    with pytest.raises(ProtocolError, match=why):
        decode_hello(data)
    with pytest.raises(ProtocolError, match=why):
        peek_hello(data)  # a malformed hello is reported as one, not taken for something else


def test_host_names_of_dns_labels_are_addresses() -> None:
    for address in ("node-1.lan:7400", "node-1.lan.:7400", "x" * 63 + ".lan:7400", "h:1"):
        assert decode_hello(frame({**GOOD, "address": address})).address == address


def test_encoding_refuses_what_decoding_would() -> None:
    for bad in (Hello("nowhere", False), Hello("a:1", False, "id"), Hello("a:1", True, "")):
        with pytest.raises(ProtocolError):
            encode_hello(bad)


def test_other_first_frames_are_not_hellos() -> None:
    meta = SnapshotMeta(5, 2, Membership(frozenset({"a"}), frozenset()))
    snap = Message(MessageType.SNAPSHOT, "b", "a", 2, snapshot=Snapshot(meta, b"x" * 10))
    heartbeat = Message(MessageType.HEARTBEAT, "b", "a", 2)
    for data in (encode_message(heartbeat), encode_snapshot_header(snap), b"\xff", b""):
        assert peek_hello(data) is None
    # Not one CBOR item: not a hello either (the Raft decoder reports it); decode_hello refuses.
    assert peek_hello(frame(GOOD) + b"\x00") is None
    with pytest.raises(ProtocolError, match="trailing"):
        decode_hello(frame(GOOD) + b"\x00")
