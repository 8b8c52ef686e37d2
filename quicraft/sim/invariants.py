"""Raft's safety properties (Figure 3 of the paper), checked as the simulation runs.

Each property is checked incrementally at the moment it could first be broken, so a
violation is reported at the step that caused it:

- election safety: at most one leader per term (and no voter grants two votes in one term);
- leader append-only: a leader never removes or changes entries of its own log;
- log matching: an entry (index, term) is the same everywhere and follows the same term;
- leader completeness: a new leader holds every entry committed in an earlier term;
- leader commit rule: a leader commits only up to an entry of its own term (Figure 2);
- state machine safety: no two different entries are committed or applied at one index;
- monotonic: term and commit index never decrease in memory, nor on disk across restarts;
- durable term: no message but a PreVote carries a term its sender has not stored yet;
- durable ack: an acknowledgement names an entry its sender has stored, with the same term.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from quicraft.core import Entry, EntryType, HardState, Message, MessageType, NodeId, Ready, Role

from .node import SimNode

_PRE_VOTES = frozenset({MessageType.PRE_VOTE, MessageType.PRE_VOTE_RESP})


class Violation(Exception):
    def __init__(self, prop: str, detail: str):
        super().__init__(prop, detail)  # both in args, so it pickles across processes
        self.prop = prop
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.prop}: {self.detail}"


@dataclass(slots=True)
class _Seen:
    term: int = 0
    commit: int = 0
    leader_last: tuple[int, int, int] | None = None  # (term, last index, its entry term)


@dataclass(slots=True)
class SafetyChecker:
    leaders: dict[int, NodeId] = field(default_factory=dict)
    votes: dict[tuple[NodeId, int], NodeId] = field(default_factory=dict)
    # (index, term) -> (type, data, term of the entry before it)
    entries: dict[tuple[int, int], tuple[EntryType, bytes, int]] = field(default_factory=dict)
    committed: dict[int, Entry] = field(default_factory=dict)
    # index -> the term of the node that first saw the entry committed: the term it was
    # committed in, or later (a commit is known first by the leader that made it).
    commit_terms: dict[int, int] = field(default_factory=dict)
    durable: dict[NodeId, HardState] = field(default_factory=dict)
    memory: dict[NodeId, _Seen] = field(default_factory=dict)

    def restarted(self, node: NodeId) -> None:
        self.memory.pop(node, None)

    def after_step(self, node: SimNode) -> None:
        core = node.core
        seen = self.memory.setdefault(node.id, _Seen(core.term, core.log.committed))
        if core.term < seen.term:
            raise Violation("monotonic", f"{node.id} term went from {seen.term} to {core.term}")
        if core.log.committed < seen.commit:
            raise Violation(
                "monotonic", f"{node.id} commit went from {seen.commit} to {core.log.committed}"
            )
        seen.term = core.term
        if core.log.committed > seen.commit:
            if core.role is Role.LEADER:
                self._check_commit_rule(node)
            self._record_commits(node, seen.commit + 1, core.log.committed)
            seen.commit = core.log.committed
        if core.role is Role.LEADER:
            self._check_leader(node, seen)
        else:
            seen.leader_last = None

    def _check_leader(self, node: SimNode, seen: _Seen) -> None:
        core, log = node.core, node.core.log
        holder = self.leaders.setdefault(core.term, node.id)
        if holder != node.id:
            raise Violation("election safety", f"{holder} and {node.id} both lead term {core.term}")
        last = seen.leader_last
        if last is None or last[0] != core.term:
            self._check_completeness(node)
        elif log.last_index() < last[1] or log.term(last[1]) not in (last[2], None):
            raise Violation(
                "leader append-only",
                f"{node.id} (term {core.term}) lost or changed entry {last[1]}",
            )
        seen.leader_last = (core.term, log.last_index(), log.last_term())

    def _check_commit_rule(self, node: SimNode) -> None:
        """A leader moves its commit index only onto an entry of its own term (Figure 2; the
        entries before it are committed with it). Counting the replicas of an older term's
        entry is Figure 8's bug, which the other checks see only once it has lost a write."""
        core = node.core
        at = core.log.term(core.log.committed)
        if at != core.term:
            raise Violation(
                "leader commit rule",
                f"{node.id} (leader of term {core.term}) committed up to entry "
                f"{core.log.committed} of term {at}",
            )

    def _check_completeness(self, node: SimNode) -> None:
        """Only leaders of later terms must hold a committed entry: a candidate of an older
        term may still win it late (its votes delayed, or itself paused) and lack the entry."""
        log, term = node.core.log, node.core.term
        for index, entry in self.committed.items():
            if term <= self.commit_terms[index]:
                continue
            if index > log.offset and log.term(index) != entry.term:
                raise Violation(
                    "leader completeness",
                    f"{node.id} leads term {node.core.term} without committed entry "
                    f"{index} (term {entry.term}); it has term {log.term(index)} there",
                )

    def _record_commits(self, node: SimNode, lo: int, hi: int) -> None:
        log = node.core.log
        for index in range(max(lo, log.first_index()), hi + 1):
            entry = log.entries[index - log.offset - 1]
            self._commit(node.id, entry, node.core.term)

    def _commit(self, node: NodeId, entry: Entry, term: int) -> None:
        self.commit_terms[entry.index] = min(term, self.commit_terms.get(entry.index, term))
        known = self.committed.setdefault(entry.index, entry)
        if known != entry:
            raise Violation(
                "state machine safety",
                f"{node} has entry {entry.index} (term {entry.term}) committed, but "
                f"(term {known.term}) was committed there before",
            )

    def on_ready(self, node: SimNode, rd: Ready) -> None:
        log = node.core.log
        for entry in rd.entries:
            prev = log.term(entry.index - 1)
            assert prev is not None
            shape = (entry.type, entry.data, prev)
            if self.entries.setdefault((entry.index, entry.term), shape) != shape:
                raise Violation(
                    "log matching",
                    f"{node.id} has a different entry ({entry.index}, term {entry.term})",
                )

    def on_send(self, node: SimNode, messages: list[Message]) -> None:
        """Called as `node`'s messages actually leave (a crash can stop persisted_messages)."""
        durable_term = node.durable.hard_state.term
        stored = node.durable.last_index()
        for m in messages:
            # A PreVote asks about a term nobody has entered; everything else speaks for a
            # term the sender has stored, or a crash could make it speak twice in that term.
            if m.term > durable_term and m.type not in _PRE_VOTES:
                raise Violation(
                    "durable term",
                    f"{m.frm} sent {m.type.name} of term {m.term} with term {durable_term} stored",
                )
            # An acknowledgement promises that its sender stored the log up to its index: the
            # entry it names (index, log_term), which vouches for all before it. (Not the
            # entry the sender holds there now: a newer leader may have replaced it in memory
            # while the write that stores the named one went on.)
            if m.type is MessageType.APPEND_RESP and not m.reject:
                if m.index > stored:
                    raise Violation(
                        "durable ack",
                        f"{m.frm} acknowledged {m.index} with its log stored to {stored}",
                    )
                kept = node.durable.term_at(m.index)
                if kept is not None and kept != m.log_term:
                    raise Violation(
                        "durable ack",
                        f"{m.frm} acknowledged {m.index} of term {m.log_term}, stored of term "
                        f"{kept}",
                    )
            # A candidate asking for votes has voted for itself in that term.
            chosen = m.frm if m.type is MessageType.VOTE else m.to
            if m.type is MessageType.VOTE or (m.type is MessageType.VOTE_RESP and not m.reject):
                voted = self.votes.setdefault((m.frm, m.term), chosen)
                if voted != chosen:
                    raise Violation(
                        "election safety",
                        f"{m.frm} voted for {voted} and {chosen} in term {m.term}",
                    )

    def on_persist(self, node: NodeId, hs: HardState) -> None:
        before = self.durable.get(node, HardState())
        if hs.term < before.term or hs.commit < before.commit:
            raise Violation("monotonic", f"{node} stored {hs} after {before}")
        self.durable[node] = hs

    def on_apply(self, node: SimNode, entry: Entry) -> None:
        self._commit(node.id, entry, node.core.term)
