"""Tests for the key-value linearizability checker."""

import itertools
import random
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quicraft.sim.linearizability import CheckResult, Operation, check_history


def op(
    client: int,
    kind: str,
    args: tuple[object, ...],
    call: int,
    ret: int | None,
    result: object = None,
    key: str = "k",
) -> Operation:
    return Operation(client, key, kind, args, call, ret, result)


def assert_ok(ops: Sequence[Operation]) -> None:
    res = check_history(ops)
    assert res == CheckResult(ok=True), res.explanation


def assert_violation(ops: Sequence[Operation], key: str = "k") -> CheckResult:
    res = check_history(ops)
    assert not res.ok
    assert not res.gave_up
    assert res.key == key
    return res


# --- reference model and brute-force checker (independent of the module) ---------------


def ref_apply(store: dict[str, object], o: Operation) -> object:
    """Sequential reference semantics; generated values are never None."""
    cur = store.get(o.key)
    if o.kind == "put":
        store[o.key] = o.args[0]
        return None
    if o.kind == "get":
        return cur
    if o.kind == "incr":
        assert isinstance(o.args[0], int)
        assert cur is None or isinstance(cur, int)
        new = (cur or 0) + o.args[0]
        store[o.key] = new
        return new
    if o.kind == "cas":
        if cur == o.args[0]:
            store[o.key] = o.args[1]
            return True
        return False
    assert o.kind == "del"
    return store.pop(o.key, None) is not None


def brute_force(ops: Sequence[Operation]) -> bool:
    """Try every order of the known ops plus every subset of the unknown ones.

    All keys are permuted jointly, so agreement also checks the per-key decomposition.
    """
    known = [o for o in ops if o.ret is not None]
    unknown = [o for o in ops if o.ret is None]
    for r in range(len(unknown) + 1):
        for chosen in itertools.combinations(unknown, r):
            for order in itertools.permutations(known + list(chosen)):
                if any(
                    later.ret is not None and later.ret < earlier.call
                    for i, earlier in enumerate(order)
                    for later in order[i + 1 :]
                ):
                    continue
                store: dict[str, object] = {}
                if all(ref_apply(store, o) == o.result or o.ret is None for o in order):
                    return True
    return False


# --- hand-written cases -------------------------------------------------------------------


def test_empty_and_unknown_only_histories_pass() -> None:
    assert_ok([])
    assert_ok([op(1, "put", (1,), 0, None), op(2, "incr", (1,), 0, None)])


def test_sequential_correct_history_passes() -> None:
    assert_ok(
        [
            op(1, "get", (), 0, 1, None),
            op(1, "put", (1,), 2, 3),
            op(2, "get", (), 4, 5, 1),
            op(2, "incr", (4,), 6, 7, 5),
            op(1, "cas", (5, 7), 8, 9, True),
            op(1, "cas", (5, 8), 10, 11, False),
            op(2, "del", (), 12, 13, True),
            op(2, "del", (), 14, 15, False),
            op(1, "get", (), 16, 17, None),
        ]
    )


def test_stale_read_after_completed_put_fails() -> None:
    res = assert_violation(
        [op(1, "put", (1,), 0, 1), op(1, "put", (2,), 2, 3), op(2, "get", (), 4, 5, 1)]
    )
    assert "c2 get() [4, 5] -> 1" in res.explanation


@pytest.mark.parametrize("seen", [1, 2])
def test_concurrent_put_get_either_value_passes(seen: int) -> None:
    assert_ok([op(1, "put", (1,), 0, 1), op(1, "put", (2,), 2, 10), op(2, "get", (), 3, 4, seen)])


def test_concurrent_put_get_other_value_fails() -> None:
    assert_violation(
        [op(1, "put", (1,), 0, 1), op(1, "put", (2,), 2, 10), op(2, "get", (), 3, 4, 3)]
    )


def test_lost_write_fails() -> None:
    # A put that completed is gone for a later read, and stays gone for the next one.
    assert_violation([op(1, "put", (1,), 0, 1), op(2, "get", (), 2, 3, None)])
    assert_violation(
        [op(1, "put", (1,), 0, 1), op(1, "put", (2,), 2, 3), op(2, "get", (), 4, 5, None)]
    )


def test_write_applied_twice_fails() -> None:
    # One incr answered 1, yet a later read sees it counted twice (a retried command that
    # was not deduplicated); and one cas cannot be both the winner and the loser.
    assert_violation([op(1, "incr", (1,), 0, 1, 1), op(2, "get", (), 2, 3, 2)])
    assert_violation(
        [op(0, "put", (0,), 0, 1), op(1, "cas", (0, 5), 2, 3, True), op(2, "get", (), 4, 5, 0)]
    )


