"""Linearizability checker for key-value histories (Wing & Gong, Lowe, Porcupine).

A history is linearizable iff its operations can be put in one order that (a) respects
real time -- if A returned before B was called, A comes first -- and (b) reproduces every
observed result when replayed against a sequential model of the store.

We search for such an order depth first: any operation not yet linearized whose call is no
later than the earliest pending return may go next; we apply it to the model, keep going if
its result matches, and backtrack otherwise.  Two search configurations that linearized the
same set of operations and left the model in the same state have identical futures, so we
memoize (linearized bitset, model state) and never expand one twice.  This turns a
factorial search into one bounded by the number of distinct configurations.

P-compositionality (Herlihy & Wing): a history over independent objects is linearizable iff
every per-object sub-history is, so we split by key and search each key separately, which
is exponentially cheaper than one joint search.

Model: each key is a register whose value is None exactly when the key is absent (so
``put(None)`` acts as a silent delete).  Values must be hashable (they are memo keys).

Real time: A precedes B iff ``A.ret < B.call``.  Equal ticks count as concurrent, because a
response and an invocation stamped with the same tick cannot be ordered by the recorder;
this only ever admits more orders, so it can never invent a violation.

Unknown outcomes (``ret is None``) are treated as Porcupine does: they return at +infinity
with any result, so nothing has to follow them and they may also never take effect.  The
search therefore succeeds once every *known* operation is linearized, and avoids branching
on unknown operations where it cannot matter:

* an unknown get has no effect and accepts anything, so it is dropped up front;
* an unknown operation that would leave the state unchanged is never tried;
* an unknown blind write (put/del) is not tried directly after another one, and no unknown
  operation is tried when only known puts may go next: either way its effect would be
  overwritten before anyone could observe it;
* among identical eligible unknown operations only one is tried (they are interchangeable:
  eligibility only grows as the search advances);
* the memo keeps, per (known bitset, state), the minimal sets of consumed unknown
  operations, because having consumed fewer of them is never worse.
"""

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

_ARITY = {"put": 1, "get": 0, "incr": 1, "cas": 2, "del": 0}
_BLIND = frozenset({"put", "del"})  # writes whose new state ignores the old one
_FAILED = object()  # result of an incr on a non-integer: equals no observed result
_MAX_LINES = 40

# Search configuration: (known bitset, unknown bitset, model state, last move was a blind
# unknown write).
_Config = tuple[int, int, object, bool]


@dataclass(frozen=True, slots=True)
class Operation:
    client: int
    key: str
    kind: str  # "put" | "get" | "incr" | "cas" | "del"
    args: tuple[object, ...]  # put: (value,); incr: (delta,); cas: (expected, new)
    call: int
    ret: int | None  # None: outcome unknown (timed out / never answered)
    result: object = None  # meaningful only when ret is not None


@dataclass(frozen=True, slots=True)
class CheckResult:
    ok: bool
    key: str | None = None
    explanation: str = ""
    gave_up: bool = False  # budget exhausted: not proven either way, never a pass


def _apply(kind: str, args: tuple[object, ...], state: object) -> tuple[object, object]:
    """Run one operation against a register; return (result, new state)."""
    if kind == "get":
        return state, state
    if kind == "put":
        return None, args[0]
    if kind == "incr":
        current = 0 if state is None else state
        delta = args[0]
        if type(current) is int and type(delta) is int:  # bools are not counters
            return current + delta, current + delta
        return _FAILED, state
    if kind == "cas":
        return (True, args[1]) if state == args[0] else (False, state)
    return state is not None, None  # del


def _remember(seen: dict[tuple[int, object, bool], list[int]], config: _Config) -> bool:
    """Record a configuration; return False if an equal-or-better one was already seen."""
    kmask, umask, state, after_blind = config
    minimal = seen.setdefault((kmask, state, after_blind), [])
    if any(used & ~umask == 0 for used in minimal):  # a subset of umask: dominates us
        return False
    minimal[:] = [used for used in minimal if umask & ~used != 0]  # drop the ones we dominate
    minimal.append(umask)
    return True


