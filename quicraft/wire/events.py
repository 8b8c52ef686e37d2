"""Cluster events and key-value watches (ALPN quicraft-events/1, reader role and up).

One stream per subscription: the subscriber sends one frame, then the node sends events until
it sends an end frame or either side closes the stream:

    subscribe = {"v": 1, "kinds": [kind]|null, "prefix": str|null, "since": uint|null,
                 "tp"?: traceparent}
    event     = {"v": 1, "pos": uint, "kind": str, "at_ms": uint, "data": {...}}
    progress  = {"v": 1, "progress": uint}
    end       = {"v": 1, "end": {"code": str, "message": str, "oldest": uint|null}}

    kind                    data (EVENTS below says it as code, with each field's type)
    leader_changed          {term, leader: id|null, previous: id|null}
    role_changed            {node: id, role, term}
    term_changed            {term}
    member_added            {node: id, address: addr|null, voter: bool}
    member_removed          {node: id}
    member_promoted         {node: id}
    node_discovered         {node: id, name: str|null, address: addr|null}
    node_lost               {node: id}
    snapshot_created        {index, term, size}
    snapshot_installed      {index, term, size}
    cluster_split_detected  {cluster: str, cluster_id: str, other_cluster_id: str,
                             other_node: id, address: addr|null}
    kv                      {op: "set"|"delete"|"incr"|"cas", key: str, revision,
                             value: bytes|int|null, previous: bytes|int|null}

Rules:
- kinds: null is every kind; else 1 or more known kinds without repeats (a frozenset once
  decoded, sorted on the wire). prefix: null is every key; it filters kv events only, so it
  needs kinds to include "kv". since: null is "live from now"; else resume after that position.
- pos strictly increases along a stream, and is above since; the subscriber resumes with since =
  the last pos it handled. at_ms is wall-clock ms when it happened. EventStreamReader checks the
  order, and that each event is one the subscription asked for.
- data holds exactly its kind's fields, types as in wire/schema.py (addr is "host:port", role one
  of NODE_ROLES), nulls filled in. A kv event's value is what the key holds after it: bytes
  after set and cas, the count (int) after incr, null after delete; previous is what it held
  before (bytes, an int or null).
- progress: nothing the subscription asked for lies after the previous frame and up to this
  position; it rises like pos, and the subscriber resumes with since = it. A node sends one
  to a live subscription where it starts, and one after it has passed over many
  unwanted events, so a narrow subscription cut off while the
  cluster was busy does not resume from so far back that the node no longer holds it.
- end is the last frame. compacted: since is older than the node keeps; oldest is the oldest
  position it has (or null): re-read the state, then subscribe from there. slow_subscriber: cut
  off for not reading fast enough. Only compacted carries an oldest.
- "tp" rides on the subscribe frame only: the node's span covers the subscribe (decoded →
  registered, or refused), not the subscription, which lives for hours. Events and the end
  carry none.
- Encoders check with the decoders' rules, so a bad value fails at its sender.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .errors import ProtocolError
from .fields import (
    MAX_REQUEST_ITEMS,
    VERSION,
    as_int64,
    as_list,
    as_map,
    as_str,
    as_traceparent,
    as_uint,
    encode_item,
    get_traceparent,
    need,
    open_envelope,
    show,
    wrong,
)
from .ops import MAX_VALUE, as_key
from .schema import (
    BOOL,
    ID,
    MAX_CLUSTER_ID,
    MAX_ERROR_MESSAGE,
    MAX_NAME,
    NODE_ROLE,
    OPT_ADDRESS,
    OPT_ID,
    OPT_NAME,
    UINT,
    Args,
    Field,
    Schema,
    check_fields,
    choice,
)

END_CODES = frozenset({"bad_request", "compacted", "forbidden", "shutting_down", "slow_subscriber"})
KV_OPS = frozenset({"cas", "delete", "incr", "set"})


def _text(max_len: int) -> Field:
    return Field("str", lambda v, w, n: as_str(v, w, n, max_len=max_len, min_len=1))


def _kv_value(value: object, where: str, name: str) -> bytes | int | None:
    if value is None:
        return None
    if type(value) is int:
        return as_int64(value, where, name)
    if type(value) is bytes and len(value) <= MAX_VALUE:
        return value
    raise wrong(where, name, value, f"bytes of at most {MAX_VALUE}, a signed 64-bit int or null")


_NODE: Schema = {"node": ID}
_SNAPSHOT: Schema = {"index": UINT, "term": UINT, "size": UINT}
_KV_VALUE = Field("bytes|int|null", _kv_value, None)

#: kind -> the fields of its data: the one table of what every event carries.
EVENTS: dict[str, Schema] = {
    "leader_changed": {"term": UINT, "leader": OPT_ID, "previous": OPT_ID},
    "role_changed": {"node": ID, "role": NODE_ROLE, "term": UINT},
    "term_changed": {"term": UINT},
    "member_added": {"node": ID, "address": OPT_ADDRESS, "voter": BOOL},
    "member_removed": _NODE,
    "member_promoted": _NODE,
    "node_discovered": {"node": ID, "name": OPT_NAME, "address": OPT_ADDRESS},
    "node_lost": _NODE,
    "snapshot_created": _SNAPSHOT,
    "snapshot_installed": _SNAPSHOT,
    "cluster_split_detected": {
        "cluster": _text(MAX_NAME),
        "cluster_id": _text(MAX_CLUSTER_ID),
        "other_cluster_id": _text(MAX_CLUSTER_ID),
        "other_node": ID,
        "address": OPT_ADDRESS,
    },
    "kv": {
        "op": choice(KV_OPS, "kv op"),
        "key": Field("key", as_key),
        "revision": UINT,
        "value": _KV_VALUE,
        "previous": _KV_VALUE,
    },
}
EVENT_KINDS = frozenset(EVENTS)
#: What a kv event's value is after each op.
_KV_VALUE_TYPES: dict[str, type] = {
    "set": bytes,
    "cas": bytes,
    "incr": int,
    "delete": type(None),
}


def _data(value: object, kind: str, where: str) -> Args:
    schema = EVENTS[kind]
    data = check_fields(as_map(value, where, "'data'", frozenset(schema)), schema, where)
    if kind == "kv" and type(data["value"]) is not _KV_VALUE_TYPES[data["op"]]:
        after = {"set": "bytes", "cas": "bytes", "incr": "an int", "delete": "null"}[data["op"]]
        raise ProtocolError(f"{where}: the value after {data['op']} must be {after}")
    return data


# -- subscribe ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Subscription:
    kinds: frozenset[str] | None = None  #: the kinds wanted; None for all
    prefix: str | None = None  #: kv events only for keys with this prefix; None for all keys
    since: int | None = None  #: resume after this position; None for live from now
    traceparent: str | None = None  #: the subscriber's trace context, if it traces


_SUBSCRIBE = "subscribe"


def _kinds(value: object, where: str) -> frozenset[str] | None:
    if value is None:
        return None
    items = as_list(value, where, "'kinds'", max_len=len(EVENT_KINDS))
    names: list[str] = []
    for item in items:
        if type(item) is not str or item not in EVENT_KINDS:
            raise ProtocolError(f"{where}: unknown event kind {show(item)}")
        names.append(item)
    kinds = frozenset(names)
    if not kinds:
        raise ProtocolError(f"{where}: 'kinds' is empty: give at least one, or null for all")
    if len(kinds) != len(names):
        raise ProtocolError(f"{where}: 'kinds' must be kinds without repeats")
    return kinds


def _subscription(raw: Mapping[str, object], traceparent: str | None = None) -> Subscription:
    kinds = _kinds(raw.get("kinds"), _SUBSCRIBE)
    prefix_value = raw.get("prefix")
    prefix = None if prefix_value is None else as_key(prefix_value, _SUBSCRIBE, "'prefix'", 0)
    if prefix is not None and kinds is not None and "kv" not in kinds:
        raise ProtocolError(f"{_SUBSCRIBE}: 'prefix' filters kv events, which 'kinds' leaves out")
    since_value = raw.get("since")
    since = None if since_value is None else as_uint(since_value, _SUBSCRIBE, "'since'")
    return Subscription(kinds, prefix, since, traceparent)


def encode_subscribe(
    kinds: Iterable[str] | None = None,
    prefix: str | None = None,
    since: int | None = None,
    traceparent: str | None = None,
) -> bytes:
    """The first frame of a subscription; ProtocolError if the node would refuse it."""
    if kinds is not None and (isinstance(kinds, str | bytes) or not isinstance(kinds, Iterable)):
        raise wrong(_SUBSCRIBE, "'kinds'", kinds, "null or event kinds")
    wire_kinds = None if kinds is None else sorted(kinds, key=str)
    sub = _subscription({"kinds": wire_kinds, "prefix": prefix, "since": since})
    out = {"v": VERSION, "kinds": wire_kinds, "prefix": sub.prefix, "since": since}
    if traceparent is not None:
        out["tp"] = as_traceparent(traceparent, _SUBSCRIBE)
    return encode_item(out)


def decode_subscribe(data: bytes) -> Subscription:
    raw = open_envelope(
        data, _SUBSCRIBE, frozenset({"kinds", "prefix", "since"}), max_items=MAX_REQUEST_ITEMS
    )
    return _subscription(raw, get_traceparent(raw, _SUBSCRIBE))


# -- events and the end ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    pos: int  #: its position in the stream; resume after it with since=pos
    kind: str  #: one of EVENT_KINDS
    at_ms: int  #: wall-clock ms when it happened
    data: Args  #: exactly the fields EVENTS gives its kind


@dataclass(frozen=True, slots=True)
class EventProgress:
    """Nothing the subscription asked for lies up to `pos` (after the previous frame)."""

    pos: int  #: resume after it with since=pos


@dataclass(frozen=True, slots=True)
class EventStreamEnd:
    """The node's last frame of a subscription: why it ends."""

    code: str  #: one of END_CODES
    message: str  #: for a person to read
    oldest: int | None = None  #: compacted only: the oldest position the node still has


