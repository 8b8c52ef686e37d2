"""Bugs the simulator found, each pinned by a direct test of the core."""

from __future__ import annotations

import random

from harness import Network

from quicraft.core import (
    ConfChange,
    ConfChangeKind,
    Config,
    Entry,
    EntryType,
    HardState,
    Membership,
    Message,
    MessageType,
    PersistentState,
    RaftCore,
    Role,
    Snapshot,
    SnapshotMeta,
    bootstrap_state,
)
from quicraft.core.progress import ProgressState


def test_applied_moves_only_when_the_runtime_reports_it() -> None:
    """A snapshot that arrives between ready() and advance() is not 'applied' until the
    runtime has installed it. Counting it early let a read be served from older state."""
    core = RaftCore(Config("b"), random.Random(0), bootstrap_state(["a", "b", "c"]))
    rd = core.ready()
    assert [e.index for e in rd.committed_entries] == [1, 2, 3]
    snapshot = Snapshot(SnapshotMeta(10, 2, Membership(frozenset({"a", "b", "c"}))), b"img")
    core.step(Message(MessageType.SNAPSHOT, "b", "a", 2, snapshot=snapshot))
    assert core.log.applied == 0  # nothing has been applied yet
    core.advance(rd)
    assert core.log.applied == 3  # the founding entries, not the snapshot
    rd = core.ready()
    assert rd.snapshot is snapshot
    assert rd.committed_entries == []  # nothing to apply before the snapshot is installed
    core.advance(rd)
    assert core.log.applied == 10


def test_snapshot_taken_below_a_received_snapshot_is_ignored() -> None:
    """The runtime may snapshot at an applied index a received snapshot already covers."""
    core = RaftCore(Config("b"), random.Random(0), bootstrap_state(["a", "b", "c"]))
    core.advance(core.ready())
    snapshot = Snapshot(SnapshotMeta(10, 2, Membership(frozenset({"a", "b", "c"}))), b"img")
    core.step(Message(MessageType.SNAPSHOT, "b", "a", 2, snapshot=snapshot))
    core.snapshot_taken(3, b"old")  # covered by the received snapshot: nothing to compact
    assert core.log.snapshot is snapshot


def test_a_lost_snapshot_is_sent_again_once_reported() -> None:
    """A leader waits on a follower in SNAPSHOT state until the transport reports the
    transfer; a failed report must lead to a new attempt, not a follower stuck forever."""
    net = Network(["a", "b", "c"], pre_vote=False, check_quorum=False)
    leader = net.elect("a")
    net.isolate("c")
    for n in range(5):
        leader.propose(b"x%d" % n)
    net.deliver()
    net.compact("a")
    net.heal()
    net.tick(["a"], settle=False)  # a heartbeat to c: c's answers lead the leader to a snapshot
    everything_but_snapshots = [t for t in MessageType if t is not MessageType.SNAPSHOT]
    net.deliver(everything_but_snapshots)
    lost = net.take(MessageType.SNAPSHOT, to="c")  # taken without a report: the transfer hangs
    assert len(lost) == 1
    assert leader.progress["c"].state is ProgressState.SNAPSHOT
    leader.report_snapshot("c", ok=False)
    assert leader.progress["c"].state is ProgressState.PROBE
    net.tick(["a"])  # the next heartbeat round unpauses the probe and resends
    assert net.count(MessageType.SNAPSHOT, to="c") >= 2
    assert net["c"].log.committed == leader.log.committed


