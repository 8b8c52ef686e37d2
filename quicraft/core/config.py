"""Settings of one Raft core. Times are in ticks; the runtime decides how long a tick is."""

from __future__ import annotations

from dataclasses import dataclass

from .types import NodeId

#: Deliberate protocol bugs, switched on only by tests that prove the simulator catches them.
DELIBERATE_BUGS = frozenset(
    {
        "vote_without_log_check",  # grant votes without the §5.4.1 up-to-date check
        "commit_old_term_by_counting",  # commit by replica count alone, ignoring §5.4.2
        "forget_vote_persist",  # hand the runtime a hard state without the vote
        "read_index_before_term_commit",  # serve ReadIndex before the term's first commit
        "read_index_without_quorum_round",  # answer ReadIndex without a heartbeat round
        "send_before_term_durable",  # let a leader's messages leave before its new term is stored
        "conf_change_before_term_commit",  # propose a member change before the term commits
        "conf_change_while_one_pending",  # propose a member change while one is uncommitted
        "append_without_prev_check",  # take entries after any entry at the leader's prev index
        "ack_before_durable",  # let a follower's acks leave before its write stores the entries
        "snapshot_keeps_conflicting_log",  # keep our log under a snapshot whatever its term there
    }
)


@dataclass(frozen=True, slots=True)
class Config:
    id: NodeId
    #: A follower that hears nothing for a random time in [election_tick, 2 * election_tick)
    #: starts an election; a CheckQuorum leader checks its quorum every election_tick.
    election_tick: int = 10
    #: A leader sends heartbeats every heartbeat_tick. Must be below election_tick.
    heartbeat_tick: int = 1
    #: Batching: one AppendEntries carries at most this many entries and about this many bytes.
    max_entries_per_msg: int = 512
    max_bytes_per_msg: int = 1 << 20
    #: Pipelining: AppendEntries in flight to one follower, by count and by bytes.
    max_inflight_msgs: int = 256
    max_inflight_bytes: int = 32 << 20
    #: Thesis §9.6: ask for votes without disturbing anyone before starting a real election.
    pre_vote: bool = True
    #: A leader steps down when it has not heard from a quorum within an election timeout, and
    #: a node that recently heard from a leader ignores vote requests (the leader lease).
    check_quorum: bool = True
    #: Only for tests: names from DELIBERATE_BUGS.
    deliberate_bugs: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.heartbeat_tick < 1 or self.election_tick <= self.heartbeat_tick:
            raise ValueError("need 1 <= heartbeat_tick < election_tick")
        if self.max_entries_per_msg < 1 or self.max_inflight_msgs < 1:
            raise ValueError("batch and window sizes must be at least 1")
        unknown = self.deliberate_bugs - DELIBERATE_BUGS
        if unknown:
            raise ValueError(f"unknown deliberate bugs: {sorted(unknown)}")
