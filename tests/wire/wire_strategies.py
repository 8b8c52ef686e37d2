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
    END_CODES,
    ERROR_CODES,
    EVENT_KINDS,
    MEMBER_ROLES,
    MGMT_ERROR_CODES,
    MGMT_OPS,
    NODE_ROLES,
    OPS,
    BackupTrailer,
    Event,
    EventProgress,
    EventStreamEnd,
    Hello,
    MgmtRequest,
    MgmtResponse,
    ProtocolError,
    RaftEnvelope,
    Request,
    Response,
    SnapshotAssembler,
    Subscription,
    decode_backup_frame,
    decode_envelope,
    decode_event_frame,
    decode_hello,
    decode_mgmt_request,
    decode_mgmt_response,
    decode_request,
    decode_response,
    decode_snapshot_chunk,
    decode_subscribe,
    encode_backup_chunk,
    encode_backup_trailer,
    encode_end,
    encode_event,
    encode_hello,
    encode_message,
    encode_mgmt_request,
    encode_mgmt_response,
    encode_progress,
    encode_request,
    encode_response,
    encode_snapshot_chunk,
    encode_subscribe,
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
_session = {"session": st.integers(1, U64), "seq": u64s}


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


# -- management, events and backup protocols ----------------------------------------------
# Appended: valid values of the three newer codecs, and their decoders added to DECODERS (so
# every fuzz test over DECODERS covers them too).

_HOST_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._%"
ports = st.integers(1, 65535)
#: DNS names: labels of 1 to 63 characters joined by dots (the wire refuses others).
_host_names = st.lists(
    st.text(_HOST_CHARS.replace(".", ""), min_size=1, max_size=12), min_size=1, max_size=3
).map(".".join)
addresses = st.one_of(
    st.builds("{}:{}".format, _host_names, ports),
    st.builds("{}:{}".format, st.ip_addresses(v=4), ports),
    st.builds("[{}]:{}".format, st.ip_addresses(v=6), ports),
)
#: Errors of the client protocol (its leader_addr is an address as nodes write it).
errors = st.fixed_dictionaries(
    {
        "code": st.sampled_from(sorted(ERROR_CODES)),
        "message": st.text(max_size=60),
        "leader": st.none() | node_ids,
        "leader_addr": st.none() | addresses,
    }
)
names = st.text(max_size=20)
lines = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=40)


@st.composite
def membership_maps(draw: st.DrawFn) -> dict[str, list[str]]:
    voters = draw(st.sets(node_ids, min_size=1, max_size=5))
    learners = draw(st.sets(node_ids, max_size=5)) - voters
    return {"voters": sorted(voters), "learners": sorted(learners)}


MGMT_ARGS: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "status": st.just({}),
    "health": st.just({}),
    "transfer": st.fixed_dictionaries({}, optional={"target": st.just("auto") | node_ids}),
    "add_member": st.fixed_dictionaries(
        {"address": addresses}, optional={"learner": st.booleans()}
    ),
    "remove_member": st.fixed_dictionaries({"node": node_ids}),
    "promote": st.fixed_dictionaries({"node": node_ids}),
    "snapshot": st.just({}),
    "backup": st.just({}),
}
members = st.fixed_dictionaries(
    {
        "id": node_ids,
        "name": st.none() | names,
        "address": st.none() | addresses,
        "voter": st.booleans(),
        "role": st.sampled_from(sorted(MEMBER_ROLES)),
        **{
            name: st.none() | u64s
            for name in ("match", "lag", "last_contact_ms", "term", "commit", "applied")
        },
    }
)


@st.composite
def health_results(draw: st.DrawFn) -> dict[str, Any]:
    voters = draw(u64s)
    return {
        "ok": draw(st.booleans()),
        "leader": draw(st.none() | node_ids),
        "voters": voters,
        "reachable": draw(st.integers(0, voters)),
        "problems": draw(st.lists(lines, max_size=4)),
    }


cluster_ids = st.text(min_size=1, max_size=40)
MGMT_RESULTS: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "status": st.fixed_dictionaries(
        {
            "cluster_id": st.none() | cluster_ids,
            "leader": st.none() | node_ids,
            "term": u64s,
            "commit": u64s,
            "applied": u64s,
            "node": node_ids,
            "members": st.lists(members, max_size=4, unique_by=lambda m: m["id"]),
        }
    ),
    "health": health_results(),
    "transfer": st.fixed_dictionaries({"leader": node_ids}),
    "add_member": st.fixed_dictionaries({"node": node_ids, "index": u64s}),
    "remove_member": st.fixed_dictionaries({"index": u64s}),
    "promote": st.fixed_dictionaries({"index": u64s}),
    "snapshot": st.fixed_dictionaries({"index": u64s}),
    "backup": st.fixed_dictionaries(
        {
            "cluster_id": st.none() | cluster_ids,
            "index": u64s,
            "term": u64s,
            "size": u64s,
            "membership": membership_maps(),
        }
    ),
}
mgmt_requests = st.sampled_from(MGMT_OPS).flatmap(lambda op: st.tuples(st.just(op), MGMT_ARGS[op]))
mgmt_errors = st.fixed_dictionaries(
    {
        "code": st.sampled_from(sorted(MGMT_ERROR_CODES)),
        "message": st.text(max_size=60),
        "leader": st.none() | node_ids,
        "leader_addr": st.none() | addresses,
        "hint": st.none() | lines,
    }
)


