"""The Raft state machine: elections, replication, reads, transfers and membership.

Rules of this file:
- Sans-IO. Inputs are method calls (`tick`, `step`, `propose`, ...); outputs are collected and
  handed over in a Ready batch (see ready.py for the runtime's side of the contract).
- Deterministic: no clock, no global randomness; the only randomness is the injected `rng`.
- A message leaves in `Ready.messages` only if it promises nothing that is not yet durable
  (the leader's appends, heartbeats, TimeoutNow, ReadIndex answers). Everything sent by a
  follower or candidate — votes, acknowledgements — goes in `Ready.persisted_messages`.
- Section numbers refer to the Raft paper (§) and Ongaro's thesis (thesis §).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from . import quorum
from .config import Config
from .log import RaftLog
from .progress import Inflights, Progress, ProgressState
from .ready import Ready
from .types import (
    NO_TERM,
    ConfChange,
    ConfChangeKind,
    Entry,
    EntryType,
    HardState,
    Membership,
    Message,
    MessageType,
    NodeId,
    ReadState,
    Role,
    Snapshot,
    SnapshotMeta,
    SoftState,
)


class RaftError(Exception):
    """Base of the errors the core raises for a request it cannot take."""


class NotLeader(RaftError):
    def __init__(self, leader: NodeId | None):
        super().__init__(f"not the leader (leader: {leader or 'unknown'})")
        self.leader = leader


class ProposalDropped(RaftError):
    """The leader cannot take this proposal now (transfer, pending change, ...); retry later."""


@dataclass(slots=True)
class PersistentState:
    """What a runtime stored: the core is rebuilt from it after a restart."""

    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot = field(default_factory=Snapshot)
    entries: list[Entry] = field(default_factory=list)


def bootstrap_state(voters: list[NodeId]) -> PersistentState:
    """The state of a brand-new cluster's founding members: one entry adding each voter.

    Every founder may start from this same state, or only one of them (the others start empty
    and receive it from the first leader); either way the founding entries are identical.
    """
    entries = [
        Entry(1, n, EntryType.CONF_CHANGE, ConfChange(ConfChangeKind.ADD_VOTER, v).encode())
        for n, v in enumerate(sorted(voters), start=1)
    ]
    return PersistentState(HardState(term=1, commit=len(entries)), Snapshot(), entries)


@dataclass(slots=True)
class _PendingRead:
    round: int  # the heartbeat round that must be confirmed by a quorum
    index: int  # the commit index when the read arrived
    context: bytes
    requester: NodeId


class RaftCore:
    def __init__(
        self,
        config: Config,
        rng: random.Random,
        state: PersistentState | None = None,
        applied: int = 0,
    ):
        state = state or PersistentState()
        self.config = config
        self.id = config.id
        self._rng = rng
        hs = state.hard_state
        self.log = RaftLog(state.snapshot, list(state.entries), hs.commit, applied)
        self.term = hs.term
        self.vote = hs.vote
        self.role = Role.FOLLOWER
        self.leader: NodeId | None = None
        self.progress: dict[NodeId, Progress] = {}
        self._votes: dict[NodeId, bool] = {}
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_timeout = 0
        self.lead_transferee: NodeId | None = None
        # ReadIndex (§6.4): reads wait for a heartbeat round that a quorum confirms.
        self._read_round = 0  # newest round broadcast in this term
        self._reads: list[_PendingRead] = []  # in round order
        self._reads_unsent = False  # reads assigned to round _read_round + 1, not yet sent
        self._reads_before_commit: list[_PendingRead] = []  # wait for this term's first commit
        # Output buffers, drained by ready().
        self._msgs: list[Message] = []
        self._msgs_after_persist: list[Message] = []
        self._read_states: list[ReadState] = []
        self._broadcast_pending = False
        # A commit index followers have not been sent yet. It rides on the next append; only
        # if none goes out before the next tick is an append sent for it alone (an empty
        # append and its answer per follower: under load, half the messages otherwise).
        self._commit_unsent = False
        self._prev_hard = hs
        self._prev_soft = self.soft_state()
        self._in_ready = False
        self._reset_election_timer()

    # -- status -----------------------------------------------------------------------------

    def soft_state(self) -> SoftState:
        return SoftState(self.leader, self.role, self.term)

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    @property
    def membership(self) -> Membership:
        return self.log.membership()

    def promotable(self) -> bool:
        """Voters campaign; learners and removed nodes do not.

        Thesis §4.2.2: while the newest configuration entry is uncommitted, a node that was a
        voter before it still campaigns (its own vote only counts where it is a voter). A leader
        that proposed its own removal and then lost leadership must still be able to win, or
        the remaining voters, who may still need its vote, could never elect anyone.
        """
        if self.id in self.membership.voters:
            return True
        change = self.log.last_change_index()
        return change > self.log.committed and self.id in self.log.membership_at(change - 1).voters

    def _bug(self, name: str) -> bool:
        return name in self.config.deliberate_bugs

    # -- inputs ---------------------------------------------------------------------------

    def tick(self) -> None:
        if self.role is Role.LEADER:
            self._tick_leader()
            return
        self._election_elapsed += 1
        if self.promotable() and self._election_elapsed >= self._randomized_timeout:
            self.campaign()

    def _tick_leader(self) -> None:
        if self._commit_unsent:
            self._broadcast_pending = True  # no append carried the new commit since: send one
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        for pr in self.progress.values():
            pr.silent_ticks += 1
            pr.quiet_ticks += 1
        if self.config.check_quorum and not self._quorum_active():
            self._become_follower(self.term, None)
            return
        if self._election_elapsed >= self.config.election_tick:
            self._election_elapsed = 0
            # A transfer that has not completed within an election timeout is abandoned.
            self.lead_transferee = None
        if self._heartbeat_elapsed >= self.config.heartbeat_tick:
            self._heartbeat_elapsed = 0
            if self._reads:  # waiting reads need a round that every follower confirms
                self._broadcast_heartbeat()
        # A heartbeat goes only to a follower that nothing was sent to for a heartbeat
        # interval: an append resets its election timer just as well. Under load that saves
        # every heartbeat, its response, and the append the response would prompt.
        for peer, pr in self.progress.items():
            if peer != self.id and pr.quiet_ticks >= self.config.heartbeat_tick:
                self._send_heartbeat(peer, pr)

    def _quorum_active(self) -> bool:
        """CheckQuorum: heard from a quorum (counting ourselves) within an election timeout."""
        timeout = self.config.election_tick
        active = [p for p, pr in self.progress.items() if p == self.id or pr.silent_ticks < timeout]
        return quorum.has_quorum(self.membership.voters, active)

    def campaign(self, transfer: bool = False) -> None:
        """Start an election now: a PreVote round first unless `transfer` (TimeoutNow) says so."""
        self._campaign(pre_vote=self.config.pre_vote and not transfer, transfer=transfer)

    def _campaign(self, pre_vote: bool, transfer: bool) -> None:
        if not self.promotable():
            return
        if pre_vote:
            self._become_pre_candidate()
            kind, term = MessageType.PRE_VOTE, self.term + 1
        else:
            self._become_candidate()
            kind, term = MessageType.VOTE, self.term
        self._votes[self.id] = True
        if self._count_votes():
            return
        for peer in sorted(self.membership.voters - {self.id}):
            self._send(
                Message(
                    kind,
                    to=peer,
                    frm=self.id,
                    term=term,
                    index=self.log.last_index(),
                    log_term=self.log.last_term(),
                    transfer=transfer,
                )
            )

    def propose(self, data: bytes) -> tuple[int, int]:
        """Append a command. Returns its (index, term): it is committed if and when an entry
        with that term is applied at that index; another term there means it was lost."""
        return self._append_proposal(EntryType.NORMAL, data)

    def propose_conf_change(self, change: ConfChange) -> tuple[int, int]:
        """Propose one membership change (thesis §4.1: one at a time, in effect when appended).

        Refused unless this leader has committed an entry of its own term — the fix for the
        single-server change bug found in 2015 — and no other change is uncommitted.
        """
        self._check_can_propose()
        if not self._committed_in_term() and not self._bug("conf_change_before_term_commit"):
            raise ProposalDropped("the leader has not yet committed an entry of its term")
        if self.log.last_change_index() > self.log.committed and not self._bug(
            "conf_change_while_one_pending"
        ):
            raise ProposalDropped("another membership change is not yet committed")
        try:
            change.apply_to(self.membership)
        except ValueError as err:
            raise RaftError(f"invalid membership change: {err}") from None
        return self._append_proposal(EntryType.CONF_CHANGE, change.encode())

    def _check_can_propose(self) -> None:
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader)
        if self.lead_transferee is not None:
            raise ProposalDropped(f"leadership transfer to {self.lead_transferee} in progress")

    def _append_proposal(self, kind: EntryType, data: bytes) -> tuple[int, int]:
        self._check_can_propose()
        entry = Entry(self.term, self.log.last_index() + 1, kind, data)
        self._append_as_leader([entry])
        return entry.index, entry.term

    def read_index(self, context: bytes) -> None:
        """Ask for a linearizable read (§6.4); a ReadState with `context` comes back in a Ready.

        On a follower the request goes to the leader; with no known leader it is dropped and
        the caller retries after its own timeout.
        """
        if self.role is Role.LEADER:
            self._leader_read(_PendingRead(0, 0, context, self.id))
        elif self.leader is not None:
            self._send(
                Message(MessageType.READ_INDEX, self.leader, self.id, self.term, context=context)
            )

    def transfer_leadership(self, target: NodeId) -> None:
        """Thesis §3.10: catch `target` up, then tell it to campaign at once (TimeoutNow).

        Abandoned after an election timeout; proposals are refused meanwhile. Asked again
        for the same target, the transfer under way goes on (its deadline stays); asked for
        another, or for this leader itself, it is abandoned first (as etcd-raft does).
        """
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader)
        if self.lead_transferee == target:
            return
        if target != self.id and target not in self.membership.voters:
            raise RaftError(f"{target} is not a voter")
        self.lead_transferee = None
        if target == self.id:
            return
        self.lead_transferee = target
        self._election_elapsed = 0
        if self.progress[target].match == self.log.last_index():
            self._send_timeout_now(target)
        else:
            self._send_append(target)

    def snapshot_taken(self, index: int, data: bytes) -> None:
        """The runtime snapshotted its state machine at applied `index`; compact the log.

        Ignored when a snapshot received from the leader already covers `index`.
        """
        if index <= self.log.offset:
            return
        term = self.log.term(index)
        if term is None:
            raise ValueError(f"no entry at {index} to snapshot")
        meta = SnapshotMeta(index, term, self.log.membership_at(index))
        self.log.compact(Snapshot(meta, data))

    def report_unreachable(self, peer: NodeId) -> None:
        """The transport could not deliver to `peer`: stop streaming, probe again."""
        pr = self.progress.get(peer)
        if self.role is Role.LEADER and pr and pr.state is ProgressState.REPLICATE:
            pr.become_probe()

    def report_snapshot(self, peer: NodeId, ok: bool) -> None:
        """The transport finished sending a snapshot to `peer` (`ok`) or gave up."""
        pr = self.progress.get(peer)
        if self.role is not Role.LEADER or pr is None or pr.state is not ProgressState.SNAPSHOT:
            return
        if not ok:
            pr.pending_snapshot = 0
        # Either way wait for the follower's answer to a probe before sending more.
        pr.become_probe()
        pr.probe_sent = True

    # -- receiving ------------------------------------------------------------------------

    def step(self, m: Message) -> None:
        if m.to != self.id:
            return
        if m.term > self.term:
            if m.type in (MessageType.VOTE, MessageType.PRE_VOTE) and self._in_lease(m):
                return
            if m.type is MessageType.PRE_VOTE:
                pass  # answering a pre-vote changes nothing here
            elif m.type is MessageType.PRE_VOTE_RESP and not m.reject:
                pass  # a grant carries the term we would campaign in
            elif m.type in (MessageType.APPEND, MessageType.HEARTBEAT, MessageType.SNAPSHOT):
                self._become_follower(m.term, m.frm)
            else:
                self._become_follower(m.term, None)
        elif m.term < self.term:
            self._answer_stale(m)
            return
        if m.type in (MessageType.VOTE, MessageType.PRE_VOTE):
            self._handle_vote_request(m)
        elif self.role is Role.LEADER:
            self._step_leader(m)
        elif self.role in (Role.CANDIDATE, Role.PRE_CANDIDATE):
            self._step_candidate(m)
        else:
            self._step_follower(m)

    def _in_lease(self, m: Message) -> bool:
        """CheckQuorum: a node that heard from a leader within the election timeout ignores
        vote requests, so a partitioned node rejoining cannot depose a healthy leader."""
        return (
            self.config.check_quorum
            and not m.transfer
            and self.leader is not None
            and self._election_elapsed < self.config.election_tick
        )

    def _answer_stale(self, m: Message) -> None:
        if m.type in (MessageType.APPEND, MessageType.HEARTBEAT) and (
            self.config.check_quorum or self.config.pre_vote
        ):
            # A deposed leader learns the newer term from this answer and steps down. Without
            # it, a node whose term ran ahead could be ignored forever (leases, pre-votes).
            self._send(Message(MessageType.APPEND_RESP, m.frm, self.id, self.term))
        elif m.type is MessageType.PRE_VOTE:
            self._send(Message(MessageType.PRE_VOTE_RESP, m.frm, self.id, self.term, reject=True))

    def _handle_vote_request(self, m: Message) -> None:
        pre = m.type is MessageType.PRE_VOTE
        resp = MessageType.PRE_VOTE_RESP if pre else MessageType.VOTE_RESP
        free = self.vote == m.frm or (self.vote is None and self.leader is None)
        can_vote = free or (pre and m.term > self.term)
        up_to_date = self._bug("vote_without_log_check") or self.log.is_up_to_date(
            m.index, m.log_term
        )
        if can_vote and up_to_date:
            # A pre-vote grant echoes the future term so the pre-candidate can count it.
            self._send(Message(resp, m.frm, self.id, m.term))
            if not pre:
                self._election_elapsed = 0
                self.vote = m.frm
        else:
            self._send(Message(resp, m.frm, self.id, self.term, reject=True))

    def _step_follower(self, m: Message) -> None:
        if m.type in (MessageType.APPEND, MessageType.HEARTBEAT, MessageType.SNAPSHOT):
            self._election_elapsed = 0
            self.leader = m.frm
            self._handle_from_leader(m)
        elif m.type is MessageType.TIMEOUT_NOW:
            self.campaign(transfer=True)
        elif m.type is MessageType.READ_INDEX_RESP:
            self._read_states.append(ReadState(m.context, m.index))

    def _step_candidate(self, m: Message) -> None:
        if m.type in (MessageType.APPEND, MessageType.HEARTBEAT, MessageType.SNAPSHOT):
            self._become_follower(m.term, m.frm)
            self._handle_from_leader(m)
            return
        if m.type is MessageType.TIMEOUT_NOW and self.role is Role.PRE_CANDIDATE:
            # The leader hands over to us while our timer had just fired: its followers keep
            # their lease, so our pre-vote would fail and the transfer with it.
            self.campaign(transfer=True)
            return
        expected = (
            MessageType.PRE_VOTE_RESP if self.role is Role.PRE_CANDIDATE else MessageType.VOTE_RESP
        )
        if m.type is expected:
            granted = not m.reject
            if granted and expected is MessageType.PRE_VOTE_RESP and m.term != self.term + 1:
                return  # a late grant of an earlier round, for another term than this one asks
            self._votes[m.frm] = granted
            self._count_votes()

    def _count_votes(self) -> bool:
        """Act on the election's outcome; returns whether it is decided."""
        result = quorum.vote_result(self.membership.voters, self._votes)
        if result is quorum.VoteResult.WON:
            if self.role is Role.PRE_CANDIDATE:
                self._campaign(pre_vote=False, transfer=False)  # now the real election
            else:
                self._become_leader()
            return True
        if result is quorum.VoteResult.LOST:
            self._become_follower(self.term, None)
            return True
        return False

    def _handle_from_leader(self, m: Message) -> None:
        if m.type is MessageType.APPEND:
            self._handle_append(m)
        elif m.type is MessageType.HEARTBEAT:
            # m.commit never exceeds what this follower is known to hold (see heartbeats).
            self.log.commit_to(min(m.commit, self.log.last_index()))
            self._send(
                Message(
                    MessageType.HEARTBEAT_RESP, m.frm, self.id, self.term, read_round=m.read_round
                )
            )
        else:
            self._handle_snapshot(m)

    def _handle_append(self, m: Message) -> None:
        if m.index < self.log.committed:
            # Everything up to our commit index matches the leader already (§5.3).
            self._ack(m.frm, self.log.committed)
            return
        truncations = self.log.truncations
        prev_term = m.log_term
        if self._bug("append_without_prev_check"):
            prev_term = self.log.term(m.index) or prev_term  # whatever is there passes
        last = self.log.maybe_append(m.index, prev_term, m.entries)
        if last is not None:
            if self.log.truncations != truncations:
                self._take_back_acks()
            self.log.commit_to(min(m.commit, last))
            self._ack(m.frm, last)
            return
        # Fast backtracking: point the leader at our last entry that may still match.
        hint = self.log.find_conflict_by_term(m.index, m.log_term)
        self._send(
            Message(
                MessageType.APPEND_RESP,
                m.frm,
                self.id,
                self.term,
                index=m.index,
                reject=True,
                hint_index=hint,
                hint_term=self.log.term(hint) or NO_TERM,
            )
        )

    def _ack(self, to: NodeId, index: int) -> None:
        # `log_term` names the entry acknowledged (index alone names whatever is there when
        # the ack is read), so that _take_back_acks, and checkers, can tell it.
        term = self.log.term(index)
        assert term is not None  # an ack names the last entry appended, or the commit index
        ack = Message(MessageType.APPEND_RESP, to, self.id, self.term, index=index, log_term=term)
        if self._bug("ack_before_durable"):
            self._msgs.append(ack)
            return
        self._send(ack)

    def _take_back_acks(self) -> None:
        """A leader's entries, or its snapshot, replaced some of ours: an ack still waiting for
        the write that stores what it names must not leave if that entry is gone, for the next
        write stores the replacement instead (an ack promises what is durable: ready.py). Acks
        already handed out in a Ready are true: that Ready's write stores what they name."""
        self._msgs_after_persist = [
            m for m in self._msgs_after_persist
            if m.type is not MessageType.APPEND_RESP or m.reject
            or self.log.matches(m.index, m.log_term)
        ]  # fmt: skip

    def _handle_snapshot(self, m: Message) -> None:
        snap = m.snapshot
        if snap is None or snap.meta.index <= self.log.committed:
            self._ack(m.frm, self.log.committed)
            return
        held = self.log.term(snap.meta.index)
        if held == snap.meta.term or (
            held is not None and self._bug("snapshot_keeps_conflicting_log")
        ):
            # We already hold that prefix: just learn it is committed and keep the rest.
            self.log.commit_to(snap.meta.index)
        else:
            self.log.restore(snap)
            # The next write stores the snapshot instead of our entries: acks waiting for it
            # may name entries it no longer stores.
            self._take_back_acks()
        self._ack(m.frm, self.log.committed)

    # -- leader ---------------------------------------------------------------------------

    def _step_leader(self, m: Message) -> None:
        pr = self.progress.get(m.frm)
        if m.type is MessageType.READ_INDEX:
            self._leader_read(_PendingRead(0, 0, m.context, m.frm))
        if pr is None:
            return
        if m.type is MessageType.APPEND_RESP:
            pr.silent_ticks, pr.answered = 0, True
            self._handle_append_resp(m, pr)
        elif m.type is MessageType.HEARTBEAT_RESP:
            pr.silent_ticks, pr.answered = 0, True
            self._handle_heartbeat_resp(m, pr)

    def _handle_append_resp(self, m: Message, pr: Progress) -> None:
        if m.reject:
            hint = m.hint_index
            if m.hint_term != NO_TERM:
                hint = self.log.find_conflict_by_term(m.hint_index, m.hint_term)
            if pr.maybe_decrease_to(m.index, hint):
                if pr.state is ProgressState.REPLICATE:
                    pr.become_probe()
                self._send_append(m.frm)
            return
        was_paused = pr.paused()
        # A probe answered at the index already matched (an append carrying only the commit)
        # still tells where the logs match: replicate, or the follower stays paused.
        probe_answered = pr.state is ProgressState.PROBE and m.index == pr.match
        if not pr.maybe_update(m.index) and not probe_answered:
            return
        if pr.state is ProgressState.REPLICATE:
            pr.inflights.free_to(m.index)
        elif pr.state is ProgressState.PROBE or pr.match >= pr.pending_snapshot:
            pr.become_replicate()  # the logs now match up to pr.match
        if self._maybe_commit():
            self._commit_unsent = True
        if was_paused:
            self._send_append(m.frm)
        # Stream whatever else the window allows.
        while self._send_append(m.frm, allow_empty=False):
            pass
        if m.frm == self.lead_transferee and pr.match == self.log.last_index():
            self._send_timeout_now(m.frm)

    def _handle_heartbeat_resp(self, m: Message, pr: Progress) -> None:
        if pr.state is ProgressState.REPLICATE and pr.inflights.full():
            # A whole heartbeat interval with the window full: appends were probably lost.
            pr.become_probe()
        pr.probe_sent = False
        if pr.match < self.log.last_index():
            self._send_append(m.frm)
        if m.read_round > pr.read_round:
            pr.read_round = m.read_round
            self._release_reads()

    def _append_as_leader(self, entries: list[Entry]) -> None:
        changes_before = self.log.last_change_index()
        self.log.append(entries)
        if self.log.last_change_index() != changes_before:
            self._membership_changed()
        self._broadcast_pending = True  # sent at ready(): proposals between Readies batch up

    def _maybe_commit(self) -> bool:
        """§5.4.2: commit the highest index stored on a quorum, if it is of this term."""
        acked = {p: pr.match for p, pr in self.progress.items()}
        index = quorum.quorum_index(self.membership.voters, acked)
        if index <= self.log.committed:
            return False
        if self.log.term(index) != self.term and not self._bug("commit_old_term_by_counting"):
            return False
        had_term_commit = self._committed_in_term()
        self.log.commit_to(index)
        if not had_term_commit and self._committed_in_term():
            waiting, self._reads_before_commit = self._reads_before_commit, []
            for read in waiting:
                self._leader_read(read)
        self._step_down_if_removed()
        return True

    def _committed_in_term(self) -> bool:
        """Has this leader committed an entry of its own term? Until then its commit index
        may lag the cluster's (§6.4), and it may not change the membership (thesis §4.1)."""
        return self.log.term(self.log.committed) == self.term

    def _step_down_if_removed(self) -> None:
        """A leader removed from the membership leads until the removal commits, then leaves."""
        if (
            self.role is Role.LEADER
            and self.id not in self.membership
            and self.log.last_change_index() <= self.log.committed
        ):
            self._become_follower(self.term, None)

    def _send_append(self, to: NodeId, allow_empty: bool = True) -> bool:
        pr = self.progress.get(to)  # gone if a commit just removed `to`, or us
        if pr is None or pr.paused():
            return False
        prev = pr.next - 1
        prev_term = self.log.term(prev)
        if prev_term is None:
            return self._send_snapshot(to, pr)
        last = self.log.last_index()
        hi = min(last + 1, pr.next + self.config.max_entries_per_msg)
        entries = []
        if pr.next <= last:
            entries = self.log.slice(pr.next, hi, self.config.max_bytes_per_msg)
        if not entries and not allow_empty:
            return False
        self._send(
            Message(
                MessageType.APPEND,
                to,
                self.id,
                self.term,
                index=prev,
                log_term=prev_term,
                entries=entries,
                commit=self.log.committed,
            )
        )
        pr.quiet_ticks = 0
        if entries:
            pr.sent_entries(entries[-1].index, sum(e.size() for e in entries))
        elif pr.state is ProgressState.PROBE:
            pr.probe_sent = True
        return True

    def _send_snapshot(self, to: NodeId, pr: Progress) -> bool:
        snap = self.log.snapshot
        pr.become_snapshot(snap.meta.index)
        self._send(Message(MessageType.SNAPSHOT, to, self.id, self.term, snapshot=snap))
        return True

    def _send_timeout_now(self, to: NodeId) -> None:
        self._send(Message(MessageType.TIMEOUT_NOW, to, self.id, self.term))

    def _broadcast_heartbeat(self) -> None:
        """Heartbeats carry the newest ReadIndex round, so every round of them confirms it."""
        for peer, pr in self.progress.items():
            if peer != self.id:
                self._send_heartbeat(peer, pr)

    def _send_heartbeat(self, to: NodeId, pr: Progress) -> None:
        pr.quiet_ticks = 0
        self._send(
            Message(
                MessageType.HEARTBEAT,
                to,
                self.id,
                self.term,
                commit=min(pr.match, self.log.committed),
                read_round=self._read_round,
            )
        )

    # -- ReadIndex ------------------------------------------------------------------------

    def _leader_read(self, read: _PendingRead) -> None:
        if not self._committed_in_term() and not self._bug("read_index_before_term_commit"):
            # Until this term commits an entry, our commit index may lag the real one.
            self._reads_before_commit.append(read)
            return
        read.index = self.log.committed
        read.round = self._read_round + 1
        self._reads.append(read)
        self._reads_unsent = True
        self._release_reads()  # a single voter needs no round

    def _release_reads(self) -> None:
        rounds = {p: pr.read_round for p, pr in self.progress.items()}
        # Our own vote counts for every round up to the next one we will send.
        rounds[self.id] = self._read_round + 1
        confirmed = quorum.quorum_index(self.membership.voters, rounds)
        if self._bug("read_index_without_quorum_round"):
            confirmed = self._read_round + 1
        while self._reads and self._reads[0].round <= confirmed:
            read = self._reads.pop(0)
            if read.requester == self.id:
                self._read_states.append(ReadState(read.context, read.index))
            else:
                self._send(
                    Message(
                        MessageType.READ_INDEX_RESP,
                        read.requester,
                        self.id,
                        self.term,
                        index=read.index,
                        context=read.context,
                    )
                )

    # -- membership -----------------------------------------------------------------------

    def _membership_changed(self) -> None:
        """Keep one Progress per member while leading; quorums follow the new membership."""
        if self.role is not Role.LEADER:
            return
        members = self.membership.members() | {self.id}
        for gone in sorted(set(self.progress) - members):
            del self.progress[gone]
            if gone == self.lead_transferee:
                self.lead_transferee = None
        # Sorted, here and below: the order messages are sent in must not depend on hashing.
        for peer in sorted(members - set(self.progress)):
            self.progress[peer] = self._new_progress()
        self._maybe_commit()
        self._release_reads()  # fewer voters may already confirm a waiting read

    def _new_progress(self) -> Progress:
        c = self.config
        return Progress(
            match=0,
            next=self.log.last_index() + 1,
            inflights=Inflights(c.max_inflight_msgs, c.max_inflight_bytes),
        )

    # -- role changes ---------------------------------------------------------------------

    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = None
        self.leader = None
        self._votes = {}
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._reset_election_timer()
        self.lead_transferee = None
        self.progress = {}
        # Pending reads die with the leadership; their callers time out and retry.
        self._reads = []
        self._reads_before_commit = []
        self._reads_unsent = False
        self._commit_unsent = False
        self._read_round = 0

    def _reset_election_timer(self) -> None:
        et = self.config.election_tick
        self._randomized_timeout = et + self._rng.randrange(et)

    def _become_follower(self, term: int, leader: NodeId | None) -> None:
        self._reset(term)
        self.role = Role.FOLLOWER
        self.leader = leader

    def _become_pre_candidate(self) -> None:
        # Term and vote stay as they are: a pre-vote must not disturb anyone, us included.
        self._reset(self.term)
        self.role = Role.PRE_CANDIDATE

    def _become_candidate(self) -> None:
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.role = Role.LEADER
        self.leader = self.id
        for peer in sorted(self.membership.members() | {self.id}):
            self.progress[peer] = self._new_progress()
        own = self.progress[self.id]
        own.become_replicate()
        own.match = self.log.stable  # our own entries count once durable (see advance)
        # §5.4.2 / §8: commit an entry of our own term as soon as possible. It names us, so
        # every replica applying it learns who led this term (events: leader_changed).
        noop = Entry(self.term, self.log.last_index() + 1, EntryType.NOOP, self.id.encode())
        self._append_as_leader([noop])

    # -- output ---------------------------------------------------------------------------

    def _send(self, m: Message) -> None:
        (self._msgs if self.role is Role.LEADER else self._msgs_after_persist).append(m)

    def _flush(self) -> None:
        """Sends deferred so that work arriving between two Readies shares one message."""
        if self.role is not Role.LEADER:
            return
        if self._broadcast_pending:
            self._broadcast_pending = False
            self._commit_unsent = False  # these appends carry it
            for peer in self.progress:
                # The first append may be empty (it carries the commit index); then stream
                # whatever else the follower's window allows.
                if peer != self.id and self._send_append(peer):
                    while self._send_append(peer, allow_empty=False):
                        pass
        if self._reads_unsent:
            self._reads_unsent = False
            self._read_round += 1
            self._broadcast_heartbeat()

    def has_ready(self) -> bool:
        return bool(
            self._msgs
            or self._msgs_after_persist
            or self._read_states
            or (self.role is Role.LEADER and (self._broadcast_pending or self._reads_unsent))
            or self.soft_state() != self._prev_soft
            or self.hard_state() != self._prev_hard
            or self.log.pending_snapshot is not None
            or self.log.stable < self.log.last_index()
            or self.log.has_unapplied()
        )

    def ready(self) -> Ready:
        if self._in_ready:
            raise AssertionError("ready() called again before advance()")
        self._flush()
        soft, hard = self.soft_state(), self.hard_state()
        rd = Ready(
            soft_state=soft if soft != self._prev_soft else None,
            hard_state=hard if hard != self._prev_hard else None,
            snapshot=self.log.pending_snapshot,
            entries=self.log.unstable_entries(),
            messages=self._msgs,
            persisted_messages=self._msgs_after_persist,
            committed_entries=self.log.unapplied_entries(),
            read_states=self._read_states,
        )
        prev = self._prev_hard
        if (hard.term, hard.vote) != (prev.term, prev.vote) and not self._bug(
            "send_before_term_durable"
        ):
            # A message may carry a term only once that term is durable. (A single voter is
            # elected within one Ready: had its appends left before its write and it crashed,
            # it could be elected again in the same term and put other entries at the same
            # indexes, which its learners would take for the ones they hold.)
            rd.persisted_messages = rd.messages + rd.persisted_messages
            rd.messages = []
        if rd.hard_state is not None and self._bug("forget_vote_persist"):
            rd.hard_state = HardState(hard.term, None, hard.commit)
        self._prev_soft, self._prev_hard = soft, hard
        self._msgs, self._msgs_after_persist, self._read_states = [], [], []
        self._in_ready = True
        return rd

    def advance(self, rd: Ready) -> None:
        """The runtime has done everything `rd` asked (see ready.py)."""
        self._in_ready = False
        if rd.snapshot is not None and self.log.pending_snapshot is rd.snapshot:
            self.log.pending_snapshot = None
        if rd.snapshot is not None:
            self.log.applied = max(self.log.applied, rd.snapshot.meta.index)
        if rd.entries:
            self.log.stable_to(rd.entries)
            own = self.progress.get(self.id)
            if self.role is Role.LEADER and own is not None:
                own.maybe_update(self.log.stable)
                if self._maybe_commit():
                    self._commit_unsent = True
        if rd.committed_entries:
            self.log.applied = max(self.log.applied, rd.committed_entries[-1].index)
