"""One test per claim of §5 of the Raft paper ("In Search of an Understandable Consensus
Algorithm", Ongaro and Ousterhout, 2014), named after the section it checks.

These tests run the paper's algorithm (no PreVote, no CheckQuorum) unless they say otherwise.
Where the core has a `deliberate_bugs` switch for the rule under test, the same scenario is run
with the bug on to show that the test notices it.
"""

from __future__ import annotations

import contextlib
import random
from typing import Any

import pytest
from harness import ELECTION, PAPER, Network

from quicraft.core import (
    Config,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    NotLeader,
    PersistentState,
    ProposalDropped,
    RaftCore,
    Role,
    Snapshot,
    bootstrap_state,
)

MT = MessageType
IDS = "abcde"


def with_log(ids: str, terms: list[int], term: int, commit: int | None = None) -> PersistentState:
    """The bootstrap log of `ids` (one term-1 entry per voter) followed by entries of `terms`."""
    base = bootstrap_state(list(ids))
    entries = list(base.entries)
    for t in terms:
        entries.append(Entry(t, len(entries) + 1, EntryType.NORMAL, f"t{t}".encode()))
    commit = base.hard_state.commit if commit is None else commit
    return PersistentState(HardState(term, None, commit), Snapshot(), entries)


def lone_core(ids: str, state: PersistentState | None = None, **config: Any) -> RaftCore:
    """A core of the cluster `ids`, driven by hand: its peers are only names."""
    settings = {**PAPER, **config}
    return RaftCore(
        Config(ids[0], **settings), random.Random(7), state or bootstrap_state(list(ids))
    )


def outbox(core: RaftCore) -> list[Message]:
    """Everything the core wants to send, as a runtime that persists everything would send it."""
    out: list[Message] = []
    while core.has_ready():
        rd = core.ready()
        out += rd.messages + rd.persisted_messages
        core.advance(rd)
    return out


def ticks_until_campaign(core: RaftCore, limit: int = 100) -> int:
    term = core.term
    for n in range(1, limit + 1):
        core.tick()
        if core.term != term or core.role is Role.PRE_CANDIDATE:
            return n
    raise AssertionError("never campaigned")


# -- §5.1 Raft basics ---------------------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.FOLLOWER, Role.CANDIDATE, Role.LEADER])
@pytest.mark.parametrize("kind", [MT.APPEND, MT.HEARTBEAT, MT.APPEND_RESP, MT.VOTE, MT.VOTE_RESP])
def test_5_1_higher_term_makes_follower(role: Role, kind: MessageType) -> None:
    """§5.1: a server that sees a larger term adopts it; a candidate or leader reverts to
    follower."""
    net = Network("abc", **PAPER)
    a = net["a"]
    if role is Role.LEADER:
        net.elect("a")
    elif role is Role.CANDIDATE:
        a.campaign()
        net.take()
    assert a.role is role
    term = a.term
    last = a.log.last_index()
    a.step(Message(kind, "a", "b", term + 2, index=last, log_term=a.log.last_term()))
    assert (a.role, a.term) == (Role.FOLLOWER, term + 2)
    assert a.vote in (None, "b")  # a vote of an older term does not carry over
    if kind in (MT.APPEND, MT.HEARTBEAT):
        assert a.leader == "b"


@pytest.mark.parametrize("kind", [MT.APPEND, MT.VOTE])
def test_5_1_stale_term_request_rejected(kind: MessageType) -> None:
    """§5.1: a request with a stale term is rejected and changes nothing."""
    b = lone_core("bac", with_log("abc", [3], term=3))
    before = list(b.log.entries)
    entries = [Entry(2, 5, EntryType.NORMAL, b"stale")]
    b.step(Message(kind, "b", "a", 2, index=4, log_term=3, entries=entries, commit=5))
    out = outbox(b)
    assert b.log.entries == before and b.log.committed == 3
    assert (b.term, b.vote, b.leader) == (3, None, None)
    assert not [m for m in out if m.type is MT.VOTE_RESP and not m.reject]


