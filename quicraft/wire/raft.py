"""Raft messages on the wire (ALPN quicraft-raft/1): core.Message <-> one CBOR map.

Version 1 layout; a field at its default (0, False, b"", no entries) is left out:

    {"v": 1, "type": "append", "to": id, "from": id, "term": u64,
     "log_term": u64, "index": u64, "commit": u64, "reject": bool, "hint_index": u64,
     "hint_term": u64, "read_round": u64, "transfer": bool, "context": bytes,
     "entries": [[term, index, type, data], ...],
     "snapshot": {"index": u64, "term": u64, "voters": [id], "learners": [id], "data": bytes},
     "tp": traceparent}

Rules:
- Encoding is one cbor2.dumps of plain dicts, lists, ints and bytes: an AppendEntries of hundreds
  of entries costs one list per entry and nothing else (this is the hot path).
- `type` is a MessageType value, an entry's type an EntryType value; ids are 1-128 characters.
- "entries" only on APPEND, where they must be the slice right after (`index`, `log_term`):
  consecutive indexes from index + 1, terms never falling and never above the message's term.
- "snapshot" on SNAPSHOT only, and required there. Its data rides inline, bounded by the frame:
  fine for small and in-memory state machines. A large snapshot goes as a header and chunks
  (wire/snapshot.py), whose header is this map with "size" in place of "data".
- Voters and learners are sorted, without repeats, and disjoint.
- "tp" is the sender's W3C traceparent; Message has no field for it, so decode_envelope returns
  it beside the message (decode_message drops it).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

from ..core.types import Entry, EntryType, Membership, Message, MessageType, Snapshot, SnapshotMeta
from .errors import ProtocolError
from .fields import (
    MAX_NODE_ID,
    VERSION,
    as_list,
    as_map,
    as_str,
    as_traceparent,
    encode_item,
    get_bool,
    get_bytes,
    get_str,
    get_traceparent,
    get_uint,
    need,
    open_envelope,
    show,
)

MAX_CONTEXT = 4096
MAX_ENTRIES = 1 << 20
MAX_MEMBERS = 1024
#: Inline snapshot data and entry data are bounded only by the frame that carried them.
_UNBOUNDED = 1 << 62

_WHERE = "raft message"
#: Every field but entries and snapshot (also the fields of a chunked snapshot's header).
SCALAR_FIELDS = frozenset(
    {
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
    }
)
_FIELDS = SCALAR_FIELDS | {"entries", "snapshot"}
_SNAPSHOT_FIELDS = frozenset({"index", "term", "voters", "learners", "data"})
_HEADER_FIELDS = frozenset({"index", "term", "voters", "learners", "size"})
_MESSAGE_TYPES = {t.value: t for t in MessageType}
_ENTRY_TYPES = {int(t): t for t in EntryType}
_WHERE_OF = {t: f"{_WHERE} {t.value}" for t in MessageType}  # built once, not per message


@dataclass(frozen=True, slots=True)
class RaftEnvelope:
    """A decoded Raft message with the trace context it came with."""

    message: Message
    traceparent: str | None = None


def encode_message(m: Message, *, traceparent: str | None = None) -> bytes:
    """The wire form of `m`, snapshot data inline. Trusts the core for field values."""
    return encode_item(message_map(m, traceparent))


def decode_envelope(data: bytes) -> RaftEnvelope:
    raw = open_envelope(data, _WHERE, _FIELDS)
    return RaftEnvelope(message_from_map(raw, header=False)[0], get_traceparent(raw, _WHERE))


def decode_message(data: bytes) -> Message:
    return decode_envelope(data).message


def message_map(m: Message, traceparent: str | None, *, header: bool = False) -> dict[str, object]:
    """The envelope map of `m`; with `header`, its snapshot's data is replaced by its size."""
    out: dict[str, object] = {
        "v": VERSION,
        "type": m.type.value,
        "to": m.to,
        "from": m.frm,
        "term": m.term,
    }
    # Only fields away from their default: heartbeats and votes stay a few dozen bytes.
    if m.log_term:
        out["log_term"] = m.log_term
    if m.index:
        out["index"] = m.index
    if m.commit:
        out["commit"] = m.commit
    if m.reject:
        out["reject"] = True
    if m.hint_index:
        out["hint_index"] = m.hint_index
    if m.hint_term:
        out["hint_term"] = m.hint_term
    if m.read_round:
        out["read_round"] = m.read_round
    if m.transfer:
        out["transfer"] = True
    if m.context:
        out["context"] = m.context
    if m.entries:
        # EntryType is an IntEnum: cbor2 writes it as the plain int it is.
        out["entries"] = [[e.term, e.index, e.type, e.data] for e in m.entries]
    snap = m.snapshot
    if snap is not None:
        meta = snap.meta
        wire_snap: dict[str, object] = {
            "index": meta.index,
            "term": meta.term,
            "voters": sorted(meta.membership.voters),
            "learners": sorted(meta.membership.learners),
        }
        if header:
            wire_snap["size"] = len(snap.data)
        else:
            wire_snap["data"] = snap.data
        out["snapshot"] = wire_snap
    if traceparent is not None:
        out["tp"] = as_traceparent(traceparent, _WHERE)
    return out