_EVENT = "event"
_EVENT_FIELDS = frozenset({"pos", "kind", "at_ms", "data"})
_END_FIELDS = frozenset({"code", "message", "oldest"})


def _event(raw: Mapping[str, object]) -> Event:
    kind = need(raw, "kind", _EVENT)
    if type(kind) is not str or kind not in EVENTS:
        raise ProtocolError(f"{_EVENT}: unknown kind {show(kind)}")
    where = f"{_EVENT} {kind}"
    return Event(
        as_uint(need(raw, "pos", where), where, "'pos'"),
        kind,
        as_uint(need(raw, "at_ms", where), where, "'at_ms'"),
        _data(need(raw, "data", where), kind, where),
    )


def _end(value: object) -> EventStreamEnd:
    where = "end of events"
    raw = as_map(value, where, "'end'", _END_FIELDS)
    code = need(raw, "code", where)
    if type(code) is not str or code not in END_CODES:
        raise ProtocolError(f"{where}: unknown code {show(code)}")
    message = as_str(need(raw, "message", where), where, "'message'", max_len=MAX_ERROR_MESSAGE)
    oldest = raw.get("oldest")
    if oldest is not None and code != "compacted":
        raise ProtocolError(f"{where}: only 'compacted' carries 'oldest'")
    return EventStreamEnd(
        code, message, None if oldest is None else as_uint(oldest, where, "'oldest'")
    )


