"""Scenario tests for known Raft traps, each explained in its docstring.

They run the core as shipped (PreVote and CheckQuorum on) unless they say otherwise.
"""

from __future__ import annotations

from typing import Any

import pytest
from harness import PAPER, Network

from quicraft.core import (
    ConfChange,
    ConfChangeKind,
    Entry,
    EntryType,
    HardState,
    MessageType,
    NotLeader,
    PersistentState,
    ProposalDropped,
    RaftCore,
    ReadState,
    Role,
    Snapshot,
    bootstrap_state,
)

MT = MessageType
ET = 10  # the default election_tick
ADD_LEARNER = ConfChangeKind.ADD_LEARNER
PROMOTE = ConfChangeKind.PROMOTE
REMOVE = ConfChangeKind.REMOVE


def elected(ids: str = "abc", **config: Any) -> tuple[Network, RaftCore]:
    """A cluster whose first node leads, with its no-op committed everywhere."""
    net = Network(ids, **config)
    leader = net.elect(ids[0])
    net.tick()
    return net, leader


def propose_all(core: RaftCore, count: int, prefix: str = "p") -> None:
    for n in range(count):
        core.propose(f"{prefix}{n}".encode())


# -- disruptive servers and stale leaders -------------------------------------------------------


@pytest.mark.parametrize("behind", [True, False], ids=["behind", "up-to-date"])
@pytest.mark.parametrize(
    ("config", "disrupted"), [({}, False), (PAPER, True)], ids=["default", "paper"]
)
def test_rejoining_node_does_not_disrupt_leader(
    config: dict[str, Any], disrupted: bool, behind: bool
) -> None:
    """Trap: a node cut off from the cluster keeps timing out. In plain Raft each timeout bumps
    its term, and when it comes back its vote requests force the healthy leader to step down.
    PreVote (thesis §9.6) keeps its term still while it cannot win, and CheckQuorum's lease
    makes the others ignore it even when its log is up to date (so PreVote alone would let it
    win): nothing changes. The plain-Raft run shows that the test sees the disruption."""
    net, a = elected("abc", **config)
    term = a.term
    net.isolate("c")
    for _ in range(5 * ET):
        net.tick()
        if behind:
            a.propose(b"w")
    start = len(net.sent)
    while not net.count({MT.PRE_VOTE, MT.VOTE}, frm="c", since=start):
        net.tick("c", settle=False)
    net.heal()  # c's requests arrive before any heartbeat tells c who leads
    net.deliver()
    net.tick(times=2 * ET)
    leader = net.leader()
    assert leader is not None
    if disrupted:
        assert net[leader].term > term
        return
    assert (leader, a.term) == ("a", term)
    assert all(net[n].term == term and net[n].leader == "a" for n in "abc")
    assert net.log("c") == net.log("a")
    net.assert_safe()


def test_check_quorum_leader_steps_down_within_election_timeout() -> None:
    """Trap: a leader on the minority side of a partition keeps believing it leads and takes
    requests that can never commit. With CheckQuorum it steps down once an election timeout
    passes without hearing from a quorum (thesis §6.2), while the majority elects a new leader.
    """
    net, a = elected("abc")
    net.tick(times=3)
    net.isolate("a")
    ticks = 0
    while a.role is Role.LEADER and ticks < 2 * ET:
        net.tick("a")
        ticks += 1
    assert a.role is Role.FOLLOWER
    assert ticks <= ET, f"stepped down {ticks} ticks after losing its quorum (timeout {ET})"
    with pytest.raises(NotLeader):
        a.propose(b"x")


@pytest.mark.parametrize(("check_quorum", "steps_down"), [(True, True), (False, False)])
def test_check_quorum_isolated_leader_eventually_steps_down(
    check_quorum: bool, steps_down: bool
) -> None:
    """As above, with a loose bound (two election timeouts), and without CheckQuorum to show the
    test can fail: a plain-Raft leader cut off leads forever. The majority moves on anyway."""
    net, a = elected("abc", check_quorum=check_quorum)
    net.isolate("a")
    net.tick(times=2 * ET)
    assert (a.role is not Role.LEADER) is steps_down
    assert any(net[n].role is Role.LEADER for n in "bc")
    net.assert_safe()