@st.composite
def kv_data(draw: st.DrawFn) -> dict[str, Any]:
    op = draw(st.sampled_from(["set", "delete", "incr", "cas"]))
    value = {"set": values, "cas": values, "incr": i64s, "delete": st.none()}[op]
    return {
        "op": op,
        "key": draw(keys),
        "revision": draw(u64s),
        "value": draw(value),
        "previous": draw(st.none() | values | i64s),
    }


_node = st.fixed_dictionaries({"node": node_ids})
_snapshot = st.fixed_dictionaries({"index": u64s, "term": u64s, "size": u64s})
EVENT_DATA: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "leader_changed": st.fixed_dictionaries(
        {"term": u64s, "leader": st.none() | node_ids, "previous": st.none() | node_ids}
    ),
    "role_changed": st.fixed_dictionaries(
        {"node": node_ids, "role": st.sampled_from(sorted(NODE_ROLES)), "term": u64s}
    ),
    "term_changed": st.fixed_dictionaries({"term": u64s}),
    "member_added": st.fixed_dictionaries(
        {"node": node_ids, "address": st.none() | addresses, "voter": st.booleans()}
    ),
    "member_removed": _node,
    "member_promoted": _node,
    "node_discovered": st.fixed_dictionaries(
        {"node": node_ids, "name": st.none() | names, "address": st.none() | addresses}
    ),
    "node_lost": _node,
    "snapshot_created": _snapshot,
    "snapshot_installed": _snapshot,
    "cluster_split_detected": st.fixed_dictionaries(
        {
            "cluster": st.text(min_size=1, max_size=20),
            "cluster_id": cluster_ids,
            "other_cluster_id": cluster_ids,
            "other_node": node_ids,
            "address": st.none() | addresses,
        }
    ),
    "kv": kv_data(),
}
events = st.sampled_from(sorted(EVENT_KINDS)).flatmap(
    lambda kind: st.builds(Event, u64s, st.just(kind), u64s, EVENT_DATA[kind])
)


@st.composite
def subscriptions(draw: st.DrawFn) -> Subscription:
    kinds = draw(st.none() | st.frozensets(st.sampled_from(sorted(EVENT_KINDS)), min_size=1))
    wants_kv = kinds is None or "kv" in kinds
    prefix = draw(st.none() | st.text(max_size=20)) if wants_kv else None
    return Subscription(kinds, prefix, draw(st.none() | u64s), draw(traceparents))


@st.composite
def stream_ends(draw: st.DrawFn) -> EventStreamEnd:
    code = draw(st.sampled_from(sorted(END_CODES)))
    oldest = draw(st.none() | u64s) if code == "compacted" else None
    return EventStreamEnd(code, draw(st.text(max_size=40)), oldest)


#: The field names of the newer envelopes, so random maps reach the checks behind the keys.
NEW_FIELD_NAMES = sorted(
    {
        *FIELD_NAMES,
        "id",
        "target",
        "address",
        "learner",
        "node",
        "cluster_id",
        "members",
        "hint",
        "sha256",
        "membership",
        "kinds",
        "since",
        "pos",
        "kind",
        "at_ms",
        "end",
        "oldest",
        "hello",
        "formed",
    }
)
_new_plausible = st.one_of(
    _plausible, addresses, st.sampled_from(MGMT_OPS), st.sampled_from(sorted(EVENT_KINDS))
)
new_envelope_like = st.recursive(
    st.dictionaries(st.sampled_from(NEW_FIELD_NAMES), _new_plausible, max_size=8).map(
        lambda d: {**d, "v": 1}
    ),
    lambda kids: st.dictionaries(
        st.sampled_from(NEW_FIELD_NAMES), kids | _new_plausible, max_size=6
    ).map(lambda d: {**d, "v": 1}),
    max_leaves=4,
)


founder_sets = st.none() | st.frozensets(node_ids, min_size=1, max_size=7).map(
    lambda ids: tuple(sorted(ids))
)


@st.composite
def _deciding_hellos(draw: st.DrawFn) -> Hello:
    """An unformed hello, with what it sees while deciding and where it reaches those."""
    seen = draw(founder_sets)
    seen_at = None
    if seen is not None:
        listed = draw(st.none() | st.lists(st.sampled_from(seen), unique=True))
        seen_at = None if listed is None else {n: draw(addresses) for n in listed}
    return Hello(draw(addresses), False, None, None, draw(founder_sets), False, seen, seen_at)


