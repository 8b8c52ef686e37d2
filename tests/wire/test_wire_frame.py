"""Framing: payloads come out whole and in order however the stream is cut, and the limit holds."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quicraft.wire import MAX_FRAME, FrameDecoder, ProtocolError, encode_frame

PAYLOADS = [b"", b"a", b"hello", bytes(range(256)) * 2, b"", b"\x00\x00\x00\x04"]
STREAM = b"".join(encode_frame(p) for p in PAYLOADS)


def test_a_frame_is_a_big_endian_length_and_the_payload() -> None:
    assert encode_frame(b"abc") == b"\x00\x00\x00\x03abc"
    assert encode_frame(b"") == b"\x00\x00\x00\x00"
    assert encode_frame(b"x" * 0x010203)[:4] == b"\x00\x01\x02\x03"


def test_all_frames_of_one_read_come_out_in_order() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(STREAM) == PAYLOADS
    assert decoder.buffered == 0
    decoder.eof()  # ended between frames: fine


def test_split_at_every_byte_boundary() -> None:
    for cut in range(len(STREAM) + 1):
        decoder = FrameDecoder()
        got = decoder.feed(STREAM[:cut]) + decoder.feed(STREAM[cut:])
        assert got == PAYLOADS, cut
        assert decoder.buffered == 0


def test_split_at_every_pair_of_boundaries() -> None:
    stream = b"".join(encode_frame(p) for p in [b"ab", b"", b"cde"])
    for i in range(len(stream) + 1):
        for j in range(i, len(stream) + 1):
            decoder = FrameDecoder()
            got = decoder.feed(stream[:i]) + decoder.feed(stream[i:j]) + decoder.feed(stream[j:])
            assert got == [b"ab", b"", b"cde"], (i, j)


def test_one_byte_at_a_time() -> None:
    decoder = FrameDecoder()
    got: list[bytes] = []
    for i in range(len(STREAM)):
        got += decoder.feed(STREAM[i : i + 1])
        # Nothing is handed out before its last byte is in.
        assert len(got) <= sum(1 for _ in _complete_frames_in(STREAM[: i + 1]))
    assert got == PAYLOADS


def _complete_frames_in(prefix: bytes) -> list[bytes]:
    out, pos = [], 0
    while len(prefix) - pos >= 4:
        size = int.from_bytes(prefix[pos : pos + 4], "big")
        if len(prefix) - pos - 4 < size:
            break
        out.append(prefix[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return out


@given(
    payloads=st.lists(st.binary(max_size=300), max_size=8),
    cuts=st.lists(st.integers(0, 4000), max_size=10),
)
@settings(max_examples=150)
def test_any_chunking_gives_back_the_payloads(payloads: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(encode_frame(p) for p in payloads)
    bounds = sorted({0, len(stream), *(c for c in cuts if c <= len(stream))})
    decoder = FrameDecoder()
    got: list[bytes] = []
    for lo, hi in itertools.pairwise(bounds):
        got += decoder.feed(memoryview(stream)[lo:hi])  # any bytes-like will do
    assert got == payloads
    decoder.eof()


def test_a_frame_at_the_limit_passes_one_above_is_refused_from_its_header() -> None:
    decoder = FrameDecoder(max_frame=10)
    assert decoder.feed(encode_frame(b"x" * 10, max_frame=10)) == [b"x" * 10]
    with pytest.raises(ProtocolError, match="11 bytes exceeds the limit of 10"):
        decoder.feed(b"\x00\x00\x00\x0b")  # the header alone: no payload is waited for
    assert decoder.buffered == 0


def test_the_default_limit_is_16_mib_and_checked_before_buffering() -> None:
    assert MAX_FRAME == 16 * 1024 * 1024
    decoder = FrameDecoder()
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        decoder.feed((MAX_FRAME + 1).to_bytes(4, "big") + b"partial")
    with pytest.raises(ProtocolError):
        FrameDecoder().feed(b"\xff\xff\xff\xff")


def test_after_an_error_the_decoder_stays_broken() -> None:
    decoder = FrameDecoder(max_frame=4)
    with pytest.raises(ProtocolError):
        decoder.feed(encode_frame(b"ok") + b"\x00\x00\x01\x00")
    with pytest.raises(ProtocolError, match="exceeds"):
        decoder.feed(encode_frame(b"ok"))
    with pytest.raises(ProtocolError, match="exceeds"):
        decoder.eof()


@pytest.mark.parametrize("tail", [b"\x00", b"\x00\x00\x00", b"\x00\x00\x00\x05abc"])
def test_a_stream_ending_inside_a_frame_is_an_error(tail: bytes) -> None:
    decoder = FrameDecoder()
    assert decoder.feed(encode_frame(b"whole") + tail) == [b"whole"]
    assert decoder.buffered == len(tail)
    with pytest.raises(ProtocolError, match="ended inside a frame"):
        decoder.eof()


def test_encoding_refuses_what_the_peer_would_refuse() -> None:
    with pytest.raises(ProtocolError):
        encode_frame(b"x" * 11, max_frame=10)
    with pytest.raises(ValueError):
        FrameDecoder(max_frame=-1)


@given(st.binary(max_size=200), st.integers(0, 64))
@settings(max_examples=200)
def test_random_bytes_give_frames_or_protocol_error(data: bytes, limit: int) -> None:
    decoder = FrameDecoder(max_frame=limit)
    try:
        frames = decoder.feed(data)
    except ProtocolError:
        return
    assert all(len(f) <= limit for f in frames)
    assert b"".join(encode_frame(f) for f in frames) == data[: len(data) - decoder.buffered]
