"""The key-value store's snapshot format: encoding, and validation on the way back in.

Rules:
- A snapshot is one canonical CBOR map:
  `{"v": 1, "kind": "quicraft.kv", "applied": int, "now": int,
    "keys": [[key, value, revision], ...]               (sorted by key; sizes as a write's)
    "sessions": [[id, last_active, floor, [[seq, result], ...]], ...]}`
  (sessions least recently active first, results in the order they were stored), plus
  `"cid": str` (the cluster id, lowercase hex) once the store has one: a snapshot without it
  is what a store without an id writes, so older snapshots still read; `"addr": {node:
  address}` (where members serve, see the `address` command) once the store knows any;
  `"names": {node: name}` (the members' names, from the same command) once it knows any; and
  `"removed": [node, ...]` (sorted: the nodes removed from the membership and not added
  back since) once there is one.
- Everything is written in a deterministic order, so replicas that applied the same entries
  produce the same bytes.
- The keys are encoded a slice per cbor2 call, spliced into the same bytes one call gives:
  a call holds the GIL for all it encodes (about 10 ms per MB), and the node's event loop
  waits for it even when a worker thread encodes. A slice holds at most _KEYS_PER_CALL keys
  and, unless one value alone is more, _BYTES_PER_CALL of values: 300 values of 1 MiB in
  one call held the GIL for 0.9 s, long enough for the followers to start an election.
- decode_snapshot checks every field, type and invariant and raises ValueError naming what is
  wrong: a snapshot may come off the network or an old disk, and a half-valid one must never
  become the state. It decodes a key (or a session) per cbor2 call, for the same reason as
  the encoder: a follower decodes the leader's snapshot in a worker thread, and 300 MB in
  one call held the GIL, and so the node's loop, for half a second.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from operator import itemgetter

import cbor2

from ._cbor import canonical_order, strict_loads_in_pieces
from .base import Result
from .commands import MAX_ADDRESS, MAX_KEY_BYTES, MAX_NAME, MAX_NODE_ID, MAX_VALUE_BYTES
from .sessions import Session

VERSION = 1
KIND = "quicraft.kv"
_FIELDS = {"v", "kind", "applied", "now", "keys", "sessions"}
_OPTIONAL = {"cid", "addr", "names", "removed"}
_CLUSTER_ID = re.compile(r"[0-9a-f]{8,64}")
#: Keys per cbor2 call (about 120 KB, a millisecond of holding the GIL, at 100-byte values).
_KEYS_PER_CALL = 1000
#: Bytes of values per cbor2 call (a few ms of holding the GIL), so that large values do
#: not make one long call.
_BYTES_PER_CALL = 256 * 1024


@dataclass(frozen=True, slots=True)
class SnapshotState:
    applied: int
    now_ms: int
    entries: list[tuple[str, bytes, int]]  #: (key, value, revision), sorted by key
    sessions: list[tuple[int, Session]]  #: least recently active first
    cluster_id: str | None = None
    addresses: dict[str, str] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    removed: frozenset[str] = frozenset()


def session_rows(sessions: Iterable[tuple[int, Session]]) -> list[list[object]]:
    """The sessions (SessionTable.items(), least recently active first) as a snapshot holds
    them. The rows share the stored results with the table, which never changes a result
    once stored, so they stay as they were while the table moves on."""
    return [
        [sid, s.last_active_ms, s.floor, [[seq, r] for seq, r in s.results.items()]]
        for sid, s in sessions
    ]


def encode_snapshot(
    applied: int,
    entries: list[tuple[str, bytes, int]],
    now_ms: int,
    sessions: list[list[object]],
    cluster_id: str | None = None,
    addresses: Mapping[str, str] | None = None,
    names: Mapping[str, str] | None = None,
    removed: Iterable[str] = (),
) -> bytes:
    """Encode the store's state; `entries` must already be sorted by key, `sessions` come
    from session_rows()."""
    state: dict[str, object] = {
        "v": VERSION,
        "kind": KIND,
        "applied": applied,
        "now": now_ms,
        "keys": entries,  # cbor2 writes a tuple as the same array as a list: no copies
        "sessions": sessions,
    }
    if cluster_id is not None:
        state["cid"] = cluster_id
    if addresses:
        state["addr"] = dict(addresses)
    if names:
        state["names"] = dict(names)
    if removed:
        state["removed"] = sorted(removed)
    parts = [_head(_MAP, len(state))]
    for name in canonical_order(state):
        parts.append(cbor2.dumps(name))
        if name == "keys":
            parts += _array_in_slices(entries)
        else:
            parts.append(cbor2.dumps(state[name], canonical=True))
    return b"".join(parts)


_ARRAY, _MAP = 4, 5  # CBOR major types


def _head(major_type: int, length: int) -> bytes:
    """The CBOR head of an array or map of `length` items, in its shortest form."""
    if length < 24:
        return bytes([major_type << 5 | length])
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):  # the length follows in `size` bytes
        if length < 1 << (8 * size):
            return bytes([major_type << 5 | info]) + length.to_bytes(size, "big")
    raise ValueError(f"{length} items do not fit a CBOR head")


def _array_in_slices(rows: list[tuple[str, bytes, int]]) -> list[bytes]:
    """The canonical CBOR array of `rows`, a slice per cbor2 call: the items of an array
    are just their encodings one after another, so each slice's own head is cut off."""
    parts = [_head(_ARRAY, len(rows))]
    for piece in _slices(rows):
        parts.append(cbor2.dumps(piece)[len(_head(_ARRAY, len(piece))) :])
    return parts


