"""KVStore: every op, its result and the revisions it leaves; incr and cas edge cases."""

from __future__ import annotations

import random
import re

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from quicraft.statemachine import (
    CommandError,
    KVStore,
    StateMachine,
    build_command,
    decode_command,
    encode_command,
)


class Feed:
    """Applies commands at consecutive indexes with a fixed clock."""

    def __init__(self, store: KVStore | None = None) -> None:
        self.store = store or KVStore()
        self.index = self.store.last_applied

    def __call__(self, op: str, **args: object) -> dict[str, object]:
        self.index += 1
        return self.store.apply(self.index, encode_command(op, args, 1000))


def test_kvstore_is_a_state_machine() -> None:
    assert isinstance(KVStore(), StateMachine)


def test_set_and_get() -> None:
    feed = Feed()
    assert feed.store.get("a") == (None, 0)
    assert feed("set", key="a", value=b"one") == {"revision": 1}
    assert feed("set", key="b", value=b"") == {"revision": 2}
    assert feed("set", key="a", value=b"two") == {"revision": 3}
    assert feed.store.get("a") == (b"two", 3)
    assert feed.store.get("b") == (b"", 2)
    assert feed.store.last_applied == 3
    assert len(feed.store) == 2


def test_delete() -> None:
    feed = Feed()
    feed("set", key="a", value=b"1")
    assert feed("delete", key="a") == {"revision": 2, "deleted": True}
    assert feed.store.get("a") == (None, 0)
    assert feed.store.keys() == []
    # Deleting what is not there still takes its place in the history.
    assert feed("delete", key="a") == {"revision": 3, "deleted": False}
    assert feed.store.last_applied == 3


def test_keys_by_prefix_sorted() -> None:
    feed = Feed()
    for key in ["b/2", "a", "b/1", "b", "c", "b/10", "ba"]:
        feed("set", key=key, value=b"")
    assert feed.store.keys() == ["a", "b", "b/1", "b/10", "b/2", "ba", "c"]
    assert feed.store.keys("b/") == ["b/1", "b/10", "b/2"]
    assert feed.store.keys("b") == ["b", "b/1", "b/10", "b/2", "ba"]
    assert feed.store.keys("zz") == []
    feed("delete", key="b/10")
    assert feed.store.keys("b/") == ["b/1", "b/2"]


def test_incr() -> None:
    feed = Feed()
    assert feed("incr", key="n") == {"revision": 1, "value": 1}
    assert feed("incr", key="n", by=41) == {"revision": 2, "value": 42}
    assert feed("incr", key="n", by=-50) == {"revision": 3, "value": -8}
    assert feed("incr", key="n", by=0) == {"revision": 4, "value": -8}
    # Stored as ASCII decimal, readable by get and by a later set-then-incr.
    assert feed.store.get("n") == (b"-8", 4)
    feed("set", key="n", value=b"100")
    assert feed("incr", key="n", by=-1) == {"revision": 6, "value": 99}
    feed("set", key="z", value=b"007")
    assert feed("incr", key="z") == {"revision": 8, "value": 8}
    assert feed.store.get("z") == (b"8", 8)


@pytest.mark.parametrize(
    "value", [b"", b"abc", b" 5", b"5 ", b"+5", b"1_000", b"1.5", b"--1", b"\xd9\xa3", b"0x10"]
)
def test_incr_on_non_integer_is_refused(value: bytes) -> None:
    feed = Feed()
    feed("set", key="k", value=value)
    result = feed("incr", key="k")
    assert result["error"] == "bad_request"
    assert "not a 64-bit integer" in str(result["message"])
    assert feed.store.get("k") == (value, 1)  # unchanged
    assert feed.store.last_applied == 2


def test_an_incr_refusal_names_the_key_alike_on_every_python() -> None:
    """Found by an audit: the message, kept in a session's results, showed the key with
    repr(), whose output depends on the Unicode version of the Python that runs it (U+1F6DC,
    say, is escaped by Python 3.11 and printed by 3.12): two replicas could hold different
    results. Every character that is not ASCII is now escaped, the same way everywhere."""
    feed = Feed()
    feed("set", key="café\U0001f6dc", value=b"x")
    assert feed("incr", key="café\U0001f6dc")["message"] == (
        "value of 'caf\\xe9\\U0001f6dc' is not a 64-bit integer"
    )
    feed("set", key="ü", value=str((1 << 63) - 1).encode())
    assert feed("incr", key="ü", by=2)["message"] == "incr of '\\xfc' by 2 would overflow"
    feed("set", key="k", value=b"x")
    assert feed("incr", key="k")["message"] == "value of 'k' is not a 64-bit integer"