def message_from_map(raw: dict[str, object], *, header: bool) -> tuple[Message, int]:
    """The Message of a checked envelope map, and (for a snapshot header) the data size."""
    name = need(raw, "type", _WHERE)
    mtype = _MESSAGE_TYPES.get(name) if type(name) is str else None
    if mtype is None:
        raise ProtocolError(f"{_WHERE}: unknown message type {show(name)}")
    where = _WHERE_OF[mtype]
    m = Message(
        mtype,
        to=get_str(raw, "to", where, max_len=MAX_NODE_ID, min_len=1),
        frm=get_str(raw, "from", where, max_len=MAX_NODE_ID, min_len=1),
        term=get_uint(raw, "term", where),
        log_term=get_uint(raw, "log_term", where, 0),
        index=get_uint(raw, "index", where, 0),
        commit=get_uint(raw, "commit", where, 0),
        reject=get_bool(raw, "reject", where, False),
        hint_index=get_uint(raw, "hint_index", where, 0),
        hint_term=get_uint(raw, "hint_term", where, 0),
        read_round=get_uint(raw, "read_round", where, 0),
        transfer=get_bool(raw, "transfer", where, False),
        context=get_bytes(raw, "context", where, max_len=MAX_CONTEXT, default=b""),
    )
    if "entries" in raw:
        if mtype is not MessageType.APPEND:
            raise ProtocolError(f"{where}: only append messages carry entries")
        m.entries = _entries(raw["entries"], m, where)
    size = 0
    if mtype is MessageType.SNAPSHOT:
        m.snapshot, size = _snapshot(need(raw, "snapshot", where), where, header)
    elif "snapshot" in raw:
        raise ProtocolError(f"{where}: only snapshot messages carry a snapshot")
    return m, size


def _entries(value: object, m: Message, where: str) -> list[Entry]:
    items = as_list(value, where, "'entries'", max_len=MAX_ENTRIES)
    out: list[Entry] = []
    expect_index, floor_term, ceiling = m.index + 1, m.log_term, m.term
    # Hot path: checks inline, one Entry per item, error text built only on failure.
    for item in items:
        if type(item) is not list or len(item) != 4:
            raise ProtocolError(f"{where}: entry {show(item)} is not [term, index, type, data]")
        term, index, etype, data = item
        if (
            type(term) is not int
            or not floor_term <= term <= ceiling
            or index != expect_index
            or type(index) is not int
            or type(etype) is not int
            or etype not in _ENTRY_TYPES
            or type(data) is not bytes
        ):
            raise ProtocolError(
                f"{where}: entry {show(item)} is not [term {floor_term}..{ceiling}, "
                f"index {expect_index}, entry type, bytes]"
            )
        out.append(Entry(term, index, _ENTRY_TYPES[etype], data))
        expect_index, floor_term = index + 1, term
    return out


def _snapshot(value: object, where: str, header: bool) -> tuple[Snapshot, int]:
    raw = as_map(value, where, "'snapshot'", _HEADER_FIELDS if header else _SNAPSHOT_FIELDS)
    where = f"{where} snapshot"
    voters = _ids(need(raw, "voters", where), where, "'voters'")
    learners = _ids(need(raw, "learners", where), where, "'learners'")
    if voters & learners:
        raise ProtocolError(f"{where}: {show(sorted(voters & learners))} both voter and learner")
    meta = SnapshotMeta(
        get_uint(raw, "index", where), get_uint(raw, "term", where), Membership(voters, learners)
    )
    if header:
        return Snapshot(meta), get_uint(raw, "size", where)
    return Snapshot(meta, get_bytes(raw, "data", where, max_len=_UNBOUNDED, default=b"")), 0


def _ids(value: object, where: str, name: str) -> frozenset[str]:
    items = as_list(value, where, name, max_len=MAX_MEMBERS)
    ids = [as_str(i, where, f"an id in {name}", max_len=MAX_NODE_ID, min_len=1) for i in items]
    if any(a >= b for a, b in pairwise(ids)):
        raise ProtocolError(f"{where}: {name} must be sorted without repeats")
    return frozenset(ids)