hellos = st.one_of(
    _deciding_hellos(),
    st.builds(Hello, addresses, st.just(False), joining=st.just(True)),
    st.builds(Hello, addresses, st.just(False), awaits=node_ids),
    st.builds(
        Hello,
        addresses,
        st.just(True),
        st.none() | cluster_ids,
        st.none() | addresses,
        founder_sets,
        st.booleans(),
        committed_without_you=st.none() | st.integers(0, 2**64 - 1),
    ),
    st.builds(
        Hello,
        addresses,
        st.just(True),
        st.none() | cluster_ids,
        addresses,
        leader_id=node_ids,
    ),
)


@st.composite
def new_valid_payloads(draw: st.DrawFn) -> tuple[str, bytes]:
    """A valid encoding of the newer protocols, and the decoder it is meant for."""
    kinds = ["mgmt request", "mgmt response", "backup", "subscribe", "event", "hello"]
    kind = draw(st.sampled_from(kinds))
    tp = draw(traceparents)
    if kind == "hello":
        return kind, encode_hello(draw(hellos))
    if kind == "mgmt request":
        op, args = draw(mgmt_requests)
        return kind, encode_mgmt_request(op, args, id=draw(u64s), traceparent=tp)
    if kind == "mgmt response":
        op = draw(st.sampled_from(MGMT_OPS))
        if draw(st.booleans()):
            result = draw(MGMT_RESULTS[op])
            return f"mgmt response to {op}", encode_mgmt_response(
                id=draw(u64s), ok=True, result=result, traceparent=tp
            )
        error = draw(mgmt_errors)
        return f"mgmt response to {op}", encode_mgmt_response(
            id=draw(u64s), ok=False, error=error, traceparent=tp
        )
    if kind == "backup":
        choice = draw(st.integers(0, 2))
        if choice == 0:
            return "backup frame", encode_backup_chunk(draw(st.binary(min_size=1, max_size=40)))
        if choice == 1:
            return "backup frame", encode_backup_trailer(draw(st.binary(min_size=32, max_size=32)))
        error = draw(mgmt_errors)
        return "backup frame", encode_mgmt_response(id=draw(u64s), ok=False, error=error)
    if kind == "subscribe":
        sub = draw(subscriptions())
        return kind, encode_subscribe(sub.kinds, sub.prefix, sub.since, sub.traceparent)
    frame = draw(st.integers(0, 2))
    if frame == 0:
        return "events frame", encode_event(draw(events))
    if frame == 1:
        return "events frame", encode_progress(draw(u64s))
    end = draw(stream_ends())
    return "events frame", encode_end(end.code, end.message, end.oldest)


def _recheck_mgmt_request(req: MgmtRequest) -> None:
    again = encode_mgmt_request(req.op, req.args, id=req.id, traceparent=req.traceparent)
    assert decode_mgmt_request(again) == req


def _recheck_mgmt_response(resp: MgmtResponse, op: str | None) -> None:
    data = encode_mgmt_response(
        id=resp.id,
        ok=resp.ok,
        result=resp.result,
        error=resp.error,
        op=op,
        traceparent=resp.traceparent,
    )
    assert decode_mgmt_response(data, op) == resp


def _recheck_backup_frame(frame: bytes | BackupTrailer | MgmtResponse) -> None:
    if isinstance(frame, bytes):
        data = encode_backup_chunk(frame)
    elif isinstance(frame, BackupTrailer):
        data = encode_backup_trailer(frame.sha256)
    else:
        assert not frame.ok
        data = encode_mgmt_response(
            id=frame.id, ok=False, error=frame.error, traceparent=frame.traceparent
        )
    assert decode_backup_frame(data) == frame


def _recheck_subscription(sub: Subscription) -> None:
    again = encode_subscribe(sub.kinds, sub.prefix, sub.since, sub.traceparent)
    assert decode_subscribe(again) == sub


def _recheck_hello(hello: Hello) -> None:
    assert decode_hello(encode_hello(hello)) == hello


def _recheck_events_frame(frame: Event | EventProgress | EventStreamEnd) -> None:
    if isinstance(frame, Event):
        data = encode_event(frame)
    elif isinstance(frame, EventProgress):
        data = encode_progress(frame.pos)
    else:
        data = encode_end(frame.code, frame.message, frame.oldest)
    assert decode_event_frame(data) == frame


DECODERS.update(
    {
        "mgmt request": (decode_mgmt_request, _recheck_mgmt_request),
        "mgmt response": (decode_mgmt_response, partial(_recheck_mgmt_response, op=None)),
        **{
            f"mgmt response to {op}": (
                partial(decode_mgmt_response, op=op),
                partial(_recheck_mgmt_response, op=op),
            )
            for op in MGMT_OPS
        },
        "backup frame": (decode_backup_frame, _recheck_backup_frame),
        "subscribe": (decode_subscribe, _recheck_subscription),
        "events frame": (decode_event_frame, _recheck_events_frame),
        "hello": (decode_hello, _recheck_hello),
    }
)