def test_incr_stays_within_64_bits() -> None:
    feed = Feed()
    top = (1 << 63) - 1
    feed("set", key="k", value=str(top - 1).encode())
    assert feed("incr", key="k") == {"revision": 2, "value": top}
    over = feed("incr", key="k")
    assert over["error"] == "bad_request" and "overflow" in str(over["message"])
    assert feed.store.get("k") == (str(top).encode(), 2)
    feed("set", key="low", value=str(-(1 << 63)).encode())
    assert feed("incr", key="low", by=-1)["error"] == "bad_request"
    feed("set", key="huge", value=b"9999999999999999999")  # 19 digits, above int64
    assert feed("incr", key="huge", by=-1)["error"] == "bad_request"


def test_cas() -> None:
    feed = Feed()
    # expected None: only when the key is absent.
    assert feed("cas", key="c", expected=None, new=b"x") == {
        "revision": 1,
        "ok": True,
        "value": b"x",
    }
    assert feed("cas", key="c", expected=None, new=b"y") == {
        "revision": 2,
        "ok": False,
        "value": b"x",
    }
    assert feed.store.get("c") == (b"x", 1)
    assert feed("cas", key="c", expected=b"x", new=b"y") == {
        "revision": 3,
        "ok": True,
        "value": b"y",
    }
    assert feed("cas", key="c", expected=b"x", new=b"z") == {
        "revision": 4,
        "ok": False,
        "value": b"y",
    }
    assert feed.store.get("c") == (b"y", 3)
    # Absent key, expected a value: fails and reports the absence.
    assert feed("cas", key="d", expected=b"", new=b"1") == {
        "revision": 5,
        "ok": False,
        "value": None,
    }
    assert feed.store.get("d") == (None, 0)
    # An empty value is a value, not absence.
    feed("set", key="e", value=b"")
    assert feed("cas", key="e", expected=None, new=b"1")["ok"] is False
    assert feed("cas", key="e", expected=b"", new=b"1")["ok"] is True
    # Same value swapped in still counts as a change: the revision moves.
    assert feed("cas", key="e", expected=b"1", new=b"1")["ok"] is True
    assert feed.store.get("e") == (b"1", 9)


def test_malformed_command_is_a_no_op() -> None:
    feed = Feed()
    feed("set", key="a", value=b"1")
    before = feed.store.snapshot()
    result = feed.store.apply(2, b"\xa1garbage")
    assert result["error"] == "bad_request"
    assert "index 2" in str(result["message"])
    assert feed.store.last_applied == 2
    assert feed.store.get("a") == (b"1", 1)
    # Only the applied index moved.
    old_state, new_state = cbor2.loads(before), cbor2.loads(feed.store.snapshot())
    assert (old_state.pop("applied"), new_state.pop("applied")) == (1, 2)
    assert old_state == new_state


def test_proposed_commands_apply_alike_without_decoding() -> None:
    proposer, replica = KVStore(), KVStore()
    for index, op, args in [
        (1, "register", {}),
        (2, "set", {"key": "a", "value": b"1", "session": 1, "seq": 0}),
        (3, "cas", {"key": "a", "expected": b"1", "new": b"2", "session": 1, "seq": 1}),
        (4, "set", {"key": "a", "value": b"1", "session": 1, "seq": 0}),  # a repeat
    ]:
        command = build_command(op, args, 1000)
        data = command.encode()
        proposer.proposed(data, command)
        assert proposer.apply(index, data) == replica.apply(index, data)
    assert proposer.snapshot() == replica.snapshot()


def test_index_must_increase() -> None:
    store = KVStore()
    store.apply(5, encode_command("set", {"key": "a", "value": b"1"}, 0))  # gaps are fine
    with pytest.raises(ValueError, match="entry 5 applied after entry 5"):
        store.apply(5, encode_command("set", {"key": "a", "value": b"2"}, 0))
    assert store.get("a") == (b"1", 5)