def test_5_1_stale_leader_learns_term_from_response() -> None:
    """§5.1: responses carry the current term, so a deposed leader updates itself and steps
    down instead of replicating a stale entry. (The core answers a stale append when PreVote or
    CheckQuorum is on; CheckQuorum is off here so that the old leader is still leading.)"""
    net = Network("abc", check_quorum=False)
    a = net.elect("a")
    net.isolate("a")
    b = net.elect("b")
    net.heal()
    index, _ = a.propose(b"stale")
    net.deliver()
    assert (a.role, a.term) == (Role.FOLLOWER, b.term)
    assert b.role is Role.LEADER
    for node in "bc":
        assert (index, 2) not in net.log(node)
    net.tick("b")
    assert net.log("a") == net.log("b")
    net.assert_safe()


# -- §5.2 Leader election -----------------------------------------------------------------------


def test_5_2_follower_starts_election_after_timeout() -> None:
    """§5.2: a follower that hears nothing for an election timeout becomes a candidate: it
    increments its term, votes for itself and asks every other server for its vote."""
    core = lone_core("abc")
    et = core.config.election_tick
    n = ticks_until_campaign(core)
    assert et <= n < 2 * et
    assert (core.role, core.term, core.vote) == (Role.CANDIDATE, 2, "a")
    votes = [m for m in outbox(core) if m.type is MT.VOTE]
    assert sorted(m.to for m in votes) == ["b", "c"]
    assert all((m.term, m.index, m.log_term) == (2, 3, 1) for m in votes)


def test_5_2_heartbeats_keep_followers() -> None:
    """§5.2: the leader sends heartbeats every heartbeat interval; followers that receive them
    never start an election. (A follower that an append reached within the interval gets no
    heartbeat: it heard from the leader all the same.)"""
    net = Network("abc", heartbeat_tick=3, **PAPER)
    a = net.elect("a")
    term, start = a.term, len(net.sent)
    quiet, longest = 0, 0  # ticks in a row in which a sent b nothing
    for _ in range(30):
        before = net.count({MT.HEARTBEAT, MT.APPEND}, frm="a", to="b")
        net.tick()
        quiet = 0 if net.count({MT.HEARTBEAT, MT.APPEND}, frm="a", to="b") > before else quiet + 1
        longest = max(longest, quiet)
    assert longest == 3 - 1  # something every third tick
    assert net.count(MT.HEARTBEAT, frm="a", to="b", since=start) >= 30 // 3 - 1
    assert all(c.term == term for c in net.cores.values())
    assert net.leader() == "a" and net.count(ELECTION, since=start) == 0


def test_5_2_a_follower_that_appends_reach_gets_no_heartbeat() -> None:
    """Under load an append goes to every follower more often than the heartbeat interval:
    then no heartbeat is sent, nor its response, nor the append the response would prompt.
    A read waiting for a round still gets one."""
    net = Network("abc", heartbeat_tick=3, **PAPER)
    a = net.elect("a")
    start = len(net.sent)
    for i in range(30):
        a.propose(b"w%d" % i)
        net.tick()
    assert net.count(MT.HEARTBEAT, frm="a", since=start) == 0
    assert net.log("b") == net.log("a")
    a.read_index(b"r")
    net.deliver()
    assert net.count(MT.HEARTBEAT, frm="a", since=start) == 2  # the read's round


@pytest.mark.parametrize(
    ("size", "grants", "rejects", "role"),
    [
        (1, 0, 0, Role.LEADER),
        (3, 1, 0, Role.LEADER),
        (3, 0, 1, Role.CANDIDATE),
        (3, 0, 2, Role.FOLLOWER),
        (5, 1, 0, Role.CANDIDATE),
        (5, 1, 2, Role.CANDIDATE),
        (5, 2, 2, Role.LEADER),
        (5, 1, 3, Role.FOLLOWER),
    ],
)
def test_5_2_candidate_wins_with_majority(size: int, grants: int, rejects: int, role: Role) -> None:
    """§5.2: a candidate wins once a majority of the full cluster (itself included) voted for
    it, and gives up once a majority can no longer be reached."""
    ids = IDS[:size]
    a = lone_core(ids)
    a.campaign()
    outbox(a)
    peers = list(ids[1:])
    for peer in peers[:grants] + peers[:grants]:  # a duplicated grant counts once
        a.step(Message(MT.VOTE_RESP, "a", peer, a.term))
    for peer in peers[grants : grants + rejects]:
        a.step(Message(MT.VOTE_RESP, "a", peer, a.term, reject=True))
    assert a.role is role
    if role is Role.LEADER:  # it establishes its authority at once
        appends = [m for m in outbox(a) if m.type is MT.APPEND]
        assert sorted(m.to for m in appends) == peers