def encode_event(event: Event) -> bytes:
    """An event frame; ProtocolError if a subscriber would refuse it."""
    if not isinstance(event, Event):
        raise wrong(_EVENT, "the event", event, "an Event")
    data = dict(event.data) if isinstance(event.data, Mapping) else event.data
    checked = _event({"pos": event.pos, "kind": event.kind, "at_ms": event.at_ms, "data": data})
    return encode_item(
        {
            "v": VERSION,
            "pos": checked.pos,
            "kind": checked.kind,
            "at_ms": checked.at_ms,
            "data": checked.data,
        }
    )


def encode_progress(pos: int) -> bytes:
    """A progress frame; ProtocolError for a position that is not a uint."""
    return encode_item({"v": VERSION, "progress": as_uint(pos, "progress", "'progress'")})


def encode_end(code: str, message: str, oldest: int | None = None) -> bytes:
    """The end frame of a subscription; ProtocolError if a subscriber would refuse it."""
    end = _end({"code": code, "message": message, "oldest": oldest})
    return encode_item(
        {"v": VERSION, "end": {"code": end.code, "message": end.message, "oldest": end.oldest}}
    )


EventFrame = Event | EventProgress | EventStreamEnd


def decode_event_frame(data: bytes) -> EventFrame:
    """Any frame the node sends on a subscription: an event, progress or the end."""
    raw = open_envelope(data, "events frame", _EVENT_FIELDS | {"end", "progress"})
    if "tp" in raw:
        raise ProtocolError("events frame: no trace context on the events protocol")
    if "end" in raw:
        if raw.keys() != {"v", "end"}:
            raise ProtocolError("events frame: an end frame holds only 'end'")
        return _end(raw["end"])
    if "progress" in raw:
        if raw.keys() != {"v", "progress"}:
            raise ProtocolError("events frame: a progress frame holds only 'progress'")
        return EventProgress(as_uint(raw["progress"], "progress", "'progress'"))
    return _event(raw)


