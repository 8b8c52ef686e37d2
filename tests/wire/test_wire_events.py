"""The events protocol: subscriptions, every kind of event and every end round-trip; bad frames
and out-of-order streams are refused."""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wire_strategies import EVENT_DATA, events, stream_ends, subscriptions

from quicraft.wire import (
    END_CODES,
    EVENT_KINDS,
    EVENTS,
    Event,
    EventProgress,
    EventStreamEnd,
    EventStreamReader,
    ProtocolError,
    Subscription,
    decode_end,
    decode_event,
    decode_event_frame,
    decode_subscribe,
    encode_end,
    encode_event,
    encode_progress,
    encode_subscribe,
)
from quicraft.wire.ops import MAX_KEY, MAX_VALUE

#: The spec's table: kind -> its data fields.
SPEC = {
    "leader_changed": {"term", "leader", "previous"},
    "role_changed": {"node", "role", "term"},
    "term_changed": {"term"},
    "member_added": {"node", "address", "voter"},
    "member_removed": {"node"},
    "member_promoted": {"node"},
    "node_discovered": {"node", "name", "address"},
    "node_lost": {"node"},
    "snapshot_created": {"index", "term", "size"},
    "snapshot_installed": {"index", "term", "size"},
    "cluster_split_detected": {
        "cluster",
        "cluster_id",
        "other_cluster_id",
        "other_node",
        "address",
    },
    "kv": {"op", "key", "revision", "value", "previous"},
}
KV = {"op": "set", "key": "app/x", "revision": 4, "value": b"1", "previous": None}


def test_the_kinds_and_codes_are_those_of_the_spec() -> None:
    assert set(SPEC) == EVENT_KINDS
    assert {kind: set(fields) for kind, fields in EVENTS.items()} == SPEC
    assert {
        "compacted",
        "slow_subscriber",
        "forbidden",
        "bad_request",
        "shutting_down",
    } == END_CODES
    assert set(EVENT_DATA) == EVENT_KINDS  # the fuzz suite draws every kind


def test_the_table_says_each_field_type_for_the_docs() -> None:
    types = {
        kind: {name: rule.type for name, rule in fields.items()} for kind, fields in EVENTS.items()
    }
    assert types["leader_changed"] == {"term": "uint", "leader": "id|null", "previous": "id|null"}
    assert types["kv"]["value"] == "bytes|int|null"
    assert types["member_added"]["address"] == "addr|null"
    assert all(isinstance(t, str) and t for fields in types.values() for t in fields.values())


@given(event=events)
@settings(max_examples=300)
def test_every_kind_round_trips(event: Event) -> None:
    payload = encode_event(event)
    assert decode_event(payload) == event
    assert decode_event_frame(payload) == event


def test_nulls_may_be_left_out_and_are_filled_in() -> None:
    raw = {"v": 1, "pos": 1, "kind": "node_discovered", "at_ms": 5, "data": {"node": "n9"}}
    event = decode_event(cbor2.dumps(raw))
    assert event.data == {"node": "n9", "name": None, "address": None}
    encoded = Event(1, "kv", 2, {"op": "delete", "key": "k", "revision": 3})
    assert cbor2.loads(encode_event(encoded))["data"] == {
        "op": "delete",
        "key": "k",
        "revision": 3,
        "value": None,
        "previous": None,
    }


def test_wire_shape_of_an_event_and_an_end() -> None:
    assert cbor2.loads(encode_event(Event(7, "term_changed", 1000, {"term": 3}))) == {
        "v": 1,
        "pos": 7,
        "kind": "term_changed",
        "at_ms": 1000,
        "data": {"term": 3},
    }
    assert cbor2.loads(encode_end("compacted", "gone", 40)) == {
        "v": 1,
        "end": {"code": "compacted", "message": "gone", "oldest": 40},
    }


@given(end=stream_ends())
def test_every_end_round_trips(end: EventStreamEnd) -> None:
    payload = encode_end(end.code, end.message, end.oldest)
    assert decode_end(payload) == end
    assert decode_event_frame(payload) == end


def test_an_event_is_no_end_and_an_end_no_event() -> None:
    with pytest.raises(ProtocolError, match="an end frame"):
        decode_event(encode_end("shutting_down", "bye"))
    with pytest.raises(ProtocolError, match="an event"):
        decode_end(encode_event(Event(1, "term_changed", 1, {"term": 1})))