@pytest.mark.parametrize(("term_offset", "role"), [(0, Role.FOLLOWER), (-1, Role.CANDIDATE)])
def test_5_2_candidate_steps_down_on_append_from_leader(term_offset: int, role: Role) -> None:
    """§5.2: a candidate that receives AppendEntries from a leader whose term is at least its
    own recognises that leader and returns to follower; a smaller term is rejected."""
    a = lone_core("abc")
    a.campaign()
    outbox(a)
    term = a.term + term_offset
    a.step(Message(MT.APPEND, "a", "b", term, index=3, log_term=1))
    assert a.role is role
    assert a.term == 2
    if role is Role.FOLLOWER:
        assert a.leader == "b"
        assert any(m.type is MT.APPEND_RESP and not m.reject for m in outbox(a))


def test_5_2_split_vote_retries_with_randomized_timeout() -> None:
    """§5.2: election timeouts are random in [T, 2T), chosen afresh for every election, so that
    split votes are rare and resolve: here two candidates split a 4-node cluster's votes, both
    time out at different times, and the next election has one winner."""
    et = Config("a").election_tick
    firsts = [ticks_until_campaign(Network(IDS, seed=s, **PAPER)["a"]) for s in range(8)]
    core = lone_core("abc")
    retries = [ticks_until_campaign(core) for _ in range(12)]  # it never gets a vote
    assert core.term == 1 + 12
    for sample in (firsts, retries):
        assert all(et <= n < 2 * et for n in sample)
        assert len(set(sample)) > 1, sample

    net = Network("abcd", **PAPER)
    net["a"].campaign()
    net["b"].campaign()
    net.deliver(MT.VOTE, frm="a", to="c", once=True)
    net.deliver(MT.VOTE, frm="b", to="d", once=True)
    net.deliver()
    assert net.leader() is None
    assert [net[n].term for n in "abcd"] == [2, 2, 2, 2]
    for _ in range(4 * et):
        net.tick()
        if net.leader():
            break
    leader = net.leader()
    assert leader is not None and net[leader].term >= 3
    net.assert_safe()


def test_5_2_one_vote_per_term() -> None:
    """§5.2: each server votes for at most one candidate in a term, first come first served
    (asking again is answered the same)."""
    b = lone_core("bac")

    def ask(candidate: str, term: int) -> bool:
        b.step(Message(MT.VOTE, "b", candidate, term, index=3, log_term=1))
        (resp,) = [m for m in outbox(b) if m.type is MT.VOTE_RESP]
        return not resp.reject

    assert ask("a", 2)
    assert not ask("c", 2)
    assert ask("a", 2)
    assert b.vote == "a"
    assert ask("c", 3)  # a new term, a new vote
    assert b.vote == "c"


@pytest.mark.parametrize(
    ("bugs", "votes_twice"), [(frozenset(), False), (frozenset({"forget_vote_persist"}), True)]
)
def test_5_2_vote_survives_restart(bugs: frozenset[str], votes_twice: bool) -> None:
    """§5.2 with Figure 2: votedFor is persistent state, so a voter that crashes and restarts
    cannot vote twice in one term (which could make two leaders)."""
    net = Network("abc", deliberate_bugs=bugs, **PAPER)
    net["a"].campaign()
    net.deliver(ELECTION, to="b")
    assert net["b"].vote == "a"
    net.crash("b")
    b = net.restart("b")
    b.step(Message(MT.VOTE, "b", "c", 2, index=3, log_term=1))
    (resp,) = net.take(MT.VOTE_RESP, frm="b")
    assert (not resp.reject) is votes_twice