def test_a_single_voter_sends_nothing_of_its_new_term_before_storing_it() -> None:
    """A single voter is elected within one tick, so one Ready holds its new term and its
    first appends. Had they left before the write and the node crashed, it could be elected
    again in that term and put other entries at the same indexes, which its learner would
    take for the ones it holds (found by a review; the simulator checks it now)."""
    state = bootstrap_state(["a"])
    learner = Entry(
        1, 2, EntryType.CONF_CHANGE, ConfChange(ConfChangeKind.ADD_LEARNER, "b").encode()
    )
    state = PersistentState(HardState(term=1, commit=2), Snapshot(), [*state.entries, learner])
    core = RaftCore(Config("a"), random.Random(0), state)
    core.advance(core.ready())  # the founding entries applied
    while core.role is not Role.LEADER:
        core.tick()
    rd = core.ready()
    assert rd.hard_state is not None and rd.hard_state.term == 2
    assert rd.messages == []
    appends = [m for m in rd.persisted_messages if m.type is MessageType.APPEND]
    assert [m.to for m in appends] == ["b"] and all(m.term == 2 for m in appends)


def test_entries_written_before_a_received_snapshot_are_written_again_after_it() -> None:
    """A follower's write of 6..10 (term 2) is on disk while a term-3 leader overwrites 6, a
    term-4 leader's snapshot at 8 (term 2) replaces the log, and 9..10 (term 2) follow it.
    The first write ends matching 9..10 again, but writing the snapshot next deletes every
    stored entry: 9..10 must be written with it, or the follower acknowledges entries it no
    longer holds (found by a review)."""
    ids = ["a", "b", "c", "d", "e"]
    core = RaftCore(Config("e"), random.Random(0), bootstrap_state(ids))
    core.advance(core.ready())

    def normal(term: int, index: int) -> Entry:
        return Entry(term, index, EntryType.NORMAL, b"")

    six_to_ten = [normal(2, i) for i in range(6, 11)]
    core.step(Message(MessageType.APPEND, "e", "a", 2, log_term=1, index=5, entries=six_to_ten))
    writing = core.ready()
    assert [e.index for e in writing.entries] == [6, 7, 8, 9, 10]
    core.step(Message(MessageType.APPEND, "e", "d", 3, log_term=1, index=5, entries=[normal(3, 6)]))
    snapshot = Snapshot(SnapshotMeta(8, 2, Membership(frozenset(ids))), b"img")
    core.step(Message(MessageType.SNAPSHOT, "e", "a", 4, snapshot=snapshot))
    nine_ten = [normal(2, 9), normal(2, 10)]
    core.step(Message(MessageType.APPEND, "e", "a", 4, log_term=2, index=8, entries=nine_ten))
    core.advance(writing)
    rd = core.ready()
    assert rd.snapshot is snapshot
    assert [e.index for e in rd.entries] == [9, 10]
    acks = [m.index for m in rd.persisted_messages if m.type is MessageType.APPEND_RESP]
    assert acks and max(acks) == 10


def test_the_part_of_a_write_that_still_matches_is_stable() -> None:
    """A follower writes 6..9 (term 2; 6..7 committed); meanwhile a term-3 leader replaces 8
    on. The write counted for nothing, so `stable` stayed behind the applied 7 and a snapshot
    at 7 left it below the log's start: the next write skipped 8..11, though the follower
    acknowledged them (found by a review). 6..7 still match what was written: stable."""
    core = RaftCore(Config("c"), random.Random(0), bootstrap_state(["a", "b", "c", "d", "e"]))
    core.advance(core.ready())

    def normal(term: int, index: int) -> Entry:
        return Entry(term, index, EntryType.NORMAL, b"%d/%d" % (term, index))

    six_to_nine = [normal(2, i) for i in range(6, 10)]
    core.step(
        Message(MessageType.APPEND, "c", "a", 2, log_term=1, index=5, entries=six_to_nine, commit=7)
    )
    writing = core.ready()
    eight_on = [normal(3, i) for i in range(8, 12)]
    core.step(
        Message(MessageType.APPEND, "c", "b", 3, log_term=2, index=7, entries=eight_on, commit=7)
    )
    core.advance(writing)
    assert (core.log.stable, core.log.applied) == (7, 7)
    core.snapshot_taken(7, b"img")
    rd = core.ready()
    assert [(e.index, e.term) for e in rd.entries] == [(i, 3) for i in range(8, 12)]
    acks = [m.index for m in rd.persisted_messages if m.type is MessageType.APPEND_RESP]
    assert max(acks) == 11