# -- ReadIndex ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bugs", "stale"), [(frozenset(), False), (frozenset({"read_index_before_term_commit"}), True)]
)
def test_read_index_after_leader_change_is_not_stale(bugs: frozenset[str], stale: bool) -> None:
    """Trap: a new leader's commit index may lag the old leader's (here a committed x, but died
    before telling anyone). Serving a ReadIndex from it would miss x. The new leader must first
    commit an entry of its own term (its no-op, §8), so its read index covers x. The
    `read_index_before_term_commit` bug shows the stale read this test catches."""
    net, a = elected("abc", deliberate_bugs=bugs)
    x, _ = a.propose(b"x")
    net.deliver(MT.APPEND, frm="a")
    net.deliver(MT.APPEND_RESP, to="a", once=True)
    assert a.log.committed == x
    net.crash("a")  # its commit index never reaches b and c
    b = net.elect("b", settle=False)
    assert b.log.committed < x
    b.read_index(b"r1")
    net.drain_all()
    assert net.read_states["b"] == []  # nothing before a round of heartbeats, bug or not
    net.deliver()
    (rs,) = net.read_states["b"]
    assert (rs.index < x) is stale
    if stale:
        return
    assert b.log.term(rs.index) == b.term  # at or after b's no-op
    # A follower's read goes to the leader and comes back with the leader's commit index.
    net["c"].read_index(b"r2")
    net.deliver()
    assert net.read_states["c"] == [ReadState(b"r2", b.log.committed)]


def test_read_index_batches_reads_in_one_heartbeat_round() -> None:
    """Reads that arrive together share one quorum round (one heartbeat per follower), not one
    round each; reads arriving while a round is out wait for the next round."""
    net, a = elected("abcde")
    start = len(net.sent)
    for n in range(20):
        a.read_index(f"r{n}".encode())
    net.drain_all()
    for n in range(20, 25):
        a.read_index(f"r{n}".encode())
    net.deliver()
    assert net.count(MT.HEARTBEAT, frm="a", since=start) == 2 * 4
    states = net.read_states["a"]
    assert [s.context for s in states] == [f"r{n}".encode() for n in range(25)]
    assert all(s.index == a.log.committed for s in states)


def test_read_index_needs_a_quorum() -> None:
    """A leader cut off from the quorum must not confirm reads: it might have been replaced."""
    net, a = elected("abc")
    net.isolate("a")
    a.read_index(b"r")
    net.deliver()
    assert net.read_states["a"] == []
    net.heal()
    net.tick("a")
    assert [s.context for s in net.read_states["a"]] == [b"r"]


# -- membership changes -------------------------------------------------------------------------


def test_uncommitted_change_at_old_leader_then_new_change() -> None:
    """Trap (the single-server change bug, raft-dev 2015): a change appended by an old leader
    but never committed, followed by a change from a new leader, can let two leaders win one
    term. The fix: a leader proposes a change only once it has committed an entry of its own
    term, and only one change is pending at a time."""
    net, a = elected("abc")
    net.add("d")
    net.isolate("a")
    a.propose_conf_change(ConfChange(ADD_LEARNER, "d"))
    net.deliver()
    assert "d" in a.membership and a.log.last_change_index() > a.log.committed
    b = net.elect("b", settle=False)
    with pytest.raises(ProposalDropped):
        b.propose_conf_change(ConfChange(ADD_LEARNER, "d"))  # b's no-op is not committed yet
    net.deliver()
    b.propose_conf_change(ConfChange(ADD_LEARNER, "d"))
    with pytest.raises(ProposalDropped):
        b.propose_conf_change(ConfChange(PROMOTE, "d"))  # the first is not committed yet
    net.deliver()
    b.propose_conf_change(ConfChange(PROMOTE, "d"))
    net.heal()
    net.tick(times=3)
    assert net.leader() == "b"
    assert all(net.log(n) == net.log("b") for n in "acd")  # a's change was truncated
    assert all(net[n].membership.voters == set("abcd") for n in "abcd")
    net.assert_safe()


