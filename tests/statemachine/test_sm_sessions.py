"""Exactly-once sessions (Raft thesis §6.3): dedupe, ack, caps, and expiry by log time."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quicraft.statemachine import (
    DEFAULT_SESSION_TIMEOUT_MS,
    KVStore,
    SessionTable,
    encode_command,
)


class Log:
    """Applies commands at consecutive indexes; `ts` is the leader's clock for each."""

    def __init__(self, **settings: int) -> None:
        self.store = KVStore(**settings)
        self.index = 0

    def __call__(self, op: str, ts: int = 0, **args: object) -> dict[str, object]:
        return self.send(op, args, ts)

    def send(self, op: str, args: dict[str, object], ts: int = 0) -> dict[str, object]:
        self.index += 1
        return self.store.apply(self.index, encode_command(op, args, ts))

    def register(self, ts: int = 0) -> int:
        session = self("register", ts)["session"]
        assert isinstance(session, int)
        return session


def test_session_id_is_the_register_index() -> None:
    log = Log()
    log("set", key="a", value=b"1")
    assert log("register") == {"session": 2}
    assert log("register") == {"session": 3}
    assert 2 in log.store.sessions and 3 in log.store.sessions


def test_duplicate_returns_first_result_even_after_other_writes() -> None:
    log = Log()
    s = log.register()
    first = log("incr", key="n", by=5, session=s, seq=0)
    assert first == {"revision": 2, "value": 5}
    log("incr", key="n", by=100)  # someone else's write
    log("set", key="other", value=b"x", session=s, seq=1)
    again = log("incr", key="n", by=5, session=s, seq=0)
    assert again == first  # the first result, not a recomputation
    assert log.store.get("n") == (b"105", 3)  # applied once
    # Every op is deduplicated, including refusals: the first answer stands.
    log("set", key="t", value=b"text")
    refused = log("incr", key="t", session=s, seq=2)
    assert refused["error"] == "bad_request"
    log("set", key="t", value=b"7")
    assert log("incr", key="t", session=s, seq=2) == refused
    assert log.store.get("t") == (b"7", 8)


def test_duplicate_of_each_op_changes_nothing() -> None:
    log = Log()
    s = log.register()
    writes: list[tuple[str, dict[str, object]]] = [
        ("set", {"key": "a", "value": b"1"}),
        ("cas", {"key": "a", "expected": b"1", "new": b"2"}),
        ("incr", {"key": "n"}),
        ("delete", {"key": "a"}),
    ]
    firsts = [
        log.send(op, {**args, "session": s, "seq": seq}) for seq, (op, args) in enumerate(writes)
    ]
    state = (log.store.get("a"), log.store.get("n"), log.store.keys())
    for seq, (op, args) in enumerate(writes):
        assert log.send(op, {**args, "session": s, "seq": seq}) == firsts[seq]
    assert (log.store.get("a"), log.store.get("n"), log.store.keys()) == state


def test_sessions_are_independent() -> None:
    log = Log()
    one, two = log.register(), log.register()
    assert log("incr", key="n", session=one, seq=0)["value"] == 1
    assert log("incr", key="n", session=two, seq=0)["value"] == 2


def test_writes_without_session_are_not_deduplicated() -> None:
    log = Log()
    log("incr", key="n")
    assert log("incr", key="n") == {"revision": 2, "value": 2}


def test_returned_results_cannot_alter_the_history() -> None:
    log = Log()
    s = log.register()
    first = log("set", key="a", value=b"1", session=s, seq=0)
    first["revision"] = 999
    assert log("set", key="a", value=b"1", session=s, seq=0) == {"revision": 2}


def test_unknown_session_is_refused() -> None:
    log = Log()
    result = log("set", key="a", value=b"1", session=42, seq=0)
    assert result["error"] == "session_expired"
    assert "42" in str(result["message"])
    assert log.store.get("a") == (None, 0)
    # A session id must be a register entry, not any index.
    log("set", key="b", value=b"1")
    assert log("set", key="a", value=b"1", session=2, seq=0)["error"] == "session_expired"