def test_incr_results_out_of_real_time_order_fail() -> None:
    # The incr that returned first cannot have seen the later one's effect.
    assert_violation([op(1, "incr", (1,), 0, 1, 2), op(2, "incr", (1,), 2, 3, 1)])
    assert_ok([op(1, "incr", (1,), 0, 3, 2), op(2, "incr", (1,), 1, 2, 1)])


def test_read_of_value_nobody_wrote_fails() -> None:
    assert_violation([op(1, "put", (1,), 0, 10), op(2, "get", (), 1, 2, 99)])


def test_equal_timestamps_are_concurrent() -> None:
    # The put's response and the get's call share tick 5: the get may go first.
    assert_ok([op(1, "put", (1,), 0, 5), op(2, "get", (), 5, 6, None)])
    assert_violation([op(1, "put", (1,), 0, 4), op(2, "get", (), 5, 6, None)])


def test_cas_histories() -> None:
    assert_ok(
        [
            op(1, "cas", (None, 5), 0, 1, True),  # None = "must be absent"
            op(1, "cas", (5, 6), 2, 3, True),
            op(2, "get", (), 4, 5, 6),
        ]
    )
    assert_violation([op(1, "put", (3,), 0, 1), op(2, "cas", (1, 2), 2, 3, True)])
    assert_violation([op(1, "put", (1,), 0, 1), op(2, "cas", (1, 2), 2, 3, False)])
    # Two concurrent cas(0 -> 1): only one can win ...
    both_win = [
        op(0, "put", (0,), 0, 1),
        op(1, "cas", (0, 1), 2, 5, True),
        op(2, "cas", (0, 1), 3, 6, True),
    ]
    assert_violation(both_win)
    # ... but either may.
    assert_ok([*both_win[:2], op(2, "cas", (0, 1), 3, 6, False)])
    assert_ok([both_win[0], op(1, "cas", (0, 1), 2, 5, False), both_win[2]])


def test_incr_histories() -> None:
    assert_ok([op(1, "incr", (3,), 0, 1, 3), op(1, "incr", (-1,), 2, 3, 2)])
    for first, second in [(1, 2), (2, 1)]:
        assert_ok([op(1, "incr", (1,), 0, 5, first), op(2, "incr", (1,), 1, 6, second)])
    assert_violation([op(1, "incr", (1,), 0, 5, 1), op(2, "incr", (1,), 1, 6, 1)])
    assert_violation([op(1, "incr", (1,), 0, 1, 1), op(2, "get", (), 2, 3, 0)])
    # A counter cannot be incremented once it holds a string.
    assert_violation([op(1, "put", ("x",), 0, 1), op(2, "incr", (1,), 2, 3, 1)])


def test_del_histories() -> None:
    assert_ok([op(1, "put", (1,), 0, 1), op(1, "del", (), 2, 3, True), op(2, "get", (), 4, 5)])
    assert_violation([op(1, "del", (), 0, 1, True)])
    assert_violation([op(1, "put", (1,), 0, 1), op(2, "del", (), 2, 3, False)])


def test_unknown_put_whose_value_is_read_passes() -> None:
    assert_ok([op(1, "put", (1,), 0, None), op(2, "get", (), 5, 6, 1)])


def test_unknown_put_never_read_passes() -> None:
    assert_ok([op(1, "put", (1,), 0, None), op(2, "get", (), 5, 6, None)])
    assert_ok([op(1, "put", (1,), 0, None), op(2, "put", (2,), 1, 2), op(2, "get", (), 5, 6, 2)])


def test_unknown_put_cannot_take_effect_before_its_call() -> None:
    assert_violation([op(2, "get", (), 0, 1, 1), op(1, "put", (1,), 2, None)])


def test_unknown_incrs_take_effect_at_most_once_each() -> None:
    unknowns = [op(1, "incr", (1,), 0, None) for _ in range(3)]
    assert_ok([*unknowns, op(2, "get", (), 10, 11, 3)])
    assert_violation([*unknowns, op(2, "get", (), 10, 11, 4)])
    # An increment seen once stays seen: later reads cannot go backwards.
    assert_violation([*unknowns, op(2, "get", (), 10, 11, 2), op(2, "get", (), 12, 13, 1)])


