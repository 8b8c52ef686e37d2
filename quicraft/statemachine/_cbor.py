"""Strict CBOR decoding for bytes that come out of the Raft log or a snapshot.

Rules:
- Every CBOR tag is refused, including the ones cbor2 would turn into datetimes, big numbers,
  regular expressions or shared (possibly cyclic) references: they are never ours, and some
  are costly or surprising to decode. What comes back is maps, arrays, text, bytes, ints,
  booleans, null — and floats or CBOR simple values, which the callers' type checks refuse
  (every caller checks each field's type anyway, so a second walk here would only cost time).
- One data item exactly: trailing bytes are an error, not something silently ignored.
- Map keys must be text or bytes and unique; nesting is bounded.
- Whatever goes wrong surfaces as ValueError with a one-line reason — nothing else escapes.
- A cbor2 call holds the GIL for all it decodes (about 1.5 ms per MB of values, more for
  many small items), so a worker thread that decodes a large item in one call stops the
  event loop as surely as the loop decoding it itself. strict_loads_in_pieces decodes the
  same item, with the same checks, in calls of one map value or array item each.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import Any, NoReturn

import cbor2


def _refuse_tag(decoder: object, tag: object = None) -> NoReturn:
    raise cbor2.CBORDecodeError("CBOR tags are not allowed")


# Every tag number cbor2 might decode by itself is overridden to refuse; any other tag reaches
# the tag hook, which refuses too. Built once: passing it costs nothing per decode.
_NO_SEMANTIC_TAGS = {tag: _refuse_tag for tag in range(1 << 16)}


def canonical_order(names: Iterable[str]) -> list[str]:
    """Text map keys in canonical CBOR order: by their encoding, which for keys as short as
    ours means shorter first, then bytewise."""
    return sorted(names, key=lambda name: (len(name.encode()), name.encode()))


def strict_loads(data: bytes, *, max_depth: int) -> Any:
    """Decode exactly one plain CBOR item from `data`, or raise ValueError."""
    stream = io.BytesIO(data)
    try:
        value = _decoder(stream, max_depth).decode()
    # Decoding hostile bytes may fail in many ways (EOF, bad UTF-8, huge lengths, overflow);
    # every one of them means the same thing to the caller: these bytes are not valid.
    except Exception as exc:
        raise ValueError(f"not valid CBOR: {exc}") from None
    if stream.tell() != len(data):
        raise ValueError(f"{len(data) - stream.tell()} trailing bytes after the CBOR item")
    return value


_ARRAY, _MAP = 4, 5  # CBOR major types


def strict_loads_in_pieces(data: bytes, *, max_depth: int) -> Any:
    """What strict_loads(data) returns, or the same ValueError, decoded in short cbor2
    calls (see the rules): a map's names and values one per call, and a value that is an
    array one item per call. Anything but a map of a stated length is decoded in one call,
    as strict_loads does; so is a value that is not an array of a stated length."""
    major, length, at = _head(data, 0)
    if major != _MAP or length is None:
        return strict_loads(data, max_depth=max_depth)
    stream = io.BytesIO(data)
    found: dict[str | bytes, Any] = {}
    try:
        for _ in range(length):
            stream.seek(at)
            name = _decoder(stream, max_depth - 1).decode()
            if not isinstance(name, str | bytes) or name in found:
                raise ValueError(f"map key {name!r} is repeated or not text or bytes")
            at = stream.tell()
            major, items, after_head = _head(data, at)
            if major == _ARRAY and items is not None:
                stream.seek(after_head)
                decode = _decoder(stream, max_depth - 2).decode
                found[name] = [decode() for _ in range(items)]
            else:
                stream.seek(at)
                found[name] = _decoder(stream, max_depth - 1).decode()
            at = stream.tell()
    except Exception as exc:  # as in strict_loads: every failure means "not valid"
        raise ValueError(f"not valid CBOR: {exc}") from None
    if at != len(data):
        raise ValueError(f"{len(data) - at} trailing bytes after the CBOR item")
    return found


def _decoder(stream: io.BytesIO, max_depth: int) -> cbor2.CBORDecoder:
    return cbor2.CBORDecoder(
        stream,
        tag_hook=_refuse_tag,
        semantic_decoders=_NO_SEMANTIC_TAGS,
        max_depth=max_depth,
        allow_duplicate_keys=False,
        strict_hashable_types=True,
    )


def _head(data: bytes, at: int) -> tuple[int, int | None, int]:
    """The major type of the item at `at`, its length (None if it has none stated: an
    indefinite length, a reserved value, or the data ends), and where its head ends."""
    if at >= len(data):
        return -1, None, at
    major, info = data[at] >> 5, data[at] & 31
    if info < 24:
        return major, info, at + 1
    if info > 27:
        return major, None, at
    end = at + 1 + (1 << (info - 24))  # the length follows in 1, 2, 4 or 8 bytes
    if end > len(data):
        return major, None, at
    return major, int.from_bytes(data[at + 1 : end], "big"), end