def test_idle_session_expires_on_any_later_command() -> None:
    log = Log(session_timeout_ms=1000)
    s = log.register(ts=10_000)
    log("set", ts=10_500, key="a", value=b"1", session=s, seq=0)  # active at 10 500
    log("set", ts=11_500, key="x", value=b"1")  # exactly the timeout: still alive
    assert s in log.store.sessions
    log("set", ts=11_501, key="x", value=b"2")  # a sessionless write moves the clock
    assert s not in log.store.sessions
    result = log("set", ts=11_502, key="a", value=b"2", session=s, seq=1)
    assert result["error"] == "session_expired"
    assert log.store.get("a") == (b"1", 2)
    # Its stored results went with it: even a duplicate is refused now.
    assert log("set", ts=11_502, key="a", value=b"1", session=s, seq=0)["error"] == (
        "session_expired"
    )


def test_own_late_write_finds_the_session_expired() -> None:
    log = Log(session_timeout_ms=1000)
    s = log.register(ts=0)
    assert log("incr", ts=1001, key="n", session=s, seq=0)["error"] == "session_expired"
    assert log.store.get("n") == (None, 0)


def test_activity_keeps_a_session_alive() -> None:
    log = Log(session_timeout_ms=1000)
    s = log.register(ts=0)
    for seq, ts in enumerate(range(900, 9000, 900)):
        assert "error" not in log("incr", ts=ts, key="n", session=s, seq=seq)
    # A repeated write also counts as activity (the client is alive).
    log("incr", ts=8900, key="n", session=s, seq=8)
    assert s in log.store.sessions


def test_time_never_goes_backwards() -> None:
    log = Log(session_timeout_ms=1000)
    s = log.register(ts=5000)
    log("set", ts=7000, key="x", value=b"")  # expires s
    assert log.store.sessions.now_ms == 7000
    # A command stamped earlier (a previous leader's slower clock) does not rewind time.
    log("set", ts=100, key="y", value=b"")
    assert log.store.sessions.now_ms == 7000
    assert log("set", ts=100, key="a", value=b"", session=s, seq=0)["error"] == "session_expired"
    t = log.register(ts=100)  # registered "at" 7000
    log("set", ts=7900, key="z", value=b"")
    assert t in log.store.sessions


def test_ack_drops_older_results_and_refuses_their_replay() -> None:
    log = Log()
    s = log.register()
    for seq in range(5):
        log("incr", key="n", session=s, seq=seq)
    session = log.store.sessions.get(s)
    assert session is not None and sorted(session.results) == [0, 1, 2, 3, 4]
    log("incr", key="n", session=s, seq=5, ack=3)
    assert sorted(session.results) == [3, 4, 5]
    assert session.floor == 3
    # Acknowledged: the result is gone and the write is not applied a second time.
    replay = log("incr", key="n", session=s, seq=1)
    assert replay["error"] == "bad_request" and "discarded" in str(replay["message"])
    assert log.store.get("n")[0] == b"6"
    # Still-awaited results are kept and served.
    assert log("incr", key="n", session=s, seq=4) == {"revision": 6, "value": 5}
    # A lower ack later never lowers the floor.
    log("incr", key="n", session=s, seq=6, ack=1)
    assert session.floor == 3


def test_a_seq_below_the_floor_never_applied_is_refused_without_saying_it_was() -> None:
    """Seq 1 comes late (sent to a leader that lost it, say), after seq 2 acknowledged 2: it
    was never applied, and is not now; the answer does not claim it had been."""
    log = Log()
    s = log.register()
    log("incr", key="n", session=s, seq=2, ack=2)
    late = log("incr", key="n", session=s, seq=1)
    assert late["error"] == "bad_request"
    assert "may have been applied" in str(late["message"])
    assert log.store.get("n")[0] == b"1"


