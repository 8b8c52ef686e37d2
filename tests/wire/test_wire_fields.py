"""The shared decoding rules: one bounded, tag-free CBOR item; strict types; short error text."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

import cbor2
import pytest

from quicraft.wire import (
    EVENT_KINDS,
    MAX_KEY,
    MAX_VALUE,
    ProtocolError,
    decode_mgmt_request,
    decode_request,
    decode_subscribe,
    encode_mgmt_request,
    encode_request,
    encode_subscribe,
)
from quicraft.wire.fields import (
    as_bytes,
    as_int64,
    as_str,
    as_uint,
    decode_item,
    open_envelope,
    show,
)


def test_builtin_tags_are_refused_by_the_decoder_itself() -> None:
    # If cbor2 stopped consulting our semantic_decoders, dates would decode to datetime here.
    for tag, value in [(0, "2020-01-01T00:00:00Z"), (2, b"\x01"), (35, "a+"), (258, [1])]:
        with pytest.raises(ProtocolError, match="CBOR tags are not allowed"):
            decode_item(cbor2.dumps(cbor2.CBORTag(tag, value)))


def test_exactly_one_item() -> None:
    assert decode_item(b"\x01") == 1
    with pytest.raises(ProtocolError, match="2 trailing bytes"):
        decode_item(b"\x01\x02\x03")
    with pytest.raises(ProtocolError, match="invalid CBOR"):
        decode_item(b"")


def test_nesting_is_bounded() -> None:
    assert decode_item(b"\x81" * 4 + b"\x00") == [[[[0]]]]
    with pytest.raises(ProtocolError, match="depth"):
        decode_item(b"\x81" * 5 + b"\x00")


def test_version_is_checked_before_the_fields() -> None:
    with pytest.raises(ProtocolError, match="unsupported version 2"):
        open_envelope(cbor2.dumps({"v": 2, "new_field": 1}), "test", frozenset())
    with pytest.raises(ProtocolError, match="unsupported version True"):
        open_envelope(cbor2.dumps({"v": True}), "test", frozenset())
    with pytest.raises(ProtocolError, match="unknown field"):
        open_envelope(cbor2.dumps({"v": 1, "new_field": 1}), "test", frozenset())
    assert open_envelope(cbor2.dumps({"v": 1, "a": 1}), "test", frozenset({"a"})) == {
        "v": 1,
        "a": 1,
    }


def test_checkers_are_strict_about_types_and_bounds() -> None:
    assert as_uint((1 << 64) - 1, "w", "n") == (1 << 64) - 1
    assert as_int64(-(1 << 63), "w", "n") == -(1 << 63)
    for bad in (True, -1, 1 << 64, 1.0, "1", None):
        with pytest.raises(ProtocolError):
            as_uint(bad, "w", "n")
    with pytest.raises(ProtocolError):
        as_int64(1 << 63, "w", "n")
    with pytest.raises(ProtocolError, match="w: n must be a str of 1 to 3 characters, got str"):
        as_str("abcd", "w", "n", max_len=3, min_len=1)
    with pytest.raises(ProtocolError, match="got bytearray"):
        as_bytes(bytearray(b"x"), "w", "n", max_len=3)


def test_error_text_never_holds_a_whole_big_value() -> None:
    assert len(show(b"x" * 10_000_000)) <= 40
    assert show(list(range(1000))) == "<list of 1000>"
    assert show("short") == "'short'"


def test_show_builds_no_more_than_it_shows() -> None:
    # A short list holding a long one: repr of it all would be megabytes, cut to 40 characters.
    value = [[0] * 1_000_000, "x"]
    tracemalloc.start()
    try:
        text = show(value)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert text == "[<list of 1000000>, 'x']"
    assert peak < 64 * 1024
    assert show([[1, [2]], {"a": b"b"}]) == "[[1, [2]], {'a': b'b'}]"  # small ones in full


def test_an_int_too_long_to_print_is_still_a_protocol_error() -> None:
    # Python refuses str() of an int over 4300 digits: the message must not need it.
    with pytest.raises(ProtocolError, match="int <int of 16610 bits>"):
        encode_request("incr", {"key": "k", "by": 10**5000})


_LARGEST_REQUESTS = [
    (
        decode_request,
        encode_request(
            "cas",
            {"key": "k" * MAX_KEY, "expected": b"e" * MAX_VALUE, "new": b"n" * MAX_VALUE,
             "session": 2**64 - 1, "seq": 2**64 - 1, "ack": 2**64 - 1},
            id=2**64 - 1,
            traceparent="0" * 55,
        ),
    ),
    (
        decode_mgmt_request,
        encode_mgmt_request(
            "add_member", {"address": ".".join(["h" * 60] * 4) + ":65535", "learner": True}, id=1,
            traceparent="0" * 55,
        ),
    ),
    (
        decode_subscribe,
        encode_subscribe(EVENT_KINDS, "p" * MAX_KEY, 2**64 - 1, traceparent="0" * 55),
    ),
]  # fmt: skip


@pytest.mark.parametrize(("decode", "largest"), _LARGEST_REQUESTS)
def test_a_request_of_many_tiny_containers_is_refused_unbuilt(
    decode: Callable[[bytes], object], largest: bytes
) -> None:
    """A frame of one-byte empty lists would become a Python list each (a 16 MiB frame: over a
    GB and seconds of the node's event loop); any reader may send one. Requests are counted
    before they are decoded, and the largest valid one of each protocol is well within."""
    decode(largest)
    hostile = b"\xa2\x61v\x01\x61x\x9a" + (200_000).to_bytes(4, "big") + b"\x80" * 200_000
    tracemalloc.start()
    try:
        with pytest.raises(ProtocolError, match="more than 256 CBOR items"):
            decode(hostile)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024  # decoded, the 200,000 lists take some 14 MB


def test_items_are_counted_by_their_heads() -> None:
    # 5 items around a list of 251 strings whose bytes look like heads (of empty lists): 256.
    strings = [b"\x80" * 1000, "\x00" * 70_000] * 125 + [b""]
    with pytest.raises(ProtocolError, match="unknown field"):  # counted, then decoded
        open_envelope(cbor2.dumps({"v": 1, "x": strings}), "w", frozenset(), max_items=256)
    one_more = cbor2.dumps({"v": 1, "x": [*strings, 0]})
    with pytest.raises(ProtocolError, match="w: more than 256 CBOR items"):
        open_envelope(one_more, "w", frozenset(), max_items=256)


@pytest.mark.parametrize("items", [6, 200, 253, 254, 256, 257, 300])
def test_the_item_limit_holds_for_requests_let_through_by_their_length(items: int) -> None:
    # A frame no longer than the limit cannot hold more items than it and is not counted
    # (up to 253 items here fit in 256 bytes); longer ones are counted.
    raw = cbor2.dumps({"v": 1, "x": [0] * (items - 5)})  # the map, "v", 1, "x", the list
    assert (len(raw) <= 256) == (items <= 253)
    expected = "unknown field" if items <= 256 else "more than 256 CBOR items"
    with pytest.raises(ProtocolError, match=expected):
        open_envelope(raw, "w", frozenset(), max_items=256)
