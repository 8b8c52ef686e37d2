"""Hypothesis strategies for the wire tests: valid messages of every kind, and hostile values.

Also DECODERS (every decoder of quicraft.wire by name) and `decode_checked`, which feeds one
payload to one decoder and insists on the contract: a ProtocolError, or a value that the
matching encoder accepts and that survives a second round trip unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import cbor2
from hypothesis import strategies as st

from quicraft.core.types import (
    Entry,
    EntryType,
    Membership,
    Message,
    MessageType,
    Snapshot,
    SnapshotMeta,
)
from quicraft.wire import (
    ERROR_CODES,
    OPS,
    ProtocolError,
    RaftEnvelope,
    Request,
    Response,
    SnapshotAssembler,
    decode_envelope,
    decode_request,
    decode_response,
    decode_snapshot_chunk,
    encode_message,
    encode_request,
    encode_response,
    encode_snapshot_chunk,
)

U64 = (1 << 64) - 1
I64 = 1 << 63

# Mostly small numbers (what a cluster sends), sometimes anywhere up to the 64-bit edges.
u64s = st.one_of(st.integers(0, 1000), st.integers(0, U64), st.sampled_from([0, 1, U64]))
i64s = st.one_of(st.integers(-1000, 1000), st.integers(-I64, I64 - 1))
node_ids = st.one_of(
    st.text("0123456789abcdef", min_size=16, max_size=16), st.text(min_size=1, max_size=128)
)
traceparents = st.one_of(st.none(), st.text("0123456789abcdef-", max_size=55))


@st.composite
def memberships(draw: st.DrawFn) -> Membership:
    ids = draw(st.frozensets(node_ids, max_size=7))
    voters = frozenset(i for i in ids if draw(st.booleans()))
    return Membership(voters, ids - voters)


@st.composite
def messages(draw: st.DrawFn, types: st.SearchStrategy[MessageType] | None = None) -> Message:
    mtype = draw(types if types is not None else st.sampled_from(MessageType))
    term = draw(u64s)
    m = Message(
        mtype,
        to=draw(node_ids),
        frm=draw(node_ids),
        term=term,
        log_term=draw(u64s),
        index=draw(u64s),
        commit=draw(u64s),
        reject=draw(st.booleans()),
        hint_index=draw(u64s),
        hint_term=draw(u64s),
        read_round=draw(u64s),
        transfer=draw(st.booleans()),
        context=draw(st.binary(max_size=64)),
    )
    if mtype is MessageType.APPEND:
        # A real slice of a log: right after (index, log_term), terms rising to at most `term`.
        count = draw(st.integers(0, 12))
        m.log_term = draw(st.integers(0, term))
        m.index = draw(st.integers(0, U64 - count))
        terms = sorted(
            draw(st.lists(st.integers(m.log_term, term), min_size=count, max_size=count))
        )
        m.entries = [
            Entry(
                t, m.index + 1 + i, draw(st.sampled_from(EntryType)), draw(st.binary(max_size=40))
            )
            for i, t in enumerate(terms)
        ]
    if mtype is MessageType.SNAPSHOT:
        meta = SnapshotMeta(draw(u64s), draw(u64s), draw(memberships()))
        m.snapshot = Snapshot(meta, draw(st.binary(max_size=200)))
    return m


# -- client protocol -------------------------------------------------------------------------

keys = st.text(min_size=1, max_size=40)
values = st.binary(max_size=100)
_session = {"session": u64s, "seq": u64s}


def _with_session(
    required: dict[str, st.SearchStrategy[object]],
) -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        st.fixed_dictionaries(required), st.fixed_dictionaries({**required, **_session})
    )


REQUEST_ARGS: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "register": st.just({}),
    "set": _with_session({"key": keys, "value": values}),
    "delete": _with_session({"key": keys}),
    "incr": st.one_of(_with_session({"key": keys}), _with_session({"key": keys, "by": i64s})),
    "cas": _with_session({"key": keys, "expected": st.none() | values, "new": values}),
    "get": st.fixed_dictionaries({"key": keys}, optional={"stale": st.booleans()}),
    "keys": st.fixed_dictionaries(
        {}, optional={"prefix": st.text(max_size=20), "stale": st.booleans()}
    ),
}
RESULTS: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "register": st.fixed_dictionaries({"session": u64s}),
    "set": st.fixed_dictionaries({"revision": u64s}),
    "delete": st.fixed_dictionaries({"revision": u64s, "deleted": st.booleans()}),
    "incr": st.fixed_dictionaries({"revision": u64s, "value": i64s}),
    "cas": st.fixed_dictionaries(
        {"revision": u64s, "ok": st.booleans(), "value": st.none() | values}
    ),
    "get": st.fixed_dictionaries({"value": st.none() | values, "revision": u64s}),
    "keys": st.fixed_dictionaries({"keys": st.lists(st.text(max_size=20), max_size=10)}),
}
requests = st.sampled_from(OPS).flatmap(lambda op: st.tuples(st.just(op), REQUEST_ARGS[op]))
errors = st.fixed_dictionaries(
    {
        "code": st.sampled_from(sorted(ERROR_CODES)),
        "message": st.text(max_size=60),
        "leader": st.none() | node_ids,
        "leader_addr": st.none() | st.text(max_size=40),
    }
)


# -- hostile values --------------------------------------------------------------------------

#: One of each kind a decoder must be ready for in any position.
ODD_VALUES: list[object] = [
    None,
    True,
    False,
    0,
    -1,
    U64,
    -(1 << 64),
    1 << 64,
    1.5,
    math.nan,
    math.inf,
    "",
    "x" * 300,
    b"",
    b"\x00" * 3,
    [],
    [1, 2, 3, 4],
    [[1, 1, 0, b""]],
    {},
    {"v": 1},
    {1: 2},
    {b"k": 1},
    cbor2.undefined,
    cbor2.CBORSimpleValue(19),
    cbor2.CBORTag(1, 0),
    cbor2.CBORTag(2, b"\x01" * 9),
    cbor2.CBORTag(258, (1,)),
    cbor2.CBORTag(999, "x"),
]

_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(1 << 64), U64),
    st.integers(),  # beyond 64 bits: cbor2 writes a bignum tag
    st.floats(),
    st.text(max_size=20),
    st.binary(max_size=20),
    st.sampled_from(ODD_VALUES),
)
cbor_values = st.recursive(
    _leaves,
    lambda kids: st.one_of(
        st.lists(kids, max_size=5),
        st.dictionaries(
            st.one_of(st.text(max_size=8), st.integers(), st.binary(max_size=4)), kids, max_size=5
        ),
        st.builds(cbor2.CBORTag, st.integers(0, 1 << 16), kids),
    ),
    max_leaves=20,
)

#: Every field name any envelope here knows, so random maps reach the checks behind the keys.
FIELD_NAMES = sorted(
    {
        "v",
        "tp",
        "type",
        "to",
        "from",
        "term",
        "log_term",
        "index",
        "commit",
        "reject",
        "hint_index",
        "hint_term",
        "read_round",
        "transfer",
        "context",
        "entries",
        "snapshot",
        "voters",
        "learners",
        "data",
        "size",
        "offset",
        "op",
        "args",
        "ok",
        "result",
        "error",
        "key",
        "value",
        "session",
        "seq",
        "by",
        "expected",
        "new",
        "stale",
        "prefix",
        "keys",
        "revision",
        "deleted",
        "code",
        "message",
        "leader",
        "leader_addr",
    }
)
_plausible = st.one_of(
    cbor_values,
    u64s,
    node_ids,
    st.sampled_from([t.value for t in MessageType]),
    st.sampled_from(OPS),
)
envelope_like = st.recursive(
    st.dictionaries(st.sampled_from(FIELD_NAMES), _plausible, max_size=8).map(
        lambda d: {**d, "v": 1}
    ),
    lambda kids: st.dictionaries(st.sampled_from(FIELD_NAMES), kids | _plausible, max_size=6).map(
        lambda d: {**d, "v": 1}
    ),
    max_leaves=4,
)


# -- every decoder, and the contract they keep ------------------------------------------------


def _recheck_message(env: RaftEnvelope) -> None:
    again = decode_envelope(encode_message(env.message, traceparent=env.traceparent))
    assert again == env


def _recheck_request(req: Request) -> None:
    data = encode_request(req.op, req.args, id=req.id, traceparent=req.traceparent)
    assert decode_request(data) == req


def _recheck_response(resp: Response, op: str | None) -> None:
    error = resp.error
    data = encode_response(
        ok=resp.ok, result=resp.result, error=error, op=op, id=resp.id, traceparent=resp.traceparent
    )
    assert decode_response(data, op) == resp


def _recheck_chunk(chunk: tuple[int, bytes]) -> None:
    assert decode_snapshot_chunk(encode_snapshot_chunk(*chunk)) == chunk


def _recheck_header(assembler: SnapshotAssembler) -> None:
    assert 0 <= assembler.size <= 1 << 32
    assert assembler.complete == (assembler.size == 0)


DECODERS: dict[str, tuple[Callable[[bytes], Any], Callable[[Any], None]]] = {
    "message": (decode_envelope, _recheck_message),
    "request": (decode_request, _recheck_request),
    "response": (decode_response, partial(_recheck_response, op=None)),
    **{
        f"response to {op}": (partial(decode_response, op=op), partial(_recheck_response, op=op))
        for op in OPS
    },
    "snapshot chunk": (decode_snapshot_chunk, _recheck_chunk),
    "snapshot header": (SnapshotAssembler, _recheck_header),
}


def decode_checked(name: str, data: bytes) -> object | None:
    """Feed `data` to decoder `name`: None for a ProtocolError, else the checked value."""
    decode, recheck = DECODERS[name]
    try:
        value: object = decode(data)
    except ProtocolError:
        return None
    recheck(value)
    return value