def test_progress_frames() -> None:
    assert cbor2.loads(encode_progress(4096)) == {"v": 1, "progress": 4096}
    assert decode_event_frame(encode_progress(4096)) == EventProgress(4096)
    with pytest.raises(ProtocolError, match="a progress frame, not an event"):
        decode_event(encode_progress(1))
    with pytest.raises(ProtocolError, match="a progress frame, not an end frame"):
        decode_end(encode_progress(1))
    for bad, error in (
        ({"v": 1, "progress": -1}, "'progress'"),
        ({"v": 1, "progress": "7"}, "'progress'"),
        ({"v": 1, "progress": 7, "pos": 7}, "holds only 'progress'"),
    ):
        with pytest.raises(ProtocolError, match=error):
            decode_event_frame(cbor2.dumps(bad))
    with pytest.raises(ProtocolError):
        encode_progress(-1)


@given(sub=subscriptions())
@settings(max_examples=100)
def test_every_subscription_round_trips(sub: Subscription) -> None:
    again = encode_subscribe(sub.kinds, sub.prefix, sub.since, sub.traceparent)
    assert decode_subscribe(again) == sub


def test_wire_shape_of_a_subscription() -> None:
    assert cbor2.loads(encode_subscribe()) == {"v": 1, "kinds": None, "prefix": None, "since": None}
    assert cbor2.loads(encode_subscribe(["kv", "leader_changed"], "app/", 9)) == {
        "v": 1,
        "kinds": ["kv", "leader_changed"],
        "prefix": "app/",
        "since": 9,
    }
    assert decode_subscribe(cbor2.dumps({"v": 1})) == Subscription()  # nulls may be left out
    tp = f"00-{'ab' * 16}-{'cd' * 8}-01"
    traced = decode_subscribe(encode_subscribe(since=3, traceparent=tp))
    assert traced == Subscription(since=3, traceparent=tp)  # its span's parent, on the node
    unsorted = decode_subscribe(cbor2.dumps({"v": 1, "kinds": ["node_lost", "kv"]}))
    assert unsorted.kinds == frozenset({"kv", "node_lost"})


def _sub(**fields: object) -> bytes:
    return cbor2.dumps({"v": 1, **fields})


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (_sub(kinds=["weather"]), "unknown event kind 'weather'"),
        (_sub(kinds=["kv", "kv"]), "without repeats"),
        (_sub(kinds=[]), "'kinds' is empty: give at least one, or null for all"),
        (_sub(kinds="kv"), "'kinds' must be a list"),
        (_sub(kinds=[1]), "unknown event kind 1"),
        (_sub(kinds=[*EVENT_KINDS, "kv"]), "'kinds' must be a list of at most"),
        (_sub(kinds=["node_lost"], prefix="app/"), "'prefix' filters kv events"),
        (_sub(prefix=5), "'prefix' must be a str"),
        (_sub(prefix="p" * (MAX_KEY + 1)), "'prefix' must be a str"),
        (_sub(since=-1), "'since' must be an unsigned"),
        (_sub(since=True), "'since' must be an unsigned"),
        (_sub(since=1.5), "'since' must be an unsigned"),
        (_sub(until=5), "unknown field"),
        (_sub(tp="00-XY"), "'tp' must be a traceparent"),
        (cbor2.dumps({"v": 2}), "unsupported version 2"),
        (cbor2.dumps({"kinds": None}), "no version field"),
        (cbor2.dumps(["kv"]), "expected a map"),
    ],
)
def test_bad_subscriptions_are_refused(payload: bytes, error: str) -> None:
    with pytest.raises(ProtocolError, match=error):
        decode_subscribe(payload)


def test_the_subscribe_encoder_refuses_what_the_node_would_refuse() -> None:
    with pytest.raises(ProtocolError, match="'kinds' must be null or event kinds"):
        encode_subscribe("kv")
    with pytest.raises(ProtocolError, match="unknown event kind"):
        encode_subscribe(["kv", "rain"])
    with pytest.raises(ProtocolError, match="'prefix' filters kv events"):
        encode_subscribe({"term_changed"}, prefix="")
    with pytest.raises(ProtocolError, match="'since' must be an unsigned"):
        encode_subscribe(since=-5)