def test_5_6_election_timeout_must_exceed_heartbeat() -> None:
    """§5.6: broadcastTime << electionTimeout. The heartbeat interval must be shorter than the
    election timeout; at the limit (one tick shorter) a healthy leader is never challenged."""
    with pytest.raises(ValueError):
        Config("a", heartbeat_tick=10, election_tick=10)
    net = Network("abc", heartbeat_tick=9, election_tick=10, **PAPER)
    a = net.elect("a")
    start = len(net.sent)
    net.tick(times=200)
    assert net.leader() == "a" and a.term == 2
    assert net.count(ELECTION, since=start) == 0


# -- §5.3 Log replication -----------------------------------------------------------------------


def test_5_3_leader_replicates_and_commits() -> None:
    """§5.3: the leader appends a command, replicates it, commits it once a majority stores it,
    and followers learn the commit index from later messages and apply it in log order."""
    net = Network(IDS, **PAPER)
    a = net.elect("a")
    net.isolate("d", "e")
    index, term = a.propose(b"x")
    net.deliver(MT.APPEND, to="b")
    net.deliver(MT.APPEND_RESP)
    assert a.log.committed < index  # stored on a and b: 2 of 5
    net.deliver(MT.APPEND, to="c")
    net.deliver(MT.APPEND_RESP)
    assert a.log.committed == index  # a, b and c: a majority
    assert net.applied["a"][index] == Entry(term, index, EntryType.NORMAL, b"x")
    assert net.applied_index["b"] < index
    net.tick("a")
    assert net.applied["b"][index].data == b"x" and net.applied_index["c"] == index
    assert net.applied_index["d"] < index
    net.heal()
    net.tick("a", times=2)
    assert all(net.applied[n][index].data == b"x" for n in IDS)
    net.assert_safe()


def test_5_3_follower_rejects_on_mismatch() -> None:
    """§5.3: AppendEntries carries the index and term of the entry before the new ones; a
    follower that has no such entry refuses them."""
    b = lone_core("bac", with_log("abc", [2], term=2))  # log: 1-3 term 1, 4 term 2
    new = [Entry(2, 5, EntryType.NORMAL, b"new")]
    for prev_index, prev_term in [(5, 2), (4, 1), (3, 2)]:
        b.step(Message(MT.APPEND, "b", "a", 2, index=prev_index, log_term=prev_term, entries=new))
        (resp,) = outbox(b)
        assert resp.reject and b.log.last_index() == 4
    b.step(Message(MT.APPEND, "b", "a", 2, index=4, log_term=2, entries=new))
    (resp,) = outbox(b)
    assert (resp.reject, resp.index) == (False, 5)
    assert b.log.term(5) == 2


def test_5_3_conflicting_entries_truncated() -> None:
    """§5.3: a follower deletes an existing entry that conflicts with a new one (same index,
    other term) and all that follow it, but never entries that do not conflict: a delayed,
    shorter AppendEntries must not cut off entries it does not mention."""
    b = lone_core("bac", with_log("abc", [2, 2, 2, 2, 2], term=2))  # 4-8 term 2, commit 3
    new = [Entry(3, 5, EntryType.NORMAL, b"n5"), Entry(3, 6, EntryType.NORMAL, b"n6")]
    b.step(Message(MT.APPEND, "b", "a", 3, index=4, log_term=2, entries=new, commit=3))
    assert [(e.index, e.term) for e in b.log.entries[3:]] == [(4, 2), (5, 3), (6, 3)]
    assert b.log.last_index() == 6
    # An older, shorter append delivered late, then the same append again: nothing changes.
    for entries in (new[:1], new):
        b.step(Message(MT.APPEND, "b", "a", 3, index=4, log_term=2, entries=entries, commit=3))
        assert [(e.index, e.term) for e in b.log.entries[3:]] == [(4, 2), (5, 3), (6, 3)]