def _check_key(ops: Sequence[Operation], budget: int) -> bool | None:
    """Search one key's sub-history: True/False = (not) linearizable, None = gave up."""
    known = sorted((op for op in ops if op.ret is not None), key=lambda op: op.call)
    rets = [op.ret for op in known if op.ret is not None]
    unknown = sorted(
        (op for op in ops if op.ret is None and op.kind != "get"), key=lambda op: op.call
    )
    everything = (1 << len(known)) - 1

    def moves(config: _Config) -> Iterator[_Config]:
        kmask, umask, state, after_blind = config
        # Known ops sorted by call; everything below the lowest unset bit is linearized.
        # Scan while the call is no later than the earliest pending return seen so far: a
        # later op's call, hence also its return, exceeds that bound, so it cannot lower it.
        earliest: float = math.inf
        eligible: list[int] = []
        for i in range((~kmask & (kmask + 1)).bit_length() - 1, len(known)):
            if known[i].call > earliest:
                break
            if not kmask >> i & 1:
                eligible.append(i)
                earliest = min(earliest, rets[i])
        for i in eligible:
            op = known[i]
            result, new_state = _apply(op.kind, op.args, state)
            if result == op.result:
                yield kmask | 1 << i, umask, new_state, False
        # Unknown ops only matter right before a known op that observes the state; a known
        # put overwrites whatever they did, so skip them when only puts are eligible.
        if all(known[i].kind == "put" for i in eligible):
            return
        tried: set[tuple[str, tuple[object, ...]]] = set()
        for j, op in enumerate(unknown):
            if op.call > earliest:
                break
            blind = op.kind in _BLIND
            if umask >> j & 1 or (after_blind and blind) or (op.kind, op.args) in tried:
                continue
            tried.add((op.kind, op.args))
            _, new_state = _apply(op.kind, op.args, state)
            if new_state != state:
                yield kmask, umask | 1 << j, new_state, blind

    if not known:
        return True
    root: _Config = (0, 0, None, False)
    seen: dict[tuple[int, object, bool], list[int]] = {}
    _remember(seen, root)
    stack = [moves(root)]
    steps = 0
    while stack:
        config = next(stack[-1], None)
        if config is None:
            stack.pop()  # every continuation of this configuration failed: backtrack
            continue
        steps += 1
        if steps > budget:
            return None
        if config[0] == everything:
            return True  # leftover unknown ops simply never took effect
        if _remember(seen, config):
            stack.append(moves(config))
    return False


def _validate(op: Operation) -> None:
    if op.kind not in _ARITY:
        raise ValueError(f"unknown operation kind {op.kind!r}")
    if len(op.args) != _ARITY[op.kind]:
        raise ValueError(f"{op.kind} takes {_ARITY[op.kind]} args, got {op.args!r}")
    if op.ret is not None and op.ret < op.call:
        raise ValueError(f"operation returns before it is called: {op!r}")


def _explain(key: str, ops: Sequence[Operation], headline: str) -> str:
    ordered = sorted(ops, key=lambda op: (op.call, op.client))
    lines = [f"key {key!r}: {headline}; {len(ops)} ops by call time:"]
    for op in ordered[:_MAX_LINES]:
        args = ", ".join(map(repr, op.args))
        ret, outcome = ("?", "unknown") if op.ret is None else (str(op.ret), repr(op.result))
        lines.append(f"  c{op.client} {op.kind}({args}) [{op.call}, {ret}] -> {outcome}")
    if len(ordered) > _MAX_LINES:
        lines.append(f"  ... {len(ordered) - _MAX_LINES} more")
    return "\n".join(lines)


def check_history(ops: Sequence[Operation], *, max_steps_per_key: int = 2_000_000) -> CheckResult:
    """Check a key-value history for linearizability, one key at a time.

    A definite violation on any key wins over a key whose search gave up; a gave-up result
    (``ok=False, gave_up=True``) means "not proven" and must never be read as a pass.
    """
    by_key: dict[str, list[Operation]] = {}
    for op in ops:
        _validate(op)
        by_key.setdefault(op.key, []).append(op)
    undecided: CheckResult | None = None
    for key in sorted(by_key):
        verdict = _check_key(by_key[key], max_steps_per_key)
        if verdict is False:
            return CheckResult(False, key, _explain(key, by_key[key], "not linearizable"))
        if verdict is None and undecided is None:
            headline = f"gave up after {max_steps_per_key} search steps"
            undecided = CheckResult(False, key, _explain(key, by_key[key], headline), True)
    return undecided or CheckResult(ok=True)