def _event(kind: object = "kv", data: object = None, **fields: object) -> bytes:
    return cbor2.dumps(
        {"v": 1, "pos": 1, "kind": kind, "at_ms": 2, "data": KV if data is None else data, **fields}
    )


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (_event("weather", {}), "unknown kind 'weather'"),
        (_event(None, {}), "unknown kind None"),
        (cbor2.dumps({"v": 1, "pos": 1, "at_ms": 2, "data": {}}), "missing field 'kind'"),
        (cbor2.dumps({"v": 1, "pos": 1, "kind": "kv", "at_ms": 2}), "missing field 'data'"),
        (cbor2.dumps({"v": 1, "kind": "kv", "at_ms": 2, "data": KV}), "missing field 'pos'"),
        (cbor2.dumps({"v": 1, "pos": 1, "kind": "kv", "data": KV}), "missing field 'at_ms'"),
        (_event(pos=-1), "'pos' must be an unsigned"),
        (_event(at_ms=True), "'at_ms' must be an unsigned"),
        (_event(extra=1), "unknown field"),
        (_event(end={"code": "compacted", "message": ""}), "an end frame holds only 'end'"),
        (_event(tp="00"), "no trace context"),
        (_event(data=[]), "'data' must be a map"),
        (_event(data={**KV, "ttl": 5}), "unknown field"),
        (_event(data={k: v for k, v in KV.items() if k != "key"}), "missing field 'key'"),
        (_event(data={**KV, "op": "append"}), "'op' must be one of"),
        (_event(data={**KV, "key": ""}), "'key' must be a str of 1"),
        (_event(data={**KV, "key": "é" * (MAX_KEY // 2 + 1)}), "bytes of UTF-8"),
        (_event(data={**KV, "revision": None}), "'revision' must be an unsigned"),
        (_event(data={**KV, "value": "text"}), "'value' must be bytes"),
        (_event(data={**KV, "value": b"x" * (MAX_VALUE + 1)}), "'value' must be bytes"),
        (_event(data={**KV, "value": 1 << 63}), "'value' must be a signed 64-bit"),
        (_event(data={**KV, "value": True}), "'value' must be bytes"),
        (_event(data={**KV, "value": 5}), "the value after set must be bytes"),
        (_event(data={**KV, "op": "cas", "value": None}), "the value after cas must be bytes"),
        (_event(data={**KV, "op": "incr", "value": b"5"}), "the value after incr must be an int"),
        (_event(data={**KV, "op": "delete", "value": b""}), "the value after delete must be null"),
        (_event(data={**KV, "previous": []}), "'previous' must be bytes"),
        (_event("term_changed", {}), "missing field 'term'"),
        (_event("leader_changed", {"term": 1, "leader": ""}), "'leader' must be a str of 1"),
        (_event("role_changed", {"node": "n", "term": 1, "role": "unknown"}), "'role' must be"),
        (_event("member_added", {"node": "n", "voter": 1}), "'voter' must be a bool"),
        (
            _event("member_added", {"node": "n", "voter": True, "address": "nowhere"}),
            "'address' must be an address",
        ),
        (_event("node_discovered", {"node": "n", "name": 3}), "'name' must be a str"),
        (_event("node_lost", {"node": "n" * 129}), "'node' must be a str of 1 to 128"),
        (_event("snapshot_created", {"index": 1, "term": 1}), "missing field 'size'"),
        (
            _event(
                "cluster_split_detected",
                {"cluster": "c", "cluster_id": "", "other_cluster_id": "o", "other_node": "n"},
            ),
            "'cluster_id' must be a str of 1",
        ),
        (cbor2.dumps({"v": 3, "pos": 1}), "unsupported version 3"),
    ],
)
def test_bad_events_are_refused(payload: bytes, error: str) -> None:
    with pytest.raises(ProtocolError, match=error):
        decode_event_frame(payload)


def _end(**end: object) -> bytes:
    return cbor2.dumps({"v": 1, "end": end})


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (_end(code="oops", message=""), "unknown code 'oops'"),
        (_end(message=""), "missing field 'code'"),
        (_end(code="forbidden"), "missing field 'message'"),
        (_end(code="forbidden", message=5), "'message' must be a str"),
        (_end(code="forbidden", message="x" * 4097), "'message' must be a str"),
        (_end(code="compacted", message="", oldest=-1), "'oldest' must be an unsigned"),
        (_end(code="slow_subscriber", message="", oldest=3), "only 'compacted' carries"),
        (_end(code="forbidden", message="", why=1), "unknown field"),
        (cbor2.dumps({"v": 1, "end": "compacted"}), "'end' must be a map"),
    ],
)
def test_bad_ends_are_refused(payload: bytes, error: str) -> None:
    with pytest.raises(ProtocolError, match=error):
        decode_event_frame(payload)