def _slices(rows: list[tuple[str, bytes, int]]) -> Iterator[list[tuple[str, bytes, int]]]:
    """`rows` cut in slices of at most _KEYS_PER_CALL rows, and of values adding up to at
    most _BYTES_PER_CALL unless one value alone is more."""
    for start in range(0, len(rows), _KEYS_PER_CALL):
        piece = rows[start : start + _KEYS_PER_CALL]
        if sum(map(len, map(itemgetter(1), piece))) <= _BYTES_PER_CALL:
            yield piece  # the common case, summed in C
            continue
        begin, size = 0, 0
        for end, row in enumerate(piece):
            if size and size + len(row[1]) > _BYTES_PER_CALL:
                yield piece[begin:end]
                begin, size = end, 0
            size += len(row[1])
        yield piece[begin:]


def with_new_cluster_id(data: bytes) -> tuple[bytes, str | None, int]:
    """The snapshot `data` with a new random cluster id, that id, and the index its state was
    applied up to; `data` itself and None when it has no id. For a cluster restored from a
    backup (node/restore.py): it is another cluster than the one backed up, and must not pass
    for it where both are announced. ValueError if `data` is not a sound snapshot."""
    state = decode_snapshot(data)
    if state.cluster_id is None:
        return data, None, state.applied
    cluster_id = secrets.token_hex(16)
    rows = session_rows(state.sessions)
    new = encode_snapshot(
        state.applied, state.entries, state.now_ms, rows, cluster_id, state.addresses,
        state.names, state.removed,
    )  # fmt: skip
    return new, cluster_id, state.applied


def decode_snapshot(data: bytes) -> SnapshotState:
    """Parse and validate a snapshot. Raises ValueError (and nothing else) if it is bad."""
    try:
        return _decode(data)
    except ValueError as exc:
        raise ValueError(f"bad key-value snapshot: {exc}") from None


def _decode(data: bytes) -> SnapshotState:
    if not isinstance(data, bytes) or not data:
        raise ValueError("empty or not bytes")
    state = strict_loads_in_pieces(data, max_depth=8)
    if not isinstance(state, dict) or set(state) - _OPTIONAL != _FIELDS:
        raise ValueError(f"expected a map with the fields {', '.join(sorted(_FIELDS))}")
    cluster_id = state.get("cid")
    if "cid" in state and (
        not isinstance(cluster_id, str) or not _CLUSTER_ID.fullmatch(cluster_id)
    ):
        raise ValueError("cid must be 8 to 64 lowercase hex digits")
    if state["kind"] != KIND:
        raise ValueError(f"kind is {state['kind']!r}, not {KIND!r}")
    if _int(state["v"], "v") != VERSION:
        raise ValueError(f"unsupported version {state['v']}")
    applied = _int(state["applied"], "applied")
    now = _int(state["now"], "now")
    return SnapshotState(
        applied,
        now,
        _entries(state["keys"], applied),
        _sessions(state["sessions"], applied, now),
        cluster_id,
        _node_texts(state.get("addr", {}), "addr", "addresses", MAX_ADDRESS),
        _node_texts(state.get("names", {}), "names", "names", MAX_NAME),
        _node_ids(state.get("removed", [])),
    )