@pytest.mark.parametrize(
    ("bugs", "lost"), [(frozenset(), False), (frozenset({"conf_change_before_term_commit"}), True)]
)
def test_a_change_before_the_terms_first_commit_loses_a_committed_entry(
    bugs: frozenset[str], lost: bool
) -> None:
    """Trap (raft-dev, 2015): the single-server change bug, played out. a's change (e a
    voter) reaches only e before a is cut off. b, elected by the old voters without it,
    proposes another at once (f a voter) and commits it with b, c and f. a, with d and e,
    a majority of its own voters, then wins a later term without b's committed entries, and
    its commit replaces them. The rule that prevents it (`conf_change_before_term_commit`
    drops it): a leader proposes a change only once an entry of its term is committed, on a
    majority of the voters that elected it; a cannot be elected again without one of them,
    and none of them votes for a log that lacks that entry."""
    net = Network("abcd", **PAPER, deliberate_bugs=bugs)
    a = net.elect("a")
    for learner in "ef":
        net.add(learner)
        a.propose_conf_change(ConfChange(ADD_LEARNER, learner))
        net.deliver()
    net.tick()  # every node knows both are committed
    a.propose_conf_change(ConfChange(PROMOTE, "e"))
    net.deliver(MT.APPEND, frm="a", to="e", once=True)
    net.isolate("a")
    net.drop(frm="a")
    net.drop(to="a")
    b = net.elect("b", settle=False)  # by b, c and d: a's change reached none of them
    if not lost:
        with pytest.raises(ProposalDropped, match="not yet committed an entry of its term"):
            b.propose_conf_change(ConfChange(PROMOTE, "f"))
        return
    b.propose_conf_change(ConfChange(PROMOTE, "f"))
    net.drain_all()
    net.drop(frm="b", to=["d", "e"])
    net.heal()
    net.blocked = {(x, y) for x in "bcf" for y in "ade"} | {(y, x) for x in "bcf" for y in "ade"}
    net.deliver()
    assert b.log.committed == b.log.last_index()  # b's no-op and change, by b, c and f
    committed = net.log("b")[-2:]
    net.elect("a", settle=False)  # by a, d and e: neither d nor e holds b's entries
    net.deliver()
    assert not set(committed) & set(net.log("a"))
    assert net.conflicts  # a applied other entries at b's committed indexes


def test_new_leader_commits_inherited_change_before_next() -> None:
    """Trap: the new leader inherits an uncommitted change in its log. It must commit it (with
    its no-op) before proposing another, so two changes are never pending at once."""
    net, a = elected("abc")
    net.add("d")
    a.propose_conf_change(ConfChange(ADD_LEARNER, "d"))
    net.deliver(MT.APPEND, frm="a", to="b")
    net.crash("a")
    b = net.elect("b", settle=False)
    assert b.log.last_change_index() > b.log.committed
    with pytest.raises(ProposalDropped):
        b.propose_conf_change(ConfChange(PROMOTE, "d"))
    net.deliver()
    assert b.log.committed >= b.log.last_change_index()
    b.propose_conf_change(ConfChange(PROMOTE, "d"))
    net.deliver()
    assert all(net[n].membership.voters == set("abcd") for n in "bcd")
    net.assert_safe()


def test_membership_learner_promote_remove() -> None:
    """Thesis §4.1-§4.2: a learner receives the log but is not counted for commits and never
    campaigns; promoted, it counts; changes go one at a time; a removed leader leads until its
    removal commits, then steps down and never campaigns again."""
    net, a = elected("abc")
    net.add("d")
    a.propose_conf_change(ConfChange(ADD_LEARNER, "d"))
    with pytest.raises(ProposalDropped):
        a.propose_conf_change(ConfChange(ADD_LEARNER, "e"))
    net.deliver()
    d = net["d"]
    assert net.log("d") == net.log("a") and d.membership.learners == {"d"}
    net.isolate("b", "c")
    q, _ = a.propose(b"q")
    net.deliver()
    assert net.log("d")[-1][0] == q and a.log.committed < q  # a + learner is no quorum
    net.tick("d", times=4 * ET, settle=False)
    assert d.role is Role.FOLLOWER and net.count({MT.PRE_VOTE, MT.VOTE}, frm="d") == 0
    net.heal()
    net.isolate("c", "d")
    net.tick("a")
    assert a.log.committed == q
    r, _ = a.propose(b"r")
    net.deliver()
    assert a.log.committed == r  # a + b is a quorum: the missing learner does not matter
    net.heal()

    a.propose_conf_change(ConfChange(PROMOTE, "d"))
    net.deliver()
    assert a.membership.voters == set("abcd")
    net.isolate("b", "c")
    p, _ = a.propose(b"p")
    net.deliver()
    assert a.log.committed < p  # a + d of 4 voters is no quorum any more
    net.heal()
    net.tick("a")
    assert a.log.committed == p

    a.propose_conf_change(ConfChange(REMOVE, "c"))
    net.deliver()
    net.isolate("c")
    assert a.membership.voters == set("abd") and "c" not in a.progress

    start = len(net.sent)
    a.propose_conf_change(ConfChange(REMOVE, "a"))
    net.deliver(MT.APPEND, frm="a")
    assert net.leader() == "a"  # the removal is not committed yet
    net.deliver()
    assert a.role is Role.FOLLOWER and a.log.committed >= a.log.last_change_index()
    net.tick(["a", "b", "d"], times=3 * ET)
    assert net.leader() in ("b", "d")
    assert net.count({MT.PRE_VOTE, MT.VOTE}, frm="a", since=start) == 0
    net.assert_safe()