def test_5_3_leader_never_overwrites_own_log() -> None:
    """§5.3 (Leader Append-Only): a leader never overwrites or deletes entries in its own log,
    whatever it receives: rejections, stale messages, even a rogue append for its own term."""
    net = Network("abc", **PAPER)
    a = net.elect("a")
    net.isolate("b", "c")
    for n in range(3):
        a.propose(f"p{n}".encode())
    net.deliver()
    before = list(a.log.entries)
    rogue = [Entry(a.term, len(before), EntryType.NORMAL, b"rogue")]
    a.step(Message(MT.APPEND, "a", "b", a.term, index=len(before) - 1, log_term=1, entries=rogue))
    a.step(Message(MT.APPEND_RESP, "a", "c", a.term, index=7, reject=True, hint_index=1))
    a.step(Message(MT.APPEND, "a", "c", a.term - 1, index=3, log_term=1, entries=rogue))
    net.heal()
    net.tick(times=3)
    assert a.role is Role.LEADER
    assert a.log.entries[: len(before)] == before
    assert all(net.log(n) == net.log("a") for n in "bc")


def test_5_3_entries_replicated_once_even_if_resent() -> None:
    """§5.3/§5.5: AppendEntries is idempotent: the same request delivered twice leaves the
    follower's log as after once and gets the same answer."""
    net = Network("abc", **PAPER)
    a = net.elect("a")
    a.propose(b"x")
    (append,) = net.take(MT.APPEND, to="b")
    net.take()
    net["b"].step(append)
    first = net.log("b")
    net["b"].step(append)
    assert net.log("b") == first and first[-1] == (5, a.term)
    acks = net.take(MT.APPEND_RESP, frm="b")
    assert [(m.reject, m.index) for m in acks] == [(False, 5), (False, 5)]


# -- §5.4 Safety --------------------------------------------------------------------------------


VOTER_LOG = [2, 2]  # the voter's log: 1-3 term 1, 4-5 term 2


@pytest.mark.parametrize(
    ("last_index", "last_term", "granted"),
    [
        (5, 2, True),  # same last term, same length
        (9, 2, True),  # same last term, longer
        (1, 3, True),  # newer last term, shorter
        (4, 2, False),  # same last term, shorter
        (9, 1, False),  # older last term, longer
        (3, 1, False),
    ],
)
def test_5_4_1_vote_denied_to_stale_log(last_index: int, last_term: int, granted: bool) -> None:
    """§5.4.1: a voter refuses a candidate whose log is less up-to-date than its own (compare
    last terms, then lengths)."""
    b = lone_core("bac", with_log("abc", VOTER_LOG, term=2))
    b.step(Message(MT.VOTE, "b", "a", 3, index=last_index, log_term=last_term))
    (resp,) = outbox(b)
    assert (not resp.reject) is granted
    assert b.vote == ("a" if granted else None)


def test_5_4_1_deliberate_bug_grants_stale_candidate() -> None:
    """§5.4.1, the check above fails with `vote_without_log_check`."""
    bugs = frozenset({"vote_without_log_check"})
    b = lone_core("bac", with_log("abc", VOTER_LOG, term=2), deliberate_bugs=bugs)
    b.step(Message(MT.VOTE, "b", "a", 3, index=4, log_term=2))
    (resp,) = outbox(b)
    assert not resp.reject


def test_5_4_1_node_missing_committed_entry_cannot_win() -> None:
    """§5.4.1: a node that lacks a committed entry cannot collect a majority of votes, since
    that majority overlaps the one that stores the entry."""
    net = Network("abc", **PAPER)
    a = net.elect("a")
    net.isolate("c")
    index, _ = a.propose(b"x")
    net.deliver()
    assert a.log.committed == index
    net.crash("a")
    net.heal()
    c = net["c"]
    for _ in range(3):
        c.campaign()
        net.deliver()
        assert c.role is not Role.LEADER
    assert net.elect("b").log.term(index) == 2