def decode_event(data: bytes) -> Event:
    frame = decode_event_frame(data)
    if not isinstance(frame, Event):
        raise ProtocolError(f"{_EVENT}: {_named(frame)}, not an event")
    return frame


def decode_end(data: bytes) -> EventStreamEnd:
    frame = decode_event_frame(data)
    if not isinstance(frame, EventStreamEnd):
        raise ProtocolError(f"end of events: {_named(frame)}, not an end frame")
    return frame


def _named(frame: EventFrame) -> str:
    if isinstance(frame, Event):
        return f"an event ({frame.kind})"
    if isinstance(frame, EventProgress):
        return "a progress frame"
    return f"an end frame ({frame.code})"


class EventStreamReader:
    """The subscriber's side: every frame of one subscription, checked against it and in order.

    ProtocolError for a malformed frame, a position (of an event or progress) that does not
    rise (or is not above since),
    an event the subscription did not ask for, or any frame after the end.
    """

    __slots__ = ("ended", "last", "subscription")

    def __init__(self, subscription: Subscription) -> None:
        self.subscription = subscription
        self.last = subscription.since  #: the last position seen (the since to resume with)
        self.ended = False

    def feed(self, data: bytes) -> EventFrame:
        if self.ended:
            raise ProtocolError("events frame: a frame after the end")
        frame = decode_event_frame(data)
        if isinstance(frame, EventStreamEnd):
            self.ended = True
            return frame
        if self.last is not None and frame.pos <= self.last:
            raise ProtocolError(f"events frame: position {frame.pos} after {self.last}")
        if isinstance(frame, EventProgress):
            self.last = frame.pos
            return frame
        sub = self.subscription
        if sub.kinds is not None and frame.kind not in sub.kinds:
            raise ProtocolError(f"{_EVENT}: kind {frame.kind} was not asked for")
        if frame.kind == "kv" and sub.prefix and not frame.data["key"].startswith(sub.prefix):
            raise ProtocolError(f"{_EVENT}: key {show(frame.data['key'])} is outside the prefix")
        self.last = frame.pos
        return frame