@pytest.mark.parametrize("how", ["restart", "check_quorum"])
def test_removed_leader_that_stepped_down_early_still_campaigns(how: str) -> None:
    """Trap (thesis §4.2.2, Figure 4.6): a leads {a, b} and appends its own removal; b has not
    received it when a stops leading (a restart, or CheckQuorum while b is unreachable). b,
    still on {a, b}, needs a's vote, which a refuses for b's shorter log; so only a can finish
    the change: "a server that is not part of its own latest configuration should still start
    new elections, as it might still be needed until the Cnew entry is committed. It does not
    count its own vote in elections unless it is part of its latest configuration." If a never
    campaigns, the cluster has no leader forever."""
    net, a = elected("ab")
    a.propose_conf_change(ConfChange(REMOVE, "a"))
    net.take(frm="a")  # the removal does not reach b
    if how == "restart":
        net.crash("a")
        net.restart("a")
    else:
        net.isolate("b")
        net.tick(times=2 * ET)
        net.heal()
    assert net.leader() is None and net["a"].membership.voters == {"b"}
    net.tick(times=10 * ET)
    assert net.leader() == "b" and net["b"].membership.voters == {"b"}
    net.assert_safe()


def test_bootstrap_from_one_founder() -> None:
    """bootstrap_state: founders may start empty and receive the founding entries from the one
    that holds them; an empty node is in no configuration, so it never campaigns."""
    empty = PersistentState()
    net = Network("abc", states={"b": empty, "c": empty})
    assert [net[n].promotable() for n in "abc"] == [True, False, False]
    net.tick(times=4 * ET)
    assert net.leader() == "a"
    assert all(net.log(n) == net.log("a") and net[n].membership.voters == set("abc") for n in "bc")
    net.assert_safe()


# -- snapshots ----------------------------------------------------------------------------------


def test_lagging_follower_catches_up_by_snapshot() -> None:
    """Trap: a follower behind the leader's compacted log cannot be sent entries the leader no
    longer has. The leader sends its snapshot; the follower installs it (Ready.snapshot before
    any committed entry), then takes the rest of the log as usual, and keeps it all across a
    restart."""
    net, a = elected("abc")
    net.isolate("c")
    propose_all(a, 10)
    net.deliver()
    net.compact("a", a.log.applied - 2)
    snap = a.log.snapshot.meta
    c = net["c"]
    assert c.log.last_index() < snap.index
    net.heal()
    start = len(net.sent)
    net.tick("a")
    assert net.count(MT.SNAPSHOT, to="c", since=start) == 1
    (installed,) = net.installed["c"]
    assert installed.meta == snap
    assert net.log("c") == net.log("a") and c.log.committed == a.log.committed
    assert net.applied_index["c"] == a.log.committed and c.membership == a.membership
    after = len(net.sent)
    x, _ = a.propose(b"x")
    net.deliver()
    net.tick("a")  # followers learn the new commit with the next append, or at this tick
    assert net.count(MT.SNAPSHOT, since=after) == 0 and net.applied["c"][x].data == b"x"
    net.crash("c")
    c = net.restart("c")
    assert c.log.snapshot.meta == snap and net.log("c") == net.log("a")
    net.assert_safe()