@pytest.mark.parametrize("reverse", [False, True])
def test_unknown_op_used_on_a_dead_end_stays_available(reverse: bool) -> None:
    # Only put(2) then incr(1) explains the read; a search that tries incr(1) first and
    # then remembers "state 2 with both unknowns consumed" must not prune the good branch.
    unknowns = [op(1, "incr", (1,), 0, None), op(2, "put", (2,), 0, None)]
    if reverse:
        unknowns.reverse()
    assert_ok([*unknowns, op(3, "get", (), 1, 5, 3)])
    assert_violation([*unknowns, op(3, "get", (), 1, 5, 4)])


def test_distinct_unknown_writes_are_not_conflated() -> None:
    unknowns = [op(1, "put", (1,), 0, None), op(2, "put", (2,), 0, None)]
    assert_ok([*unknowns, op(3, "get", (), 1, 5, 2)])
    assert_ok([*unknowns, op(3, "get", (), 1, 5, 1), op(3, "get", (), 6, 7, 2)])
    assert_violation(
        [*unknowns, op(3, "get", (), 1, 5, 2), op(3, "get", (), 6, 7, 1), op(3, "get", (), 8, 9, 2)]
    )


def test_two_keys_reports_the_bad_one() -> None:
    good = [op(1, "put", (1,), 0, 1, key="a"), op(2, "get", (), 2, 3, 1, key="a")]
    bad = [op(1, "put", (1,), 0, 1, key="b"), op(2, "get", (), 2, 3, 7, key="b")]
    res = assert_violation(good + bad, key="b")
    assert "'b'" in res.explanation and "'a'" not in res.explanation


def test_explanation_is_capped() -> None:
    ops = [op(i % 3, "put", (i,), 2 * i, 2 * i + 1) for i in range(100)]
    res = assert_violation([*ops, op(9, "get", (), 1000, 1001, -1)])
    lines = res.explanation.splitlines()
    assert 3 <= len(lines) <= 42
    assert lines[-1].strip() == "... 61 more"


def test_exhausted_budget_gives_up_and_is_not_a_pass() -> None:
    ops = [op(c, "put", (c,), 0, 10) for c in range(6)] + [op(9, "get", (), 11, 12, 5)]
    res = check_history(ops, max_steps_per_key=3)
    assert (res.ok, res.gave_up, res.key) == (False, True, "k")
    assert "gave up after 3 search steps" in res.explanation
    assert check_history(ops).ok


def test_violation_wins_over_gave_up() -> None:
    hard = [op(c, "put", (c,), 0, 10, key="a") for c in range(6)]
    hard.append(op(9, "get", (), 11, 12, 5, key="a"))
    bad = [op(1, "get", (), 0, 1, 3, key="b")]
    res = check_history(hard + bad, max_steps_per_key=3)
    assert (res.ok, res.gave_up, res.key) == (False, False, "b")


@pytest.mark.parametrize(
    "bad",
    [
        op(1, "frob", (), 0, 1),
        op(1, "put", (), 0, 1),
        op(1, "cas", (1,), 0, 1),
        op(1, "get", (), 5, 4),
    ],
)
def test_malformed_operations_are_rejected(bad: Operation) -> None:
    with pytest.raises(ValueError):
        check_history([bad])


# --- performance sanity (no timing assertion) --------------------------------------------


def concurrent_history(seed: int) -> list[Operation]:
    """30 known + 10 unknown ops on one key from 3 clients, all overlapping heavily."""
    rng = random.Random(seed)
    store: dict[str, object] = {}
    ops = []
    unknown_slots = set(rng.sample(range(40), 10))
    for i in range(40):
        kind = rng.choice(["put", "get", "incr", "cas", "get"])
        args: tuple[object, ...] = {
            "put": (rng.randint(0, 5),),
            "get": (),
            "incr": (rng.randint(1, 3),),
            "cas": (rng.randint(0, 5), rng.randint(0, 5)),
        }[kind]
        # Linearization point 10 * i; intervals up to 80 wide overlap several neighbours.
        call, ret = 10 * i - rng.randint(0, 40), 10 * i + rng.randint(0, 40)
        probe = Operation(i % 3, "k", kind, args, 0, 0)
        if i not in unknown_slots:
            ops.append(op(i % 3, kind, args, call, ret, ref_apply(store, probe)))
            continue
        if rng.random() < 0.5:  # an unknown op may have taken effect, or never did
            ref_apply(store, probe)
        ops.append(op(i % 3, kind, args, call, None))
    return ops


