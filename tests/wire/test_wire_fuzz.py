"""Hostile input into every decoder: the only outcomes are ProtocolError or a valid value.

"Valid" is checked, not assumed: `decode_checked` re-encodes whatever a decoder returns with the
matching encoder (which validates too) and decodes it again to the same value.
"""

from __future__ import annotations

import contextlib
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from wire_strategies import (
    DECODERS,
    ODD_VALUES,
    RESULTS,
    cbor_values,
    decode_checked,
    envelope_like,
    errors,
    events,
    messages,
    new_envelope_like,
    new_valid_payloads,
    requests,
    subscriptions,
    traceparents,
)

from quicraft.core.types import Message, MessageType
from quicraft.wire import (
    BackupReceiver,
    Event,
    EventStreamReader,
    FrameDecoder,
    ProtocolError,
    SnapshotAssembler,
    Subscription,
    encode_backup_chunk,
    encode_backup_trailer,
    encode_event,
    encode_frame,
    encode_message,
    encode_request,
    encode_response,
    encode_snapshot_chunk,
    encode_snapshot_header,
    snapshot_frames,
)

NAMES = sorted(DECODERS)
FUZZ = settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])


def _dumps(value: object) -> bytes:
    try:
        return cbor2.dumps(value)
    except Exception:  # a value cbor2 itself will not write (e.g. a tag number out of range)
        assume(False)
        raise


@st.composite
def valid_payloads(draw: st.DrawFn) -> tuple[str, bytes]:
    """A valid encoding, and the decoder it is meant for."""
    kind = draw(st.sampled_from(["message", "request", "response", "chunk", "header"]))
    tp = draw(traceparents)
    if kind == "message":
        return "message", encode_message(draw(messages()), traceparent=tp)
    if kind == "request":
        op, args = draw(requests)
        return "request", encode_request(op, args, traceparent=tp)
    if kind == "response":
        op = draw(st.sampled_from(sorted(RESULTS)))
        if draw(st.booleans()):
            payload = encode_response(ok=True, result=draw(RESULTS[op]), traceparent=tp)
        else:
            payload = encode_response(ok=False, error=draw(errors), traceparent=tp)
        return f"response to {op}", payload
    if kind == "chunk":
        return "snapshot chunk", encode_snapshot_chunk(draw(st.integers(0, 1 << 40)), b"data")
    m = draw(messages(st.just(MessageType.SNAPSHOT)))
    return "snapshot header", encode_snapshot_header(m, traceparent=tp)


@given(data=st.binary(max_size=300), name=st.sampled_from(NAMES))
@FUZZ
def test_random_bytes(data: bytes, name: str) -> None:
    decode_checked(name, data)


@given(value=cbor_values, name=st.sampled_from(NAMES))
@FUZZ
def test_random_cbor_values(value: object, name: str) -> None:
    decode_checked(name, _dumps(value))


@given(value=st.one_of(envelope_like, new_envelope_like), name=st.sampled_from(NAMES))
@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
def test_random_maps_with_real_field_names(value: object, name: str) -> None:
    decode_checked(name, _dumps(value))


# Valid payloads of every protocol: twice the examples, as the two families share them.
ALL_VALID = st.one_of(valid_payloads(), new_valid_payloads())
FUZZ_ALL = settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])


@given(valid=ALL_VALID)
@FUZZ_ALL
def test_valid_payloads_decode_to_valid_values(valid: tuple[str, bytes]) -> None:
    name, payload = valid
    assert decode_checked(name, payload) is not None


