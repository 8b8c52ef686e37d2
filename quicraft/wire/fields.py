"""Bounded CBOR decoding and strict typed field access, shared by every codec in quicraft.wire.

Rules kept here, so each codec only states its own fields:

- A payload is exactly one CBOR item: no trailing bytes, no indefinite lengths, no duplicate or
  non-text map keys, at most MAX_DEPTH nested containers, and no tags at all — so no bignums,
  dates, regexes, shared (cyclic) references or any other decoder extension. What is left is
  null, bool, int (within CBOR's native range), float, str, bytes, list and dict, which the
  checkers below narrow further.
- An envelope is a map whose "v" is VERSION, checked first (so a newer peer is told "unsupported
  version 2", not "unknown field"), and which holds only the keys its codec names: a field this
  version does not know may carry meaning it would silently drop, so new fields come with a new
  version.
- A request (client, mgmt, subscribe) holds at most MAX_REQUEST_ITEMS CBOR items, counted on
  its bytes before it is decoded: a frame of one-byte empty lists and maps would otherwise
  become millions of Python objects (16 MiB of them: over a GB and seconds of the event loop),
  and any reader may send requests. Bulk is in strings, which count as one item each.
- Every failure is a ProtocolError that names where it happened; nothing else escapes.
- Checkers test `type(x) is int`, never isinstance: bool is an int to Python, never to us.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from typing import Any, NoReturn, TypeVar

import cbor2

from .errors import ProtocolError

VERSION = 1
U64_MAX = (1 << 64) - 1
I64_MIN, I64_MAX = -(1 << 63), (1 << 63) - 1
#: Deepest nesting any message here needs is 3 (a map, a list in it, a list in that); one spare
#: lets a misplaced container fail with a clear type error rather than a depth error.
MAX_DEPTH = 4
#: The largest request has a few dozen items (a map of five fields, args of at most six).
MAX_REQUEST_ITEMS = 256
#: A node id is a key fingerprint in practice; the bound only keeps a hostile one small.
MAX_NODE_ID = 128
#: W3C traceparent, version 00, is exactly 55 characters: 00-<32 hex>-<16 hex>-<2 hex>.
MAX_TRACEPARENT = 55
_TRACEPARENT_CHARS = frozenset("0123456789abcdef-")

_MISSING: Any = object()
_T = TypeVar("_T")


def _refuse_tag(*_args: object) -> NoReturn:
    raise cbor2.CBORDecodeError("CBOR tags are not allowed")


class _NoTags(dict[int, Any]):
    """semantic_decoders that maps every tag, built-in ones included, to a refusal.

    cbor2 looks each tag up with [], so __missing__ answers for all of them; a test checks that
    a built-in tag (a date) is still refused this way, should a release copy the mapping instead.
    """

    def __missing__(self, tag: int) -> Any:
        return _refuse_tag


_DECODER_OPTIONS: dict[str, Any] = {
    "max_depth": MAX_DEPTH,
    "allow_indefinite": False,
    "allow_duplicate_keys": False,
    "strict_hashable_types": True,
    "semantic_decoders": _NoTags(),
    "tag_hook": _refuse_tag,  # second line of defence should a cbor2 release ignore the first
}


def show(value: object) -> str:
    """A short printable form of a peer's value for an error message (never the whole thing)."""
    text = _brief(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _brief(value: object, depth: int = MAX_DEPTH) -> str:
    """repr(value), but only of about the first 40 characters' worth of it and MAX_DEPTH
    levels: repr of a short list that holds a 16 MiB one would cost more than the message is
    worth (and an encoder's caller may pass a value nested deeper, or one that holds itself)."""
    if isinstance(value, str | bytes):
        return repr(value[:40])
    if isinstance(value, int) and value.bit_length() > 128:  # repr refuses over 4300 digits
        return f"<int of {value.bit_length()} bits>"
    if not isinstance(value, list | dict):
        return repr(value)
    if len(value) > 8 or (value and not depth):
        return f"<{type(value).__name__} of {len(value)}>"
    items = (
        (f"{_brief(k, depth - 1)}: {_brief(v, depth - 1)}" for k, v in value.items())
        if isinstance(value, dict)
        else (_brief(item, depth - 1) for item in value)
    )
    parts: list[str] = []
    for part in items:
        parts.append(part)
        if sum(map(len, parts)) > 40:  # enough to fill the message: leave the rest out
            break
    text = ", ".join(parts)
    return f"{{{text}}}" if isinstance(value, dict) else f"[{text}]"


def kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _within_items(data: bytes, limit: int) -> bool:
    """Whether `data` holds at most `limit` CBOR items (heads), reading only their heads.

    Heads are walked in order without building anything; a string's bytes are skipped. What
    is malformed (reserved or indefinite heads, a short read) stops the count: cbor2 refuses it.
    """
    pos, end = 0, len(data)
    if end <= limit:  # every item takes a byte at least; most requests end here (3 µs saved)
        return True
    for _ in range(limit):
        if pos >= end:
            return True
        initial = data[pos]
        info = initial & 31
        if info >= 28:
            return True
        size = 1 << (info - 24) if info >= 24 else 0
        arg = int.from_bytes(data[pos + 1 : pos + 1 + size], "big") if size else info
        pos += 1 + size
        if initial >> 5 in (2, 3):  # a byte or text string: skip its bytes
            pos += arg
    return pos >= end


def decode_item(data: bytes) -> object:
    """Exactly one CBOR item from `data`, under the rules above."""
    fp = io.BytesIO(data)
    try:
        value = cbor2.CBORDecoder(fp, **_DECODER_OPTIONS).decode()
        used, total = fp.tell(), len(data)
    # Why so broad: cbor2 is a compiled extension whose failures on hostile input include
    # CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError and MemoryError, and
    # vary by release. The input is only bytes, so any failure here means "not valid CBOR".
    except Exception as exc:
        raise ProtocolError(f"invalid CBOR: {str(exc)[:200]}") from exc
    if used != total:
        raise ProtocolError(f"{total - used} trailing bytes after the CBOR item")
    return value


def encode_item(value: object) -> bytes:
    try:
        return cbor2.dumps(value)
    except (cbor2.CBOREncodeError, ValueError, TypeError, OverflowError) as exc:
        raise ProtocolError(f"cannot encode: {exc}") from exc


def open_envelope(
    data: bytes, where: str, fields: frozenset[str], *, max_items: int | None = None
) -> dict[str, object]:
    """Decode a versioned envelope map holding only "v", "tp" and `fields` (and at most
    `max_items` CBOR items)."""
    if max_items is not None and not _within_items(data, max_items):
        raise ProtocolError(f"{where}: more than {max_items} CBOR items")
    raw = decode_item(data)
    if type(raw) is not dict:
        raise ProtocolError(f"{where}: expected a map, got {kind(raw)}")
    if "v" not in raw:
        raise ProtocolError(f"{where}: no version field 'v'")
    version = raw["v"]
    if type(version) is not int or version != VERSION:
        raise ProtocolError(f"{where}: unsupported version {show(version)} (expected {VERSION})")
    allowed = _ENVELOPE_FIELDS.get(fields)
    if allowed is None:  # one entry per codec's field set, each built once
        allowed = _ENVELOPE_FIELDS[fields] = fields | {"v", "tp"}
    check_keys(raw, allowed, where)
    return raw


_ENVELOPE_FIELDS: dict[frozenset[str], frozenset[str]] = {}


def check_keys(raw: Mapping[Any, object], allowed: frozenset[str], where: str) -> None:
    if allowed.issuperset(raw):  # the common case, without building a set
        return
    unknown = raw.keys() - allowed
    if unknown:
        names = ", ".join(sorted(show(k) for k in unknown)[:5])
        raise ProtocolError(f"{where}: unknown field(s) {names}")


def need(raw: Mapping[str, object], key: str, where: str) -> object:
    if key not in raw:
        raise ProtocolError(f"{where}: missing field {key!r}")
    return raw[key]


def wrong(where: str, name: str, value: object, expected: str) -> ProtocolError:
    return ProtocolError(f"{where}: {name} must be {expected}, got {kind(value)} {show(value)}")


# Checkers of one value: `name` says which field (or item) it is, for the error message.


def as_uint(value: object, where: str, name: str) -> int:
    if type(value) is int and 0 <= value <= U64_MAX:
        return value
    raise wrong(where, name, value, "an unsigned 64-bit int")


def as_int64(value: object, where: str, name: str) -> int:
    if type(value) is int and I64_MIN <= value <= I64_MAX:
        return value
    raise wrong(where, name, value, "a signed 64-bit int")


def as_bool(value: object, where: str, name: str) -> bool:
    if type(value) is bool:
        return value
    raise wrong(where, name, value, "a bool")


def as_str(value: object, where: str, name: str, *, max_len: int, min_len: int = 0) -> str:
    if type(value) is str and min_len <= len(value) <= max_len:
        return value
    raise wrong(where, name, value, f"a str of {min_len} to {max_len} characters")


def as_bytes(value: object, where: str, name: str, *, max_len: int) -> bytes:
    if type(value) is bytes and len(value) <= max_len:
        return value
    raise wrong(where, name, value, f"bytes of at most {max_len}")


def as_list(value: object, where: str, name: str, *, max_len: int) -> list[object]:
    if type(value) is list and len(value) <= max_len:
        return value
    raise wrong(where, name, value, f"a list of at most {max_len} items")


def as_map(value: object, where: str, name: str, allowed: frozenset[str]) -> dict[str, object]:
    if type(value) is not dict:
        raise wrong(where, name, value, "a map")
    check_keys(value, allowed, f"{where}: {name}")
    return value


def as_traceparent(value: object, where: str) -> str:
    """Only the shape that is safe to log and carry; telemetry parses the rest."""
    if (
        type(value) is str
        and len(value) <= MAX_TRACEPARENT
        and _TRACEPARENT_CHARS.issuperset(value)
    ):
        return value
    raise wrong(where, "'tp'", value, "a traceparent (at most 55 of 0-9, a-f and -)")


# Getters of one field of a map: a default makes the field optional (absent, not null).


def _absent(key: str, where: str, default: _T) -> _T:
    if default is _MISSING:
        raise ProtocolError(f"{where}: missing field {key!r}")
    return default


def get_uint(raw: Mapping[str, object], key: str, where: str, default: int = _MISSING) -> int:
    value = raw.get(key, _MISSING)
    if type(value) is int and 0 <= value <= U64_MAX:
        return value
    return _absent(key, where, default) if value is _MISSING else as_uint(value, where, repr(key))


def get_int64(raw: Mapping[str, object], key: str, where: str, default: int = _MISSING) -> int:
    value = raw.get(key, _MISSING)
    if type(value) is int and I64_MIN <= value <= I64_MAX:
        return value
    return _absent(key, where, default) if value is _MISSING else as_int64(value, where, repr(key))


def get_bool(raw: Mapping[str, object], key: str, where: str, default: bool = _MISSING) -> bool:
    value = raw.get(key, _MISSING)
    if type(value) is bool:
        return value
    return _absent(key, where, default) if value is _MISSING else as_bool(value, where, repr(key))


def get_str(
    raw: Mapping[str, object], key: str, where: str, *, max_len: int, min_len: int = 0
) -> str:
    value = raw.get(key)
    if type(value) is str and min_len <= len(value) <= max_len:
        return value
    return as_str(need(raw, key, where), where, repr(key), max_len=max_len, min_len=min_len)


def get_bytes(
    raw: Mapping[str, object], key: str, where: str, *, max_len: int, default: bytes = _MISSING
) -> bytes:
    value = raw.get(key, _MISSING)
    if type(value) is bytes and len(value) <= max_len:
        return value
    if value is _MISSING:
        return _absent(key, where, default)
    return as_bytes(value, where, repr(key), max_len=max_len)


def get_nullable_str(
    raw: Mapping[str, object], key: str, where: str, *, max_len: int
) -> str | None:
    """A field that may be absent or null (both None), else a str."""
    value = raw.get(key)
    return None if value is None else as_str(value, where, repr(key), max_len=max_len)


def get_nullable_bytes(
    raw: Mapping[str, object], key: str, where: str, *, max_len: int
) -> bytes | None:
    """A field that must be present, and is null or bytes."""
    value = raw.get(key, _MISSING)
    if value is None or (type(value) is bytes and len(value) <= max_len):
        return value
    if value is _MISSING:
        raise ProtocolError(f"{where}: missing field {key!r}")
    return as_bytes(value, where, repr(key), max_len=max_len)


def get_traceparent(raw: Mapping[str, object], where: str) -> str | None:
    """The optional "tp" of an envelope: absent is None; present, it must be well formed."""
    return as_traceparent(raw["tp"], where) if "tp" in raw else None


def encode_answer(
    where: str,
    request_id: int,
    ok: bool,
    result: object,
    error: object,
    traceparent: str | None,
    check_result: Callable[[object], object],
    check_error: Callable[[object], object],
) -> bytes:
    """The response envelope the request/response protocols share (client, mgmt): the request's
    id and exactly one of a result (`ok`) or an error, each checked by its protocol's function
    (a mapping reaches it as a plain dict)."""
    out: dict[str, object] = {"v": VERSION, "id": as_uint(request_id, where, "'id'"), "ok": ok}
    if ok:
        if error is not None or result is None:
            raise ProtocolError(f"{where}: a success needs a result and no error")
        out["result"] = check_result(_plain(result))
    else:
        if result is not None or error is None:
            raise ProtocolError(f"{where}: a failure needs an error and no result")
        out["error"] = check_error(_plain(error))
    if traceparent is not None:
        out["tp"] = as_traceparent(traceparent, where)
    return encode_item(out)


def _plain(value: object) -> object:
    if type(value) is dict:
        return value  # the checkers build new maps; they never change the one they are given
    return dict(value) if isinstance(value, Mapping) else value