def figure_8(bugs: frozenset[str] = frozenset()) -> Network:
    """Figure 8 (a)-(c) with a..e for S1..S5, one entry per AppendEntries.

    (a) a leads term 2 and replicates x (index 7) to b only. (b) a crashes; e wins term 3 with
    c and d and appends its own entry at 7, then crashes. (c) a restarts, wins term 4 with c and
    d, and replicates x to them — x is now on a majority — but not yet its term-4 no-op (8).
    """
    net = Network(IDS, max_entries_per_msg=1, deliberate_bugs=bugs, **PAPER)
    a = net.elect("a")
    net.isolate("c", "d", "e")
    assert a.propose(b"x") == (7, 2)
    net.deliver()
    assert a.log.committed == 6  # (a)
    net.crash("a")
    net.heal()
    net.isolate("b")  # b keeps x and stays out of it until (d)
    net.elect("e", settle=False)
    assert net.log("e")[-1] == (7, 3)
    net.crash("e")  # (b)
    net.restart("a")
    a = net.elect("a", settle=False)
    assert a.term == 4 and net.log("a")[-1] == (8, 4)
    net.deliver(MT.APPEND, frm="a", once=True)  # c and d lack 7: reject
    net.deliver(MT.APPEND_RESP, once=True)
    net.deliver(MT.APPEND, frm="a", once=True)  # x alone
    net.deliver(MT.APPEND_RESP, once=True)
    net.drop(frm="a")  # the no-op is not delivered yet
    assert [net.log(n)[-1] for n in "cd"] == [(7, 2), (7, 2)]  # (c)
    return net


@pytest.mark.parametrize(
    ("bugs", "x_committed"),
    [(frozenset(), False), (frozenset({"commit_old_term_by_counting"}), True)],
)
def test_5_4_2_old_term_entry_not_committed_by_counting(
    bugs: frozenset[str], x_committed: bool
) -> None:
    """§5.4.2 (Figure 8): a leader never commits an entry of an older term by counting
    replicas; otherwise (d) e, whose last term 3 beats x's, is elected with b, c and d and
    overwrites x, which a already applied."""
    net = figure_8(bugs)
    a = net["a"]
    assert (a.log.committed >= 7) is x_committed
    net.crash("a")
    net.heal()
    net.restart("e")
    net.elect("e")  # (d)
    assert [net.log(n)[6] for n in "bcde"] == [(7, 3)] * 4
    assert net.applied["e"][7].term == 3
    if x_committed:  # the bug: a applied x, the others applied e's entry at the same index
        assert net.applied["a"][7].data == b"x" and net.conflicts
        return
    assert 7 not in net.applied["a"]
    net.restart("a")
    net.tick(times=3)
    assert net.log("a") == net.log("e")
    net.assert_safe()


def test_5_4_2_old_term_entry_committed_with_current_term_entry() -> None:
    """§5.4.2: once an entry of the current term is committed, every entry before it is
    committed too (Log Matching); from then on x survives any election, e cannot win."""
    net = figure_8()
    a = net["a"]
    a.step(Message(MT.HEARTBEAT_RESP, "a", "c", a.term))  # let a resend to c and d
    a.step(Message(MT.HEARTBEAT_RESP, "a", "d", a.term))
    net.deliver()
    assert a.log.committed == 8
    assert net.applied["a"][7].data == b"x"
    net.crash("a")
    net.heal()
    e = net.restart("e")
    for _ in range(3):
        e.campaign()
        net.deliver()
        assert e.role is not Role.LEADER
    net.assert_safe()


def test_5_4_3_leader_completeness() -> None:
    """§5.4.3: an entry committed in a term is in the log of the leader of every later term."""
    for nxt in "bcde":
        net = Network(IDS, **PAPER)
        a = net.elect("a")
        net.isolate("d", "e")
        index, term = a.propose(b"x")
        net.deliver()
        assert a.log.committed == index
        net.crash("a")
        net.heal()
        for candidate in (nxt, *"bcde"):
            net[candidate].campaign()
            net.deliver()
            if net.leader():
                break
        leader = net.leader()
        assert leader is not None and leader in "bc"
        assert net[leader].log.term(index) == term
        net.assert_safe()


# -- §5.5 Follower and candidate crashes --------------------------------------------------------