@given(valid=ALL_VALID, flips=st.lists(st.integers(0, 1 << 20), min_size=1, max_size=4))
@FUZZ_ALL
def test_bit_flips(valid: tuple[str, bytes], flips: list[int]) -> None:
    name, payload = valid
    data = bytearray(payload)
    for flip in flips:
        data[(flip // 8) % len(data)] ^= 1 << (flip % 8)
    decode_checked(name, bytes(data))


@given(valid=ALL_VALID, cut=st.integers(0, 1 << 20))
@FUZZ_ALL
def test_truncations_are_always_refused(valid: tuple[str, bytes], cut: int) -> None:
    name, payload = valid
    assert decode_checked(name, payload[: cut % len(payload)]) is None


def _paths(value: object, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every position inside `value` (a key of a map or an index of a list)."""
    out: list[tuple[Any, ...]] = []
    items = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for key, child in items:
        out.append((*path, key))
        out += _paths(child, (*path, key))
    return out


def _parent(root: Any, path: tuple[Any, ...]) -> Any:
    for key in path[:-1]:
        root = root[key]
    return root


@given(
    valid=ALL_VALID,
    pick=st.integers(0, 1 << 16),
    action=st.sampled_from(["delete", "swap", "add"]),
    odd=st.one_of(st.sampled_from(ODD_VALUES), cbor_values),
)
@settings(max_examples=800, suppress_health_check=[HealthCheck.too_slow])
def test_structural_mutations(
    valid: tuple[str, bytes], pick: int, action: str, odd: object
) -> None:
    """Field deletions, type swaps and additions anywhere in a valid encoding."""
    name, payload = valid
    root = cbor2.loads(payload)
    paths = _paths(root)
    assume(paths)  # a backup chunk is a bare byte string: nothing inside to mutate
    path = paths[pick % len(paths)]
    parent = _parent(root, path)
    if action == "delete":
        del parent[path[-1]]
    elif action == "swap":
        parent[path[-1]] = odd
    elif isinstance(parent, dict):
        parent[f"extra{pick}"] = odd
    else:
        parent.append(odd)
    decode_checked(name, _dumps(root))


@pytest.mark.parametrize(
    "tag",
    [
        0,
        1,
        2,
        3,
        4,
        5,
        21,
        22,
        23,
        24,
        25,
        28,
        29,
        30,
        32,
        33,
        34,
        35,
        36,
        37,
        52,
        54,
        100,
        256,
        258,
        260,
        261,
        1004,
        55799,
        999,
        (1 << 64) - 1,
    ],
)
@pytest.mark.parametrize("inner", ["2020-01-01T00:00:00Z", b"\x01" * 9, 5, [1, 2], "(a+)+$"])
def test_no_tag_gets_through_anywhere(tag: int, inner: object) -> None:
    """Tags, cbor2's built-in ones included (dates, bignums, regexes, shared refs), are refused."""
    for name in NAMES:
        for payload in (
            _dumps(cbor2.CBORTag(tag, inner)),
            _dumps({"v": 1, "op": "set", "args": {"key": "k", "value": cbor2.CBORTag(tag, inner)}}),
            _dumps({"v": cbor2.CBORTag(tag, inner)}),
        ):
            assert decode_checked(name, payload) is None


def test_a_cyclic_shared_reference_is_refused() -> None:
    cyclic = b"\xd8\x1c\x81\xd8\x1d\x00"  # tag 28 [tag 29 0]: a list containing itself
    for name in NAMES:
        assert decode_checked(name, cyclic) is None


@given(data=st.binary(max_size=400), sizes=st.lists(st.integers(1, 50), max_size=8))
@FUZZ
def test_frames_of_random_bytes_into_every_decoder(data: bytes, sizes: list[int]) -> None:
    """The whole receive path: a frame decoder fed garbage, its frames into every decoder."""
    decoder = FrameDecoder(max_frame=256)
    pos = 0
    for size in [*sizes, len(data)]:
        try:
            frames = decoder.feed(data[pos : pos + size])
        except ProtocolError:
            return
        pos += size
        for frame in frames:
            for name in NAMES:
                decode_checked(name, frame)


@given(
    m=messages(st.just(MessageType.SNAPSHOT)),
    chunks=st.lists(st.one_of(st.binary(max_size=40), cbor_values.map(cbor2.dumps)), max_size=5),
)
@FUZZ
def test_assembler_fed_garbage_fails_cleanly(m: Message, chunks: list[bytes]) -> None:
    header, *real = snapshot_frames(m, chunk_size=16)
    assembler = SnapshotAssembler(header)
    for chunk in [*real[:1], *chunks]:
        with contextlib.suppress(ProtocolError):
            assembler.feed(chunk)
        assert 0 <= assembler.received <= assembler.size
    try:
        assembler.message()
    except ProtocolError:
        assert not assembler.complete


def test_frame_payloads_stay_bounded_through_the_whole_path() -> None:
    huge = encode_frame(
        b"\x5a" + (16 * 1024 * 1024 - 1).to_bytes(4, "big")
    )  # claims 16 MiB of bytes
    (frame,) = FrameDecoder().feed(huge)
    for name in NAMES:
        assert decode_checked(name, frame) is None


# -- management, events and backup protocols ----------------------------------------------
# Their decoders are in DECODERS too, so every test above already feeds them random bytes,
# random CBOR, tags, cycles, framed garbage, their valid payloads and their field names.


@given(
    sub=subscriptions(),
    frames=st.lists(
        st.one_of(
            st.binary(max_size=40),
            cbor_values.map(cbor2.dumps),
            events.map(encode_event),
            new_envelope_like.map(cbor2.dumps),
        ),
        max_size=6,
    ),
)
@FUZZ
def test_event_reader_fed_garbage_fails_cleanly(sub: Subscription, frames: list[bytes]) -> None:
    reader = EventStreamReader(sub)
    for frame in frames:
        last = reader.last
        try:
            got = reader.feed(frame)
        except ProtocolError:
            assert reader.last == last
            continue
        if isinstance(got, Event):
            assert reader.last == got.pos and (last is None or got.pos > last)


@given(
    size=st.integers(0, 64),
    frames=st.lists(
        st.one_of(
            st.binary(max_size=40),
            st.binary(min_size=1, max_size=30).map(encode_backup_chunk),
            st.binary(min_size=32, max_size=32).map(encode_backup_trailer),
            cbor_values.map(cbor2.dumps),
            new_envelope_like.map(cbor2.dumps),
        ),
        max_size=6,
    ),
)
@FUZZ
def test_backup_receiver_fed_garbage_fails_cleanly(size: int, frames: list[bytes]) -> None:
    receiver = BackupReceiver(
        {"index": 1, "term": 1, "size": size, "membership": {"voters": ["a"], "learners": []}}
    )
    for frame in frames:
        with contextlib.suppress(ProtocolError):
            receiver.feed(frame)
        assert 0 <= receiver.received <= receiver.size
        assert not receiver.complete or receiver.received == receiver.size
