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
        decoder = cbor2.CBORDecoder(
            stream,
            tag_hook=_refuse_tag,
            semantic_decoders=_NO_SEMANTIC_TAGS,
            max_depth=max_depth,
            allow_duplicate_keys=False,
            strict_hashable_types=True,
        )
        value = decoder.decode()
    # Decoding hostile bytes may fail in many ways (EOF, bad UTF-8, huge lengths, overflow);
    # every one of them means the same thing to the caller: these bytes are not valid.
    except Exception as exc:
        raise ValueError(f"not valid CBOR: {exc}") from None
    if stream.tell() != len(data):
        raise ValueError(f"{len(data) - stream.tell()} trailing bytes after the CBOR item")
    return value