# -- leadership transfer ------------------------------------------------------------------------


def test_transfer_to_up_to_date_node() -> None:
    """Thesis §3.10: the leader sends TimeoutNow to a caught-up target, which campaigns at once
    (no PreVote; the others' lease does not stop it) and wins the next term. Proposals are
    refused while the transfer is under way."""
    net, a = elected("abc")
    term, start = a.term, len(net.sent)
    a.transfer_leadership("b")
    with pytest.raises(ProposalDropped):
        a.propose(b"x")
    net.deliver()
    assert net.leader() == "b" and net["b"].term == term + 1
    assert net.count(MT.TIMEOUT_NOW, frm="a", to="b", since=start) == 1
    assert net.count(MT.PRE_VOTE, since=start) == 0
    assert a.role is Role.FOLLOWER and a.leader == "b"
    net.assert_safe()


def test_transfer_to_lagging_node_catches_it_up_first() -> None:
    """Thesis §3.10: a target that lacks entries is first brought up to date; TimeoutNow goes
    only then, so the target can win (its log is as up-to-date as anyone's)."""
    net, a = elected("abc")
    net.isolate("c")
    propose_all(a, 5)
    net.deliver()
    net.heal()
    last, start = a.log.last_index(), len(net.sent)
    a.transfer_leadership("c")
    for _ in range(ET - 1):
        net.tick("a")
        if net.leader() == "c":
            break
    assert net.leader() == "c"
    sent = net.sent[start:]
    timeout_at = next(i for i, m in enumerate(sent) if m.type is MT.TIMEOUT_NOW)
    assert any(
        m.type is MT.APPEND_RESP and m.frm == "c" and not m.reject and m.index >= last
        for m in sent[:timeout_at]
    )
    assert net["c"].log.term(last) == a.log.term(last)
    net.assert_safe()


