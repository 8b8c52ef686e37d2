"""The ops of the key-value client protocol: what each op's args and result must hold.

The table in wire/client.py says it in one picture; here it is as code. Each op maps to the set
of its fields and a checker, which takes the decoded map (already limited to those fields) and
returns a new map with every value checked and defaults filled in. Rules:

- key: 1 to 4096 bytes of UTF-8 (the prefix of keys may be empty); value, expected, new: up to
  1 MiB of bytes; seq, revision: unsigned 64-bit; session: the same but not 0; by and incr's
  value: signed 64-bit.
- A write's args follow the rules of the command it becomes (statemachine/commands.py): the
  leader builds the command from them without checking them again.
- session and seq come together or not at all: exactly-once needs both.
- A keys result holds at most MAX_KEYS keys and fits a frame (MAX_KEYS_BYTES): a node checks
  with keys_refusal() before it answers, since a result over either bound could not reach
  the client.
- Without its op a result is checked against the union of every op's result fields, where
  "value" is an int, bytes or null.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from .errors import ProtocolError
from .fields import (
    as_int64,
    as_list,
    as_str,
    as_uint,
    get_bool,
    get_bytes,
    get_int64,
    get_nullable_bytes,
    get_uint,
    need,
    show,
    wrong,
)
from .frame import MAX_FRAME

MAX_KEY = 4096
MAX_VALUE = 1024 * 1024
MAX_KEYS = 1 << 20
#: The bytes a keys result's keys may take: a frame, less room for the envelope around them.
MAX_KEYS_BYTES = MAX_FRAME - 1024

Args = dict[str, object]
Checker = Callable[[Mapping[str, object], str], Args]
Table = dict[str, tuple[frozenset[str], Checker]]


def as_key(value: object, where: str, name: str, min_len: int = 1) -> str:
    """A key: `min_len` (1 unless given) to MAX_KEY bytes of UTF-8."""
    if type(value) is str and min_len <= len(value) <= MAX_KEY // 4:
        return value  # the common short key: within the bound however it encodes
    key = as_str(value, where, name, max_len=MAX_KEY, min_len=min_len)
    # Four bytes per character at most: only long keys need measuring ("surrogatepass" so a
    # caller's unencodable str is measured here and refused by the encoder, not raised here).
    if len(key) * 4 > MAX_KEY and len(key.encode("utf-8", "surrogatepass")) > MAX_KEY:
        raise wrong(where, name, value, f"at most {MAX_KEY} bytes of UTF-8")
    return key


def _key(a: Mapping[str, object], where: str) -> str:
    return as_key(need(a, "key", where), where, "'key'")


def _value(a: Mapping[str, object], name: str, where: str) -> bytes:
    return get_bytes(a, name, where, max_len=MAX_VALUE)


def _with_session(a: Mapping[str, object], where: str, out: Args) -> Args:
    if ("session" in a) != ("seq" in a):
        raise ProtocolError(f"{where}: 'session' and 'seq' go together")
    if "session" in a:
        # A session's id is the index of its register entry: never 0 (statemachine/commands).
        session = out["session"] = get_uint(a, "session", where)
        if session == 0:
            raise ProtocolError(f"{where}: 'session' must be at least 1")
        seq = out["seq"] = get_uint(a, "seq", where)
        if "ack" in a:  # the oldest seq the client still waits for: older results may go
            ack = out["ack"] = get_uint(a, "ack", where)
            if ack > seq:
                raise ProtocolError(f"{where}: 'ack' is above 'seq'")
    elif "ack" in a:
        raise ProtocolError(f"{where}: 'ack' needs 'session' and 'seq'")
    return out


_SESSION = ("session", "seq", "ack")

#: op -> (its args' fields, checker returning the normalised args)
REQUESTS: Table = {
    "register": (frozenset(), lambda a, w: {}),
    "set": (
        frozenset({"key", "value", *_SESSION}),
        lambda a, w: _with_session(a, w, {"key": _key(a, w), "value": _value(a, "value", w)}),
    ),
    "delete": (
        frozenset({"key", *_SESSION}),
        lambda a, w: _with_session(a, w, {"key": _key(a, w)}),
    ),
    "incr": (
        frozenset({"key", "by", *_SESSION}),
        lambda a, w: _with_session(a, w, {"key": _key(a, w), "by": get_int64(a, "by", w, 1)}),
    ),
    "cas": (
        frozenset({"key", "expected", "new", *_SESSION}),
        lambda a, w: _with_session(
            a,
            w,
            {
                "key": _key(a, w),
                "expected": get_nullable_bytes(a, "expected", w, max_len=MAX_VALUE),
                "new": _value(a, "new", w),
            },
        ),
    ),
    "get": (
        frozenset({"key", "stale"}),
        lambda a, w: {"key": _key(a, w), "stale": get_bool(a, "stale", w, False)},
    ),
    "keys": (
        frozenset({"prefix", "stale"}),
        lambda a, w: {
            "prefix": as_key(a.get("prefix", ""), w, "'prefix'", min_len=0),
            "stale": get_bool(a, "stale", w, False),
        },
    ),
}
OPS = tuple(sorted(REQUESTS))


def _keys(a: Mapping[str, object], w: str) -> list[str]:
    items = as_list(need(a, "keys", w), w, "'keys'", max_len=MAX_KEYS)
    return [as_key(k, w, "an item of 'keys'", min_len=0) for k in items]


def keys_refusal(keys: list[str], prefix: str) -> str | None:
    """Why a keys result of `keys` cannot be sent (too many, or more than a frame carries),
    for the node to answer instead; None when it can be."""
    if len(keys) > MAX_KEYS:
        return f"{len(keys):,} keys start with {show(prefix)}, more than an answer may list"
    text = "".join(keys)  # measured in C: a scan of 200,000 keys takes a few ms
    size = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
    size += 3 * len(keys)  # each key's CBOR head: at most 3 bytes, a key being at most 4096
    if size > MAX_KEYS_BYTES:
        return (
            f"the {len(keys):,} keys that start with {show(prefix)} take {size:,} bytes,"
            f" more than an answer may carry ({MAX_KEYS_BYTES:,})"
        )
    return None


def _revision(a: Mapping[str, object], w: str) -> int:
    return get_uint(a, "revision", w)


RESULTS: Table = {
    "register": (frozenset({"session"}), lambda a, w: {"session": get_uint(a, "session", w)}),
    "set": (frozenset({"revision"}), lambda a, w: {"revision": _revision(a, w)}),
    "delete": (
        frozenset({"revision", "deleted"}),
        lambda a, w: {"revision": _revision(a, w), "deleted": get_bool(a, "deleted", w)},
    ),
    "incr": (
        frozenset({"revision", "value"}),
        lambda a, w: {"revision": _revision(a, w), "value": get_int64(a, "value", w)},
    ),
    "cas": (
        frozenset({"revision", "ok", "value"}),
        lambda a, w: {
            "revision": _revision(a, w),
            "ok": get_bool(a, "ok", w),
            "value": get_nullable_bytes(a, "value", w, max_len=MAX_VALUE),
        },
    ),
    "get": (
        frozenset({"value", "revision"}),
        lambda a, w: {
            "value": get_nullable_bytes(a, "value", w, max_len=MAX_VALUE),
            "revision": _revision(a, w),
        },
    ),
    "keys": (frozenset({"keys"}), lambda a, w: {"keys": _keys(a, w)}),
}


def _any_result(a: Mapping[str, object], w: str) -> Args:
    """Without the op: each present field by its rule; "value" is an int, bytes or null."""
    out: Args = {}
    for name in ("session", "revision"):
        if name in a:
            out[name] = as_uint(a[name], w, repr(name))
    for name in ("deleted", "ok"):
        if name in a:
            out[name] = get_bool(a, name, w)
    if "value" in a:
        value = a["value"]
        out["value"] = (
            as_int64(value, w, "'value'")
            if type(value) is int
            else get_nullable_bytes(a, "value", w, max_len=MAX_VALUE)
        )
    if "keys" in a:
        out["keys"] = _keys(a, w)
    return out


ANY_RESULT: tuple[frozenset[str], Checker] = (
    frozenset().union(*(fields for fields, _ in RESULTS.values())),
    _any_result,
)


def lookup(table: Table, op: object, what: str) -> tuple[str, frozenset[str], Checker]:
    """The fields and checker of `op`, which came from a peer and may be anything."""
    if type(op) is not str or op not in table:
        raise ProtocolError(f"{what}: unknown op {show(op)}")
    return op, *table[op]
