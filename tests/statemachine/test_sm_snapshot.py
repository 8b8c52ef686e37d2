"""Snapshots: round trip, resume mid-stream identically, and strict validation on restore."""

from __future__ import annotations

import io
from typing import Any

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from quicraft.statemachine import MAX_KEY_BYTES, MAX_VALUE_BYTES, KVStore, encode_command
from quicraft.statemachine import snapshot as snapshot_format

TIMEOUT = 1000


def _store() -> KVStore:
    return KVStore(session_timeout_ms=TIMEOUT, max_results_per_session=4, max_sessions=3)


def _busy_store() -> KVStore:
    store = _store()
    log = [
        encode_command("register", {}, 0),
        encode_command("set", {"key": "a", "value": b"1", "session": 1, "seq": 0}, 10),
        encode_command("incr", {"key": "n", "by": 3, "session": 1, "seq": 1}, 20),
        encode_command("register", {}, 30),
        encode_command("cas", {"key": "a", "expected": b"1", "new": b"2"}, 40),
        encode_command("delete", {"key": "zz", "session": 4, "seq": 0}, 50),
        b"junk",
    ]
    for index, entry in enumerate(log, start=1):
        store.apply(index, entry)
    return store


def _state(store: KVStore) -> tuple[object, ...]:
    return (
        store.last_applied,
        store.keys(),
        [store.get(key) for key in store.keys()],  # noqa: SIM118 (not a dict)
        store.sessions.now_ms,
        [(sid, s.last_active_ms, s.floor, s.results) for sid, s in store.sessions.items()],
    )


def test_round_trip() -> None:
    store = _busy_store()
    data = store.snapshot()
    copy = KVStore()
    copy.restore(data)
    assert _state(copy) == _state(store)
    assert copy.snapshot() == data
    assert copy.last_applied == 7
    assert copy.get("a") == (b"2", 5) and copy.get("n") == (b"3", 3)
    # Duplicates are still recognised after a restore.
    replay = encode_command("incr", {"key": "n", "by": 3, "session": 1, "seq": 1}, 60)
    assert copy.apply(8, replay) == {"revision": 3, "value": 3}


def test_a_capture_encodes_the_state_it_was_taken_at_whatever_is_applied_after() -> None:
    store = _busy_store()
    expected = store.snapshot()
    encode = store.capture()
    later = [
        encode_command("set", {"key": "a", "value": b"9", "session": 1, "seq": 2, "ack": 2}, 70),
        encode_command("register", {}, 80),
        encode_command("delete", {"key": "n"}, 90),
        encode_command("set", {"key": "new", "value": b"x", "session": 4, "seq": 1}, 2000),
    ]
    for index, entry in enumerate(later, start=8):
        store.apply(index, entry)
    assert store.snapshot() != expected  # the store moved on ...
    assert encode() == expected  # ... and the capture did not


def test_keys_are_written_as_the_arrays_of_the_format() -> None:
    # encode_snapshot hands cbor2 its (key, value, revision) tuples as they are: they must
    # come out as the same bytes as lists would (the snapshot is canonical CBOR).
    data = _busy_store().snapshot()
    state = cbor2.loads(data)
    assert state["keys"] == [["a", b"2", 5], ["n", b"3", 3]]
    assert cbor2.dumps(state, canonical=True) == data


def test_keys_encoded_in_slices_give_the_bytes_of_one_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(snapshot_format, "_KEYS_PER_CALL", 2)
    store = _busy_store()
    for n in range(3):
        store.apply(8 + n, encode_command("set", {"key": f"k{n}", "value": b"v" * n}, 100))
    store.apply(11, encode_command("found", {"cluster_id": "0123abcd"}, 110))
    address = {"node": "n1", "address": "10.0.0.1:7400", "name": "n1"}
    store.apply(12, encode_command("address", address, 120))
    store.membership_changed("n9", removed=True)
    data = store.snapshot()
    state = cbor2.loads(data)
    assert len(state["keys"]) == 5 and {"cid", "addr", "names", "removed"} <= state.keys()
    assert cbor2.dumps(state, canonical=True) == data