def test_transfer_to_unreachable_node_is_abandoned() -> None:
    """Thesis §3.10: if the target does not take over within an election timeout, the leader
    abandons the transfer and takes proposals again."""
    net, a = elected("abc")
    net.isolate("c")
    a.transfer_leadership("c")
    net.tick(["a", "b"], times=ET // 2)
    with pytest.raises(ProposalDropped):
        a.propose(b"x")
    net.tick(["a", "b"], times=ET - ET // 2)
    assert a.role is Role.LEADER and a.lead_transferee is None
    x, _ = a.propose(b"x")
    net.deliver()
    assert a.log.committed == x


def test_asking_again_for_the_same_transfer_keeps_its_deadline() -> None:
    """As etcd-raft: a transfer under way is not started over by the same request (an
    operator repeating `mgmt transfer` kept proposals refused for as long as they repeated)."""
    net, a = elected("abc")
    net.isolate("c")
    a.transfer_leadership("c")
    net.tick(["a", "b"], times=ET // 2)
    a.transfer_leadership("c")
    net.tick(["a", "b"], times=ET - ET // 2)
    assert a.role is Role.LEADER and a.lead_transferee is None
    a.propose(b"x")


def test_a_transfer_to_the_leader_itself_ends_one_under_way() -> None:
    """As etcd-raft: asking for the leader it already is abandons a transfer to another, so
    proposals are taken again at once (it was a no-op that left them refused)."""
    net, a = elected("abc")
    net.isolate("c")
    a.transfer_leadership("c")
    a.transfer_leadership("a")
    assert a.role is Role.LEADER and a.lead_transferee is None
    x, _ = a.propose(b"x")
    net.tick(["a", "b"])
    net.deliver()
    assert a.log.committed == x


# -- replication flow ---------------------------------------------------------------------------


def test_pipelining_keeps_a_window_of_appends_in_flight() -> None:
    """A follower in REPLICATE state is sent new entries without waiting for acknowledgements,
    up to max_inflight_msgs appends; acknowledgements open the window again."""
    net, a = elected("abc", max_inflight_msgs=3)
    for n in range(5):
        a.propose(f"p{n}".encode())
        net.drain("a")  # one Ready per proposal
    to_b = [m for m in net.pending if m.type is MT.APPEND and m.to == "b"]
    assert [[e.data for e in m.entries] for m in to_b] == [[b"p0"], [b"p1"], [b"p2"]]
    net.deliver(MT.APPEND, to="b", once=True)
    net.deliver(MT.APPEND_RESP, frm="b", once=True)
    net.deliver()
    assert net.log("b") == net.log("a") and a.log.committed == a.log.last_index()


@pytest.mark.parametrize(
    ("config", "size"), [({"max_entries_per_msg": 2}, 0), ({"max_bytes_per_msg": 250}, 100)]
)
def test_batching_splits_a_burst_into_bounded_appends(config: dict[str, Any], size: int) -> None:
    """A burst of proposals between two Readies goes out in appends of at most
    max_entries_per_msg entries / about max_bytes_per_msg bytes, all streamed at once to a
    follower in REPLICATE state (the window allows them), not one per round trip."""
    net, a = elected("abc", **config)
    for n in range(5):
        a.propose(bytes([n]) * size or f"p{n}".encode())
    net.drain("a")
    to_b = [m for m in net.pending if m.type is MT.APPEND and m.to == "b"]
    assert [len(m.entries) for m in to_b] == [2, 2, 1]
    assert [e.index for m in to_b for e in m.entries] == list(range(5, 10))
    net.deliver()
    assert net.log("b") == net.log("a")


def diverged(follower_terms: list[int]) -> dict[str, PersistentState]:
    """Leader-to-be a (and c): 4-10 of term 2, 11-20 of term 6. Follower b: `follower_terms`."""

    def state(terms: list[int]) -> PersistentState:
        base = bootstrap_state(list("abc"))
        entries = list(base.entries)
        for t in terms:
            entries.append(Entry(t, len(entries) + 1, EntryType.NORMAL, f"t{t}".encode()))
        return PersistentState(HardState(max(terms), None, 3), Snapshot(), entries)

    ours = [2] * 7 + [6] * 10
    return {"a": state(ours), "c": state(ours), "b": state(follower_terms)}


@pytest.mark.parametrize(
    "follower_terms",
    [
        [2] * 3 + [3] * 9 + [4] * 10 + [5] * 15,  # long divergent suffix of three terms
        [2] * 37,  # longer log of an old term
        [2] * 2,  # simply behind
    ],
    ids=["divergent", "longer-old-term", "behind"],
)
def test_fast_backtracking(follower_terms: list[int]) -> None:
    """Trap: backing up one entry per rejected AppendEntries takes as many round trips as the
    follower has divergent entries. With conflict hints (§5.3, end) the leader skips a whole term
    per round trip: rejections <= distinct conflicting terms + 1."""
    net = Network("abc", states=diverged(follower_terms), **PAPER)
    net.elect("a")
    rejections = [m for m in net.sent if m.type is MT.APPEND_RESP and m.frm == "b" and m.reject]
    ours = [2] * 7 + [6] * 10
    conflicting = {t for i, t in enumerate(follower_terms) if i >= len(ours) or t != ours[i]}
    assert len(rejections) <= len(conflicting) + 1, rejections
    assert net.log("b") == net.log("a")
    net.assert_safe()


# -- the Ready contract -------------------------------------------------------------------------


def test_ready_follower_answers_only_after_persisting() -> None:
    """ready.py: whatever a follower or candidate sends promises what it stored (an entry, a
    vote, a term), so it goes in `persisted_messages` with the entries and hard state it
    depends on; only the leader's own appends go in `messages`."""
    net = Network("abc")
    a, b = net["a"], net["b"]
    a.campaign()
    rd = a.ready()
    assert rd.messages == [] and {m.type for m in rd.persisted_messages} == {MT.PRE_VOTE}
    net.handle_ready("a", rd)
    net.deliver(MT.PRE_VOTE)
    for grant in [m for m in net.pending if m.type is MT.PRE_VOTE_RESP]:
        a.step(grant)
    rd = a.ready()  # now a real candidate
    assert rd.hard_state == HardState(2, "a", 3) and rd.messages == []
    assert {m.type for m in rd.persisted_messages} == {MT.VOTE}
    net.handle_ready("a", rd)
    net.pending.clear()
    b.step(next(m for m in rd.persisted_messages if m.to == "b"))
    rd = b.ready()
    assert rd.hard_state == HardState(2, "a", 3) and rd.messages == []
    assert [m.type for m in rd.persisted_messages] == [MT.VOTE_RESP]
    net.handle_ready("b", rd)
    a.step(net.pending.pop())
    assert a.role is Role.LEADER
    rd = a.ready()
    assert [e.type for e in rd.entries] == [EntryType.NOOP]
    assert {m.type for m in rd.messages} == {MT.APPEND} and rd.persisted_messages == []
    with pytest.raises(AssertionError):
        a.ready()  # not again before advance
    net.handle_ready("a", rd)
    b.step(next(m for m in rd.messages if m.to == "b"))
    rd = b.ready()
    assert [e.type for e in rd.entries] == [EntryType.NOOP] and rd.messages == []
    assert [m.type for m in rd.persisted_messages] == [MT.APPEND_RESP]
    net.handle_ready("b", rd)


def test_ready_leader_entry_counts_only_after_advance() -> None:
    """ready.py: the leader sends its appends while it writes its own log, so its own copy must
    not count towards a commit until advance() says it is durable: one follower's ack is not a
    majority of three until then."""
    net, a = elected("abc")
    x, _ = a.propose(b"x")
    rd = a.ready()
    assert [e.index for e in rd.entries] == [x]
    net["b"].step(next(m for m in rd.messages if m.to == "b"))
    net.drain("b")
    (ack,) = [m for m in net.pending if m.type is MT.APPEND_RESP]
    a.step(ack)
    assert a.log.committed < x
    net.handle_ready("a", rd)
    assert a.log.committed == x
    net.drain("a")
    assert net.applied["a"][x].data == b"x"


def test_ready_single_voter_commits_on_its_own_durability() -> None:
    """ready.py: a single voter is its own majority, so its entry commits exactly when advance()
    reports it durable, and its reads need no round of heartbeats."""
    net = Network("a")
    a = net.elect("a")
    x, _ = a.propose(b"x")
    rd = a.ready()
    assert [e.index for e in rd.entries] == [x] and rd.committed_entries == []
    net.handle_ready("a", rd)
    rd = a.ready()
    assert [e.index for e in rd.committed_entries] == [x]
    net.handle_ready("a", rd)
    a.read_index(b"r")
    rd = a.ready()
    assert rd.read_states == [ReadState(b"r", x)] and rd.messages == []
    net.handle_ready("a", rd)


def test_ready_snapshot_installed_before_entries_applied() -> None:
    """ready.py: Ready.snapshot is installed before committed entries are applied, and those
    entries follow the snapshot's index directly."""
    net, a = elected("abc")
    net.isolate("c")
    propose_all(a, 6)
    net.deliver()
    net.compact("a", a.log.applied - 3)
    net.heal()
    net.tick("a", settle=False)
    net.deliver(frozenset(MT) - {MT.SNAPSHOT})  # c rejects what a sends until a sends its snapshot
    (snap,) = net.take(MT.SNAPSHOT, to="c")
    c = net["c"]
    c.step(snap)
    rd = c.ready()
    assert rd.snapshot is not None and rd.snapshot.meta.index == a.log.snapshot.meta.index
    assert rd.committed_entries == [] or rd.committed_entries[0].index == rd.snapshot.meta.index + 1
    assert [m.type for m in rd.persisted_messages] == [MT.APPEND_RESP]
    net.handle_ready("c", rd)
    net.deliver()
    assert net.log("c") == net.log("a")
    assert net.applied_index["c"] == a.log.committed


def test_a_new_commit_index_rides_on_the_next_append_or_goes_at_the_next_tick() -> None:
    """Trap: telling followers of every new commit with an empty append (and its answer)
    doubles the messages under load. The commit rides on the next append carrying entries;
    only when none goes out before the next tick does an append go for it alone."""
    net, a = elected("abc")
    start = len(net.sent)
    for n in range(5):  # a steady stream: every round's commit rides on the next round
        a.propose(f"p{n}".encode())
        net.deliver()
    empty = [m for m in net.sent[start:] if m.type is MT.APPEND and not m.entries]
    assert len(empty) == 0
    b, c = net["b"], net["c"]
    assert b.log.committed < a.log.committed  # the last round's commit is not sent yet
    net.tick("a")  # idle now: the tick sends it
    assert b.log.committed == c.log.committed == a.log.committed
    net.assert_safe()