def test_5_5_follower_crash_leader_retries() -> None:
    """§5.5: requests to a crashed follower fail; the leader retries indefinitely and the
    restarted follower, which kept what it had persisted, catches up."""
    net = Network("abc", **PAPER)
    a = net.elect("a")
    a.propose(b"x")
    net.deliver()
    kept, kept_commit = net.log("c"), net["c"].log.committed
    net.crash("c")
    for n in range(5):
        a.propose(f"y{n}".encode())
        net.tick("a")
    assert a.log.committed == 10
    c = net.restart("c")
    assert net.log("c") == kept and c.log.committed == kept_commit
    net.tick("a", times=2)
    assert net.log("c") == net.log("a") and net.applied_index["c"] == 10
    net.assert_safe()


def test_5_5_candidate_restart_keeps_term() -> None:
    """§5.5 with Figure 2: currentTerm is persistent, so a candidate that crashes comes back in
    the same term and its next election uses a newer one."""
    net = Network("abc", **PAPER)
    net["a"].campaign()
    net.take()
    net.crash("a")
    a = net.restart("a")
    assert (a.term, a.vote) == (2, "a")
    a.campaign()
    assert a.term == 3


# -- Safety properties of §5, all at once, under random faults ----------------------------------


def check_invariants(net: Network) -> None:
    """Figure 3: Election Safety, Log Matching, Leader Completeness, State Machine Safety."""
    net.assert_safe()
    logs = {n: {e.index: e for e in c.log.entries} for n, c in net.cores.items()}
    for n1, l1 in logs.items():
        for n2, l2 in logs.items():
            common = sorted(l1.keys() & l2.keys())
            match = max((i for i in common if l1[i].term == l2[i].term), default=0)
            assert all(l1[i] == l2[i] for i in common if i <= match), (n1, n2, match)
    newest = max(net.leaders, default=0)
    leader = net.leader()
    if leader is not None and net[leader].term == newest:
        log = net[leader].log
        for index, entry in net.first_applied.items():
            if index >= log.offset:  # older ones are in its snapshot
                assert log.term(index) == entry.term, (leader, index)


def random_run(net: Network, rng: random.Random, steps: int = 300) -> None:
    """Random partitions, crashes, restarts, losses, reorderings and proposals; the Figure 3
    properties are checked after every step."""
    for step in range(steps):
        action = rng.random()
        live = sorted(net.cores)
        if action < 0.05:
            net.heal()
            net.isolate(rng.choice(IDS))
        elif action < 0.1:
            net.heal()
        elif action < 0.13 and len(live) > 3:
            net.crash(rng.choice(live))
        elif action < 0.2 and len(live) < len(IDS):
            net.restart(rng.choice(sorted(set(IDS) - set(live))))
        elif action < 0.4 and (leader := net.leader()):
            with contextlib.suppress(NotLeader, ProposalDropped):
                net[leader].propose(f"{step}".encode())
        else:
            net.tick(settle=False)
            net.drain_all()
            rng.shuffle(net.pending)
            del net.pending[: len(net.pending) // 10]
            net.deliver(once=True)
        check_invariants(net)


@pytest.mark.parametrize("config", [PAPER, {}], ids=["paper", "prevote+checkquorum"])
@pytest.mark.parametrize("seed", range(3))
def test_5_figure_3_properties_under_random_faults(config: dict[str, Any], seed: int) -> None:
    """Figure 3 / §5.2-§5.4: Election Safety, Log Matching, Leader Completeness and State
    Machine Safety hold under random faults, and the cluster recovers once they stop."""
    net = Network(IDS, seed=seed, **config)
    random_run(net, random.Random(seed))
    net.heal()
    for node in sorted(set(IDS) - set(net.cores)):
        net.restart(node)
    net.tick(times=80)
    check_invariants(net)
    assert net.leader() is not None
    assert len(net.first_applied) > 10  # the run made progress


def test_5_figure_3_check_catches_deliberate_bug() -> None:
    """The random run above notices a broken §5.4.1 (votes granted without the log check)."""
    caught = 0
    for seed in range(4):
        net = Network(
            IDS, seed=seed, deliberate_bugs=frozenset({"vote_without_log_check"}), **PAPER
        )
        try:
            random_run(net, random.Random(seed))
        except AssertionError:
            caught += 1
    assert caught