def test_large_values_are_encoded_a_few_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # One cbor2 call holds the GIL for all it encodes: 300 values of 1 MiB in one call
    # stalled the node's loop for 0.9 s, and its followers started an election.
    budget = snapshot_format._BYTES_PER_CALL
    store = _busy_store()
    sizes = [budget // 3] * 12 + [budget * 2] + [10] * 5 + [budget - 5, 6]
    for n, size in enumerate(sizes):
        store.apply(8 + n, encode_command("set", {"key": f"k{n:02}", "value": b"v" * size}, 100))
    calls: list[int] = []
    dumps = cbor2.dumps

    def measured(obj: object, **kwargs: object) -> bytes:
        out = dumps(obj, **kwargs)  # type: ignore[arg-type]
        calls.append(len(out))
        return out

    monkeypatch.setattr(cbor2, "dumps", measured)  # the module snapshot_format calls
    data = store.snapshot()
    monkeypatch.undo()
    overhead = 1024  # the keys, revisions and CBOR heads of a slice
    assert max(calls) <= budget * 2 + overhead  # the one value that is bigger, alone
    assert sorted(calls)[-2] <= budget + overhead
    state = cbor2.loads(data)
    assert [len(row[1]) for row in state["keys"][1:-1]] == sizes  # between "a" and "n"
    assert cbor2.dumps(state, canonical=True) == data


def test_a_snapshot_is_decoded_a_key_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # As for encoding: 300 values of 1 MiB decoded in one cbor2 call held the GIL, and so a
    # follower's loop while a worker thread decoded the leader's snapshot, for half a second.
    store = _busy_store()
    for n in range(6):
        store.apply(8 + n, encode_command("set", {"key": f"k{n}", "value": b"v" * 100_000}, 100))
    data = store.snapshot()
    decoded: list[int] = []  # the bytes each call decoded
    real = cbor2.CBORDecoder

    class Measured:  # cbor2's decoder cannot be subclassed
        def __init__(self, fp: io.BytesIO, **options: Any) -> None:
            self.fp, self.decoder = fp, real(fp, **options)

        def decode(self) -> object:
            start = self.fp.tell()
            item = self.decoder.decode()
            decoded.append(self.fp.tell() - start)
            return item

    monkeypatch.setattr(cbor2, "CBORDecoder", Measured)  # the module _cbor calls
    copy = KVStore()
    copy.restore(data)
    monkeypatch.undo()
    assert len(data) - 3 == sum(decoded)  # all but the heads of the map, keys and sessions
    assert max(decoded) <= 100_000 + 20  # a key with its value and revision
    assert _state(copy) == _state(store) and copy.snapshot() == data


@pytest.mark.parametrize("length", [0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32])
def test_a_cbor_head_is_the_one_cbor2_writes(length: int) -> None:
    class Sized(list[None]):  # cbor2 writes the head from len(); no items are needed
        def __len__(self) -> int:
            return length

    head = snapshot_format._head(4, length)
    assert cbor2.dumps(Sized()) == head
    assert snapshot_format._head(5, length)[1:] == head[1:]


def test_the_removed_nodes_are_noted_in_order_and_kept_in_snapshots() -> None:
    """The nodes removed and not added back (node/server.py tells the store as it applies each
    membership change; node/lan.py's autopilot adds none of them)."""
    store = _busy_store()
    for node, removed in [("n3", True), ("n2", True), ("n3", False), ("n5", True)]:
        store.membership_changed(node, removed)
    assert store.removed == {"n2", "n5"}
    data = store.snapshot()
    assert cbor2.loads(data)["removed"] == ["n2", "n5"]  # sorted: equal states, equal bytes
    copy = KVStore()
    copy.restore(data)
    assert copy.removed == {"n2", "n5"} and copy.snapshot() == data
    # A capture holds the set it was taken with.
    encode = store.capture()
    store.membership_changed("n2", removed=False)
    assert cbor2.loads(encode())["removed"] == ["n2", "n5"]
    assert cbor2.loads(store.snapshot())["removed"] == ["n5"]
    # A restore replaces it, with nothing when the snapshot lists none (as older ones).
    copy.restore(_busy_store().snapshot())
    assert copy.removed == frozenset()


def test_the_largest_key_and_value_a_write_stores_round_trip() -> None:
    store = KVStore()
    for index, key in enumerate(["é" * (MAX_KEY_BYTES // 2), "k" * MAX_KEY_BYTES], start=1):
        store.apply(index, encode_command("set", {"key": key, "value": bytes(MAX_VALUE_BYTES)}, 0))
    copy = KVStore()
    copy.restore(store.snapshot())
    assert copy.snapshot() == store.snapshot()


def test_empty_store_round_trip() -> None:
    copy = KVStore()
    copy.restore(KVStore().snapshot())
    assert _state(copy) == _state(KVStore())


def test_restore_replaces_everything() -> None:
    target = _busy_store()
    target.apply(8, encode_command("set", {"key": "only-here", "value": b""}, 70))
    target.restore(KVStore().snapshot())
    assert target.keys() == [] and len(target.sessions) == 0 and target.last_applied == 0


def _good() -> dict[str, object]:
    loaded = cbor2.loads(_busy_store().snapshot())
    assert isinstance(loaded, dict)
    return loaded


BAD = [
    (b"", "empty"),
    (b"\xff\x00", "not valid CBOR"),
    (cbor2.dumps([1]), "expected a map"),
    (cbor2.dumps({**_good(), "v": 2}), "unsupported version"),
    (cbor2.dumps({**_good(), "kind": "other"}), "kind"),
    (cbor2.dumps({**_good(), "extra": 1}), "expected a map"),
    (cbor2.dumps({**_good(), "applied": -1}), "applied"),
    (cbor2.dumps({**_good(), "keys": [["b", b"", 1], ["a", b"", 1]]}), "not sorted"),
    (cbor2.dumps({**_good(), "keys": [["a", b"", 1], ["a", b"", 1]]}), "not sorted"),
    (cbor2.dumps({**_good(), "keys": [["a", "text", 1]]}), "key entry"),
    (cbor2.dumps({**_good(), "keys": [["a", b"", 99]]}), "outside"),
    (cbor2.dumps({**_good(), "keys": [["a", b""]]}), "list of 3"),
    # Found by an audit: what no write can store (and no answer could carry) was restored.
    (cbor2.dumps({**_good(), "keys": [["k" * (MAX_KEY_BYTES + 1), b"", 1]]}), "more than 4096"),
    (cbor2.dumps({**_good(), "keys": [["é" * 2049, b"", 1]]}), "more than 4096"),
    (cbor2.dumps({**_good(), "keys": [["a", bytes(MAX_VALUE_BYTES + 1), 1]]}), "exceeds"),
    (cbor2.dumps({**_good(), "sessions": [[1, 0, 0, []], [1, 0, 0, []]]}), "repeated"),
    (cbor2.dumps({**_good(), "sessions": [[1, 50, 0, []], [4, 10, 0, []]]}), "activity order"),
    (cbor2.dumps({**_good(), "sessions": [[1, 10_000, 0, []]]}), "activity order"),
    (cbor2.dumps({**_good(), "sessions": [[1, 0, 5, [[2, {}]]]]}), "below its floor"),
    (cbor2.dumps({**_good(), "sessions": [[1, 0, 0, [[2, {"x": [1]}]]]]}), "stored result"),
    (cbor2.dumps({**_good(), "sessions": [[1, 0, 0, [[2, {"x": cbor2.undefined}]]]]}), "result"),
    (cbor2.dumps({**_good(), "sessions": [[1, 0, 0, [[True, {}]]]]}), "seq"),
    (cbor2.dumps({**_good(), "now": 1.0}), "now"),
    (cbor2.dumps({**_good(), "addr": {"n1": ""}}), "addr"),
    (cbor2.dumps({**_good(), "addr": {"n1": 7}}), "addr"),
    (cbor2.dumps({**_good(), "addr": [["n1", "h:1"]]}), "addr"),
    (cbor2.dumps({**_good(), "names": {"n1": ""}}), "names"),
    (cbor2.dumps({**_good(), "names": {"n1": "n" * 65}}), "names"),
    (cbor2.dumps({**_good(), "names": {"": "n1"}}), "names"),
    (cbor2.dumps({**_good(), "removed": {"n1": 1}}), "removed must be a list"),
    (cbor2.dumps({**_good(), "removed": ["n1", 7]}), "removed must list node ids"),
    (cbor2.dumps({**_good(), "removed": [""]}), "removed must list node ids"),
    (cbor2.dumps({**_good(), "removed": ["n2", "n1"]}), "sorted, without repeats"),
    (cbor2.dumps({**_good(), "removed": ["n1", "n1"]}), "sorted, without repeats"),
    (cbor2.dumps(_good()) + b"\x00", "trailing"),
]


@pytest.mark.parametrize(("data", "reason"), BAD)
def test_bad_snapshot_is_refused_and_state_kept(data: bytes, reason: str) -> None:
    store = _busy_store()
    before = store.snapshot()
    with pytest.raises(ValueError, match=reason) as caught:
        store.restore(data)
    assert str(caught.value).startswith("bad key-value snapshot: ")
    assert store.snapshot() == before


@given(st.binary(max_size=200))
def test_random_snapshot_bytes_raise_only_value_error(data: bytes) -> None:
    store = KVStore()
    try:
        store.restore(data)
    except ValueError:
        assert store.last_applied == 0


# -- resume mid-stream --------------------------------------------------------------------------

_KEYS = st.sampled_from(["a", "b", "a/1", "n"])
_VALUES = st.sampled_from([b"", b"1", b"-2", b"x"])


# Weighted: more writes than registers, so sessions see several writes before they go.
_KINDS = ["register", "set", "set", "delete", "incr", "incr", "cas", "junk"]


@st.composite
def _entry(draw: st.DrawFn) -> tuple[int, str, dict[str, object] | bytes]:
    """(ts step, op, args): a random write or register, or ("junk", bytes) for a bad entry."""
    step = draw(st.sampled_from([0, 0, 0, 0, 1, 10, 100, 300, TIMEOUT + 1, -500]))
    kind = draw(st.sampled_from(_KINDS))
    if kind == "junk":
        return step, kind, draw(st.binary(max_size=8))
    if kind == "register":
        return step, kind, {}
    args: dict[str, object] = {"key": draw(_KEYS)}
    if kind == "set":
        args["value"] = draw(_VALUES)
    elif kind == "incr":
        args["by"] = draw(st.integers(-3, 3))
    elif kind == "cas":
        args["expected"] = draw(st.none() | _VALUES)
        args["new"] = draw(_VALUES)
    if draw(st.booleans()):
        # Which session: the n-th most recent register (-1: an id that never registered).
        # Small seq ranges so that seqs repeat.
        args["session"] = draw(st.sampled_from([0, 0, 0, 1, 2, -1]))
        seq = args["seq"] = draw(st.integers(0, 4))  # five seqs, four kept per session
        if draw(st.booleans()):
            args["ack"] = draw(st.integers(0, seq))
    return step, kind, args


def _log(entries: list[tuple[int, str, dict[str, object] | bytes]]) -> list[bytes]:
    """Encode the entries, after one register, with a clock that mostly advances but
    sometimes steps back."""
    out = [encode_command("register", {}, 0)]
    registers = [1]
    clock = 0
    for step, kind, args in entries:
        clock = max(0, clock + step)
        if isinstance(args, bytes):
            out.append(args)
            continue
        if kind == "register":
            registers.append(len(out) + 1)
        elif "session" in args:
            pick = args["session"]
            assert isinstance(pick, int)
            known = pick >= 0 and registers
            args = {**args, "session": registers[-1 - pick % len(registers)] if known else 999}
        out.append(encode_command(kind, args, clock))
    return out


@given(st.lists(_entry(), max_size=60), st.data())
def test_restore_mid_stream_continues_identically(
    entries: list[tuple[int, str, dict[str, object] | bytes]], data: st.DataObject
) -> None:
    log = _log(entries)
    cut = data.draw(st.integers(0, len(log)))
    whole = _store()
    expected = [whole.apply(i, e) for i, e in enumerate(log, start=1)]

    first = _store()
    for i, e in enumerate(log[:cut], start=1):
        first.apply(i, e)
    resumed = _store()
    resumed.restore(first.snapshot())
    rest = [resumed.apply(i, e) for i, e in enumerate(log[cut:], start=cut + 1)]

    assert rest == expected[cut:]
    assert _state(resumed) == _state(whole)
    assert resumed.snapshot() == whole.snapshot()