def _int(value: object, what: str, low: int = 0) -> int:
    if type(value) is not int or value < low:
        raise ValueError(f"{what} must be an integer >= {low}")
    return value


def _list(value: object, what: str, length: int | None = None) -> list[object]:
    if not isinstance(value, list) or (length is not None and len(value) != length):
        raise ValueError(f"{what} must be a list" + (f" of {length}" if length is not None else ""))
    return value


def _entries(raw: object, applied: int) -> list[tuple[str, bytes, int]]:
    entries: list[tuple[str, bytes, int]] = []
    previous: str | None = None
    for item in _list(raw, "keys"):
        key, value, raw_revision = _list(item, "a key entry", 3)
        if not isinstance(key, str) or not isinstance(value, bytes):
            raise ValueError("a key entry must be [text, bytes, revision]")
        # No write can store more (commands.py), and a node could not send it to a client.
        if len(key) * 4 > MAX_KEY_BYTES and len(key.encode("utf-8")) > MAX_KEY_BYTES:
            raise ValueError(f"a key of more than {MAX_KEY_BYTES} bytes at {key[:40]!r}...")
        if len(value) > MAX_VALUE_BYTES:
            raise ValueError(f"the value of {key!r} exceeds {MAX_VALUE_BYTES} bytes")
        if previous is not None and key <= previous:
            raise ValueError(f"keys are not sorted and unique at {key!r}")
        revision = _int(raw_revision, "a revision")
        if not 1 <= revision <= applied:
            raise ValueError(f"revision {revision} of {key!r} is outside 1..{applied}")
        entries.append((key, value, revision))
        previous = key
    return entries


def _node_texts(raw: object, field_name: str, what: str, longest: int) -> dict[str, str]:
    if not isinstance(raw, dict) or not all(
        isinstance(node, str) and 1 <= len(node) <= MAX_NODE_ID
        and isinstance(text, str) and 1 <= len(text) <= longest
        for node, text in raw.items()
    ):  # fmt: skip
        raise ValueError(f"{field_name} must map node ids to {what} (text)")
    return dict(raw)


def _node_ids(raw: object) -> frozenset[str]:
    listed = _list(raw, "removed")
    ids = [n for n in listed if isinstance(n, str) and 1 <= len(n) <= MAX_NODE_ID]
    if len(ids) != len(listed):
        raise ValueError("removed must list node ids (text)")
    if ids != sorted(set(ids)):
        raise ValueError("removed must be sorted, without repeats")
    return frozenset(ids)


def _sessions(raw: object, applied: int, now: int) -> list[tuple[int, Session]]:
    sessions: list[tuple[int, Session]] = []
    seen: set[int] = set()
    last_time = 0
    for item in _list(raw, "sessions"):
        raw_sid, raw_active, raw_floor, results = _list(item, "a session", 4)
        sid = _int(raw_sid, "a session id")
        if not 1 <= sid <= applied or sid in seen:
            raise ValueError(f"session id {sid} is repeated or outside 1..{applied}")
        # The table relies on this order to expire the idlest session first.
        active = _int(raw_active, "a session time")
        if not last_time <= active <= now:
            raise ValueError(f"session {sid} is out of activity order or later than now")
        session = Session(active, _int(raw_floor, "a session floor"))
        for pair in _list(results, "session results"):
            raw_seq, result = _list(pair, "a session result", 2)
            seq = _int(raw_seq, "a seq")
            if seq < session.floor or seq in session.results:
                raise ValueError(f"session {sid} has seq {seq} repeated or below its floor")
            session.results[seq] = _result(result)
        seen.add(sid)
        last_time = active
        sessions.append((sid, session))
    return sessions


def _result(value: object) -> Result:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and (v is None or isinstance(v, str | bytes | int))
        for k, v in value.items()
    ):
        raise ValueError("a stored result must be a map of text to scalars")
    return dict(value)
