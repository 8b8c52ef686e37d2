"""Property tests of the majority arithmetic in quicraft.core.quorum, each checked against a
brute-force definition, and of the commit rule a leader builds on it (§5.3, §5.4.2)."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from quicraft.core import (
    ConfChange,
    ConfChangeKind,
    Config,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    PersistentState,
    RaftCore,
    Role,
    Snapshot,
)
from quicraft.core.quorum import VoteResult, has_quorum, majority, quorum_index, vote_result

NAMES = [f"n{i}" for i in range(9)]
voter_sets = st.sets(st.sampled_from(NAMES), min_size=1, max_size=7)
acks = st.dictionaries(st.sampled_from(NAMES), st.integers(0, 20))
votes = st.dictionaries(st.sampled_from(NAMES), st.booleans())


def brute_quorum_index(voters: set[str], acked: dict[str, int]) -> int:
    """The largest v such that a majority of voters have acked at least v."""
    candidates = {0} | set(acked.values())
    need = len(voters) // 2 + 1
    return max(v for v in candidates if sum(acked.get(x, 0) >= v for x in voters) >= need)


@given(st.integers(1, 1000))
def test_majority_is_the_smallest_strict_majority(n: int) -> None:
    assert 2 * majority(n) > n
    assert 2 * (majority(n) - 1) <= n


@given(voter_sets, st.sets(st.sampled_from(NAMES)), st.sets(st.sampled_from(NAMES)))
def test_any_two_quorums_intersect(voters: set[str], q1: set[str], q2: set[str]) -> None:
    """The property every proof in §5.4 rests on."""
    if has_quorum(voters, q1) and has_quorum(voters, q2):
        assert q1 & q2 & voters


@given(voter_sets, acks)
def test_quorum_index_matches_brute_force(voters: set[str], acked: dict[str, int]) -> None:
    assert quorum_index(voters, acked) == brute_quorum_index(voters, acked)


def test_quorum_index_of_no_voters_is_zero() -> None:
    assert quorum_index(set(), {"a": 5}) == 0


@given(voter_sets, acks, st.sampled_from(NAMES), st.integers(0, 20))
def test_quorum_index_is_monotonic(
    voters: set[str], acked: dict[str, int], node: str, more: int
) -> None:
    """Acknowledging more never lowers the quorum index (a commit index never goes back)."""
    raised = {**acked, node: acked.get(node, 0) + more}
    assert quorum_index(voters, raised) >= quorum_index(voters, acked)


@given(voter_sets, acks, acks, votes)
def test_learners_never_matter(
    voters: set[str], acked: dict[str, int], noise: dict[str, int], noise_votes: dict[str, bool]
) -> None:
    """Only voters count: acks and votes from anyone else change nothing."""
    learner_acks = {**acked, **{k: v for k, v in noise.items() if k not in voters}}
    assert quorum_index(voters, learner_acks) == quorum_index(voters, acked)
    learner_votes = {k: v for k, v in noise_votes.items() if k not in voters}
    assert vote_result(voters, learner_votes) is vote_result(voters, {})
    assert not has_quorum(voters, set(learner_votes))


@given(voter_sets, votes)
def test_vote_result_matches_brute_force(voters: set[str], cast: dict[str, bool]) -> None:
    need = len(voters) // 2 + 1
    granted = sum(cast.get(v) is True for v in voters)
    undecided = sum(v not in cast for v in voters)
    if granted >= need:
        expected = VoteResult.WON
    elif granted + undecided < need:
        expected = VoteResult.LOST
    else:
        expected = VoteResult.PENDING
    assert vote_result(voters, cast) is expected


@given(voter_sets, st.sets(st.sampled_from(NAMES)))
def test_has_quorum_matches_brute_force(voters: set[str], active: set[str]) -> None:
    assert has_quorum(voters, active) is (2 * len(voters & active) > len(voters))


# -- the commit rule on a real leader ----------------------------------------------------------

VOTERS = ["a", "b", "c", "d", "e"]
LEARNERS = ["l1", "l2"]


def leader_with_log(old_terms: list[int]) -> RaftCore:
    """A leader of a 5-voter, 2-learner cluster whose log holds, after the membership entries,
    entries of `old_terms` (uncommitted), then its own no-op; its own log is durable."""
    changes = [ConfChange(ConfChangeKind.ADD_VOTER, v) for v in VOTERS]
    changes += [ConfChange(ConfChangeKind.ADD_LEARNER, n) for n in LEARNERS]
    entries = [Entry(1, i, EntryType.CONF_CHANGE, c.encode()) for i, c in enumerate(changes, 1)]
    for term in old_terms:
        entries.append(Entry(term, len(entries) + 1, EntryType.NORMAL, b"old"))
    term = max(old_terms, default=1)
    state = PersistentState(HardState(term, None, len(changes)), Snapshot(), entries)
    core = RaftCore(Config("a", pre_vote=False), random.Random(0), state)
    core.campaign()
    for peer in "bc":
        core.step(Message(MessageType.VOTE_RESP, "a", peer, core.term))
    assert core.role is Role.LEADER
    while core.has_ready():
        core.advance(core.ready())
    return core


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.integers(1, 3), max_size=6).map(sorted),
    st.lists(st.tuples(st.sampled_from(VOTERS[1:] + LEARNERS), st.integers(0, 20)), max_size=14),
)
def test_leader_commit_is_quorum_of_current_term(
    old_terms: list[int], ack_seq: list[tuple[str, int]]
) -> None:
    """§5.3 + §5.4.2: after every acknowledgement, the leader's commit index is the largest
    index of its own term stored on a majority of voters (its own durable log included), or
    unchanged if there is none; learners' acknowledgements never count."""
    core = leader_with_log(old_terms)
    last = core.log.last_index()
    initial = core.log.committed
    match = {"a": last}
    for peer, index in ack_seq:
        index = min(index, last)
        core.step(Message(MessageType.APPEND_RESP, "a", peer, core.term, index=index))
        match[peer] = max(match.get(peer, 0), index)
        voter_match = {v: match.get(v, 0) for v in VOTERS}
        ours = [
            i
            for i in range(initial + 1, last + 1)
            if core.log.term(i) == core.term and brute_quorum_index(set(VOTERS), voter_match) >= i
        ]
        assert core.log.committed == max(ours, default=initial)