def test_results_per_session_are_capped() -> None:
    log = Log(max_results_per_session=3)
    s = log.register()
    for seq in range(5):
        log("incr", key="n", session=s, seq=seq)
    session = log.store.sessions.get(s)
    assert session is not None and sorted(session.results) == [2, 3, 4]
    assert log("incr", key="n", session=s, seq=0)["error"] == "bad_request"
    assert log("incr", key="n", session=s, seq=4)["value"] == 5
    assert log.store.get("n")[0] == b"5"


def test_sessions_are_capped_least_recently_active_first() -> None:
    log = Log(max_sessions=2)
    a, b = log.register(), log.register()
    log("set", key="k", value=b"", session=a, seq=0)  # a is now more recent than b
    c = log.register()
    assert a in log.store.sessions and c in log.store.sessions
    assert b not in log.store.sessions


def test_default_timeout_is_ten_minutes() -> None:
    assert DEFAULT_SESSION_TIMEOUT_MS == 600_000
    log = Log()
    s = log.register(ts=0)
    log("set", ts=600_000, key="x", value=b"")
    assert s in log.store.sessions
    log("set", ts=600_001, key="x", value=b"")
    assert s not in log.store.sessions


@pytest.mark.parametrize("settings", [(0, 1, 1), (1, 0, 1), (1, 1, 0), (-5, 1, 1)])
def test_table_settings_must_be_positive(settings: tuple[int, int, int]) -> None:
    with pytest.raises(ValueError, match="positive"):
        SessionTable(*settings)


def _expiry_log() -> list[bytes]:
    """A log whose results depend on expiry: sessions come and go by the leader's ts."""
    log: list[bytes] = []
    for round_ in range(6):
        base = round_ * 700
        log.append(encode_command("register", {}, base))
        session = len(log)
        for seq in range(3):
            args = {"key": f"k{seq}", "by": round_, "session": session, "seq": seq}
            log.append(encode_command("incr", args, base + 400 * seq))
            # A stale retry of an earlier round's session.
            args = {"key": "old", "value": b"", "session": max(1, session - 4), "seq": seq}
            log.append(encode_command("set", args, base + 400 * seq))
    return log


def test_expiry_is_deterministic() -> None:
    """Two replicas fed the same log give the same results and the same snapshot bytes."""
    entries = _expiry_log()
    replicas = [KVStore(session_timeout_ms=1000) for _ in range(2)]
    results = [[r.apply(i, e) for i, e in enumerate(entries, start=1)] for r in replicas]
    assert results[0] == results[1]
    assert replicas[0].snapshot() == replicas[1].snapshot()
    # And expiry did happen in this log: some writes were refused, some applied.
    codes = {str(r.get("error")) for r in results[0]}
    assert "session_expired" in codes and "None" in codes


@given(
    st.lists(
        st.tuples(st.integers(0, 40), st.none() | st.integers(0, 45)),
        max_size=60,
    )
)
def test_ack_and_cap_match_the_simplest_model(writes: list[tuple[int, int | None]]) -> None:
    """Whatever order seqs and acks come in (retries come late, acks jump), the results kept
    and the floor are those of the plainest reading of the rules: drop every result below a
    raised ack; keep at most max_results, dropping the lowest and raising the floor past it."""
    log = Log(max_results_per_session=8)
    s = log.register()
    floor, kept = 0, set[int]()
    for seq, ack in writes:
        if ack is not None and ack > seq:
            continue  # a command with ack above seq is refused before it reaches the table
        args: dict[str, object] = {"key": "n", "session": s, "seq": seq}
        if ack is not None:
            args["ack"] = ack
        log.send("incr", args)
        if ack is not None and ack > floor:
            floor = ack
            kept = {k for k in kept if k >= ack}
        if seq >= floor and seq not in kept:
            kept.add(seq)
            while len(kept) > 8:
                lowest = min(kept)
                kept.remove(lowest)
                floor = max(floor, lowest + 1)
        session = log.store.sessions.get(s)
        assert session is not None
        assert (session.floor, sorted(session.results)) == (floor, sorted(kept))
