"""Hostile input into every decoder: the only outcomes are ProtocolError or a valid value.

"Valid" is checked, not assumed: `decode_checked` re-encodes whatever a decoder returns with the
matching encoder (which validates too) and decodes it again to the same value.
"""

from __future__ import annotations

import contextlib
import io
import random
from dataclasses import replace
from typing import Any

import cbor2
import pytest
from cbor_mutations import mutate
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from wire_strategies import (
    DECODERS,
    MGMT_RESULTS,
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
    stream_ends,
    subscriptions,
    traceparents,
)

from quicraft.core.types import Message, MessageType
from quicraft.wire import (
    BackupError,
    BackupReceiver,
    Event,
    EventStreamEnd,
    EventStreamReader,
    FrameDecoder,
    ProtocolError,
    SnapshotAssembler,
    Subscription,
    backup_frames,
    backup_info,
    decode_end,
    decode_event,
    decode_message,
    encode_backup_chunk,
    encode_backup_trailer,
    encode_end,
    encode_event,
    encode_frame,
    encode_message,
    encode_progress,
    encode_request,
    encode_response,
    encode_snapshot_chunk,
    encode_snapshot_header,
    peek_hello,
    snapshot_frames,
    verify_backup,
    write_backup,
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


# -- mutations of the encoding itself, and every reader that keeps state across frames -------
# The tests above mutate decoded values (so the CBOR stays as cbor2 writes it) or feed garbage;
# these mutate the bytes of valid encodings (cbor_mutations.py): lengths that lie, indefinite
# lengths, repeated keys, broken UTF-8, swapped types. Each reader that assembles a stream
# (snapshot, events, backup, backup file) gets a valid stream with one frame so mutated.

#: The thin decoders DECODERS leaves out, each fed every mutated payload too.
WRAPPERS = (peek_hello, decode_message, decode_event, decode_end)


@given(valid=ALL_VALID, rng=st.randoms(use_true_random=False), other=st.sampled_from(NAMES))
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
def test_mutated_encodings(valid: tuple[str, bytes], rng: random.Random, other: str) -> None:
    name, payload = valid
    data = mutate(payload, rng)
    decode_checked(name, data)
    decode_checked(other, data)
    for decode in WRAPPERS:
        with contextlib.suppress(ProtocolError):
            decode(data)


def _mutate_one(frames: list[bytes], rng: random.Random) -> list[bytes]:
    """`frames` with one of them mutated, dropped or repeated."""
    frames = list(frames)
    at = rng.randrange(len(frames))
    action = rng.randrange(4)
    if action == 0:
        del frames[at]
    elif action == 1:
        frames.insert(at, frames[at])
    else:
        frames[at] = mutate(frames[at], rng)
    return frames


@given(
    m=messages(st.just(MessageType.SNAPSHOT)),
    chunk_size=st.integers(1, 64),
    rng=st.randoms(use_true_random=False),
)
@FUZZ
def test_assembler_fed_a_mutated_stream_fails_cleanly(
    m: Message, chunk_size: int, rng: random.Random
) -> None:
    frames = _mutate_one(list(snapshot_frames(m, chunk_size=chunk_size)), rng)
    assume(frames)  # not the header of a snapshot of no data, dropped
    header, *chunks = frames
    try:
        assembler = SnapshotAssembler(header)
    except ProtocolError:
        return
    for chunk in chunks:
        with contextlib.suppress(ProtocolError):
            assembler.feed(chunk)
        assert 0 <= assembler.received <= assembler.size
    if assembler.complete:
        got = assembler.message()
        assert got.snapshot is not None and len(got.snapshot.data) == assembler.size


@given(
    sub=subscriptions(),
    items=st.lists(st.one_of(events, st.none()), min_size=1, max_size=5),
    end=stream_ends(),
    rng=st.randoms(use_true_random=False),
)
@FUZZ
def test_event_reader_fed_a_mutated_stream_fails_cleanly(
    sub: Subscription,
    items: list[Event | None],
    end: EventStreamEnd,
    rng: random.Random,
) -> None:
    sub = replace(sub, kinds=None, prefix=None, since=None)  # so every event is one it wants
    frames = [
        encode_progress(pos) if item is None else encode_event(replace(item, pos=pos))
        for pos, item in enumerate(items, 1)
    ]
    reader = EventStreamReader(sub)
    for frame in _mutate_one([*frames, encode_end(end.code, end.message, end.oldest)], rng):
        last = reader.last
        try:
            got = reader.feed(frame)
        except ProtocolError:
            assert reader.last == last
            continue
        assert isinstance(got, EventStreamEnd) or (last is None or got.pos > last)


@given(
    result=MGMT_RESULTS["backup"],
    data=st.binary(min_size=1, max_size=100),
    chunk_size=st.integers(1, 32),
    rng=st.randoms(use_true_random=False),
)
@FUZZ
def test_backup_receiver_fed_a_mutated_stream_fails_cleanly(
    result: dict[str, Any], data: bytes, chunk_size: int, rng: random.Random
) -> None:
    result = {**result, "size": len(data)}
    _, *frames = backup_frames(result, [data], id=1, chunk_size=chunk_size)
    receiver = BackupReceiver(result)
    kept = b""
    for frame in _mutate_one(frames, rng):
        try:
            got = receiver.feed(frame)
        except ProtocolError:
            continue
        if isinstance(got, bytes):
            kept += got
        assert 0 <= receiver.received <= receiver.size
    assert not receiver.complete or kept == data


@given(
    result=MGMT_RESULTS["backup"],
    data=st.binary(max_size=100),
    rng=st.randoms(use_true_random=False),
    in_header=st.booleans(),
)
@FUZZ
def test_backup_file_mutated_is_refused(
    result: dict[str, Any], data: bytes, rng: random.Random, in_header: bool
) -> None:
    """A backup file whose header map or whole bytes were mutated: BackupError, or the
    same file (a mutation that changed nothing the reader reads, e.g. a key repeated)."""
    info = backup_info({**result, "size": len(data)}, cluster="prod", created_ms=1)
    fp = io.BytesIO()
    write_backup(fp, info, [data])
    whole = fp.getvalue()
    if in_header:
        length = int.from_bytes(whole[10:14], "big")
        header = mutate(whole[14 : 14 + length], rng)
        damaged = whole[:10] + len(header).to_bytes(4, "big") + header + whole[14 + length :]
    else:
        damaged = mutate(whole, rng)
    assume(damaged != whole)
    with pytest.raises(BackupError):
        verify_backup(io.BytesIO(damaged), chunk_size=rng.randint(1, 64))