@pytest.mark.parametrize("seed", range(5))
def test_forty_op_history_completes_within_default_budget(seed: int) -> None:
    ops = concurrent_history(seed)
    assert sum(o.ret is None for o in ops) == 10
    assert_ok(ops)
    # A read of a never-written value at the end forces an exhaustive search.
    assert_violation([*ops, op(0, "get", (), 1000, 1001, "never")])


# --- property tests -----------------------------------------------------------------------

KINDS = ["put", "get", "incr", "cas", "del"]
values = st.integers(0, 3)


@st.composite
def kind_and_args(draw: st.DrawFn) -> tuple[str, tuple[object, ...]]:
    kind = draw(st.sampled_from(KINDS))
    if kind == "put":
        return kind, (draw(values),)
    if kind == "incr":
        return kind, (draw(st.integers(-1, 2)),)
    if kind == "cas":
        return kind, (draw(st.none() | values), draw(values))
    return kind, ()


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_histories_from_sequential_runs_pass(data: st.DataObject) -> None:
    """Each op's interval contains the point where it ran, so the history is linearizable."""
    store: dict[str, object] = {}
    ops = []
    for i in range(data.draw(st.integers(0, 25))):
        key = data.draw(st.sampled_from("ab"))
        kind, args = data.draw(kind_and_args())
        outcome = data.draw(st.sampled_from(["known", "known", "known", "applied", "lost"]))
        point = 5 * i
        call = point - data.draw(st.integers(0, 15))
        probe = Operation(0, key, kind, args, 0, 0)
        result = None if outcome == "lost" else ref_apply(store, probe)
        ret = point + data.draw(st.integers(0, 15)) if outcome == "known" else None
        ops.append(op(data.draw(st.integers(0, 2)), kind, args, call, ret, result, key))
    res = check_history(data.draw(st.permutations(ops)))
    assert res == CheckResult(ok=True), res.explanation


RESULTS: dict[str, st.SearchStrategy[object]] = {
    "put": st.none(),
    "get": st.none() | values,
    "incr": st.integers(-1, 4),
    "cas": st.booleans(),
    "del": st.booleans(),
}


def random_small_op(draw: st.DrawFn) -> Operation:
    kind, args = draw(kind_and_args())
    call = draw(st.integers(0, 8))
    ret = None if draw(st.integers(0, 3)) == 0 else call + draw(st.integers(0, 6))
    client, key = draw(st.integers(0, 2)), draw(st.sampled_from("aab"))
    return op(client, kind, args, call, ret, draw(RESULTS[kind]), key)


@st.composite
def small_histories(draw: st.DrawFn) -> list[Operation]:
    return [random_small_op(draw) for _ in range(draw(st.integers(1, 6)))]


@settings(max_examples=500, deadline=None)
@given(small_histories())
def test_agrees_with_brute_force(ops: list[Operation]) -> None:
    res = check_history(ops)
    assert not res.gave_up
    assert res.ok == brute_force(ops), res.explanation


def random_small_history(rng: random.Random) -> list[Operation]:
    """Same shape as small_histories(), driven by a seeded RNG."""
    ops = []
    for _ in range(rng.randint(1, 6)):
        kind = rng.choice(KINDS)
        args: tuple[object, ...] = {
            "put": (rng.randint(0, 3),),
            "get": (),
            "incr": (rng.randint(-1, 2),),
            "cas": (rng.choice([None, 0, 1, 2, 3]), rng.randint(0, 3)),
            "del": (),
        }[kind]
        result: object = {
            "put": None,
            "get": rng.choice([None, 0, 1, 2, 3]),
            "incr": rng.randint(-1, 4),
            "cas": rng.random() < 0.5,
            "del": rng.random() < 0.5,
        }[kind]
        call = rng.randint(0, 8)
        ret = None if rng.random() < 0.25 else call + rng.randint(0, 6)
        ops.append(op(rng.randint(0, 2), kind, args, call, ret, result, rng.choice("aab")))
    return ops


def test_brute_force_sweep_sees_both_verdicts() -> None:
    """Seeded sweep: agreement holds, and the generator yields passes and failures alike."""
    rng = random.Random(1234)
    verdicts = []
    for _ in range(3000):
        ops = random_small_history(rng)
        res = check_history(ops)
        assert not res.gave_up
        assert res.ok == brute_force(ops), res.explanation
        verdicts.append(res.ok)
    assert 400 < sum(verdicts) < 2600