def test_the_event_encoders_refuse_what_a_subscriber_would_refuse() -> None:
    with pytest.raises(ProtocolError, match="the value after incr must be an int"):
        encode_event(Event(1, "kv", 1, {**KV, "op": "incr"}))
    with pytest.raises(ProtocolError, match="unknown kind"):
        encode_event(Event(1, "rain", 1, {}))
    with pytest.raises(ProtocolError, match="'pos' must be an unsigned"):
        encode_event(Event(-1, "term_changed", 1, {"term": 1}))
    with pytest.raises(ProtocolError, match="'data' must be a map"):
        encode_event(Event(1, "term_changed", 1, [1]))  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match="must be an Event"):
        encode_event({"pos": 1})  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match="only 'compacted' carries"):
        encode_end("forbidden", "no", 3)
    with pytest.raises(ProtocolError, match="unknown code"):
        encode_end("done", "no")


def _kv(pos: int, key: str = "app/x") -> bytes:
    return encode_event(Event(pos, "kv", 1, {**KV, "key": key}))


def test_the_reader_keeps_the_stream_in_order_and_to_the_subscription() -> None:
    reader = EventStreamReader(Subscription(since=10))
    with pytest.raises(ProtocolError, match="position 10 after 10"):
        reader.feed(_kv(10))
    assert isinstance(reader.feed(_kv(11)), Event)
    assert isinstance(reader.feed(_kv(15)), Event)
    assert reader.last == 15
    with pytest.raises(ProtocolError, match="position 12 after 15"):
        reader.feed(_kv(12))
    # Progress rises like positions, and moves where to resume.
    with pytest.raises(ProtocolError, match="position 15 after 15"):
        reader.feed(encode_progress(15))
    assert reader.feed(encode_progress(20)) == EventProgress(20)
    assert reader.last == 20
    with pytest.raises(ProtocolError, match="position 18 after 20"):
        reader.feed(_kv(18))
    end = reader.feed(encode_end("slow_subscriber", "read faster"))
    assert end == EventStreamEnd("slow_subscriber", "read faster")
    with pytest.raises(ProtocolError, match="after the end"):
        reader.feed(_kv(21))

    live = EventStreamReader(Subscription(kinds=frozenset({"kv"}), prefix="app/"))
    assert live.last is None
    assert isinstance(live.feed(_kv(0)), Event)  # live from now: any first position
    with pytest.raises(ProtocolError, match="outside the prefix"):
        live.feed(_kv(1, "other/x"))
    with pytest.raises(ProtocolError, match="was not asked for"):
        live.feed(encode_event(Event(2, "term_changed", 1, {"term": 1})))


def test_the_reader_refuses_malformed_frames() -> None:
    reader = EventStreamReader(Subscription())
    with pytest.raises(ProtocolError, match="invalid CBOR"):
        reader.feed(b"\xff")


@pytest.mark.parametrize("kind", sorted(EVENT_KINDS))
@given(data=st.data())
@settings(max_examples=10)
def test_each_kind_refuses_a_missing_or_unknown_field(kind: str, data: st.DataObject) -> None:
    full: dict[str, Any] = data.draw(EVENT_DATA[kind])
    for name, rule in EVENTS[kind].items():
        if rule.required:
            with pytest.raises(ProtocolError, match=f"missing field '{name}'"):
                decode_event(_event(kind, {k: v for k, v in full.items() if k != name}))
    with pytest.raises(ProtocolError, match="unknown field"):
        decode_event(_event(kind, {**full, "surprise": 1}))