@given(st.lists(st.binary(max_size=64), max_size=20))
def test_arbitrary_bytes_never_raise(payloads: list[bytes]) -> None:
    store = KVStore()
    store.apply(1, encode_command("set", {"key": "keep", "value": b"v"}, 0))
    all_malformed = True
    for index, payload in enumerate(payloads, start=2):
        result = store.apply(index, payload)
        try:
            decode_command(payload)
            all_malformed = False
        except CommandError:
            assert result["error"] == "bad_request"
        assert store.last_applied == index
    if all_malformed:
        assert store.get("keep") == (b"v", 1)
        assert store.keys() == ["keep"]


_OPS = st.one_of(
    st.tuples(st.just("set"), st.sampled_from("abc"), st.binary(max_size=3)),
    st.tuples(st.just("delete"), st.sampled_from("abc"), st.none()),
    st.tuples(st.just("incr"), st.sampled_from("abc"), st.integers(-5, 5)),
    st.tuples(
        st.just("cas"),
        st.sampled_from("abc"),
        st.tuples(st.none() | st.sampled_from([b"", b"1", b"x"]), st.sampled_from([b"1", b"x"])),
    ),
)


@given(st.lists(_OPS, max_size=40))
def test_matches_a_dict_model(ops: list[tuple[str, str, object]]) -> None:
    """Sessionless writes behave like a plain dict of (value, revision)."""
    feed = Feed()
    model: dict[str, tuple[bytes, int]] = {}
    for op, key, arg in ops:
        index = feed.index + 1
        current = model.get(key, (None, 0))[0]
        if op == "set":
            assert isinstance(arg, bytes)
            assert feed("set", key=key, value=arg) == {"revision": index}
            model[key] = (arg, index)
        elif op == "delete":
            assert feed("delete", key=key) == {"revision": index, "deleted": key in model}
            model.pop(key, None)
        elif op == "incr":
            assert isinstance(arg, int)
            result = feed("incr", key=key, by=arg)
            if current is not None and re.fullmatch(rb"-?[0-9]+", current) is None:
                assert result["error"] == "bad_request"
                continue
            total = int(current or b"0") + arg
            assert result == {"revision": index, "value": total}
            model[key] = (str(total).encode(), index)
        else:
            assert isinstance(arg, tuple)
            expected, new = arg
            ok = current == expected
            value = new if ok else current
            assert feed("cas", key=key, expected=expected, new=new) == {
                "revision": index,
                "ok": ok,
                "value": value,
            }
            if ok:
                model[key] = (new, index)
    for key in "abc":
        assert feed.store.get(key) == model.get(key, (None, 0))
    assert feed.store.keys() == sorted(model)


_KEY_OPS = st.lists(
    st.tuples(
        st.sampled_from(["set", "delete", "list", "snapshot"]),
        st.sampled_from(["", "a", "a/1", "a/2", "ab", "b", "b/1", "c"]),
    ),
    max_size=60,
)


@given(_KEY_OPS)
def test_listing_matches_a_sorted_model(ops: list[tuple[str, str]]) -> None:
    """Keys added since the last listing wait apart from the sorted ones (KVStore._ordered):
    listings by prefix, deletes and snapshots in any order still see exactly the keys."""
    feed = Feed()
    model: set[str] = set()
    for op, key in ops:
        if op == "set" and key:
            feed("set", key=key, value=b"")
            model.add(key)
        elif op == "delete" and key:
            feed("delete", key=key)
            model.discard(key)
        elif op == "list":
            assert feed.store.keys(key) == sorted(k for k in model if k.startswith(key))
        elif op == "snapshot":
            restored = KVStore()
            restored.restore(feed.store.snapshot())
            assert restored.keys() == sorted(model)
            feed = Feed(restored)
    assert feed.store.keys() == sorted(model)
    assert len(feed.store) == len(model)


def test_listing_after_many_keys_added() -> None:
    """Over _INSERT_AT_MOST keys added between two listings are merged by sorting; fewer,
    one by one: both ways give every key once, in order."""
    rng = random.Random(7)
    feed = Feed()
    model: set[str] = set()
    for step in range(3000):
        key = f"k/{rng.randrange(400)}"
        if rng.random() < 0.2:
            feed("delete", key=key)
            model.discard(key)
        else:
            feed("set", key=key, value=b"")
            model.add(key)
        # Listed every 300 steps (well over _INSERT_AT_MOST new keys between), and every
        # 3 steps for a while (a few).
        if step % 300 == 0 or (1500 <= step < 1800 and step % 3 == 0):
            assert feed.store.keys("k/") == sorted(model)
    assert feed.store.keys() == sorted(model)
