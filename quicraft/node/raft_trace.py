"""The spans of one Raft runtime (runtime.py calls in here only while tracing is on).

One traced write on the leader, under the client request's span (service.py):

    raft.commit       proposed -> committed (applied at once after)
      raft.persist    the leader's write of the batch with the entry
      raft.replicate  one per follower: the AppendEntries with the entry -> that follower's ack
        raft.append   on the follower: received -> its answer sent
          raft.persist  the follower's write of the batch
    raft.apply        the state machine applies the entry

Rules of this file:
- A batch (one write, one AppendEntries) serves many requests: its span is the child of the
  first traced request it serves and links to the others, so every request's trace shows it.
- A span this file starts is ended by it, whatever happens: a follower that never answers, a
  leader that steps down, a node that stops (`close`). Nothing waits on a span.
- Elections are traces of their own: raft.election with raft.prevote and raft.vote phases on
  the candidate, and raft.vote.answer on each voter (child of the phase, through "tp").
"""

from __future__ import annotations

from collections import defaultdict, deque

from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from quicraft.core import Message, MessageType, NodeId, Ready, Role, SoftState
from quicraft.telemetry import Tracing, traceparent

#: Replicate spans kept per follower; beyond this the oldest ends unanswered.
MAX_REPLICATING = 1024

#: Each kind of vote request, and the kind of its answer.
_ANSWER_TO = {
    MessageType.PRE_VOTE: MessageType.PRE_VOTE_RESP,
    MessageType.VOTE: MessageType.VOTE_RESP,
}


class RaftTrace:
    def __init__(self, tracing: Tracing):
        self._tracing = tracing
        #: index -> (the request's span, raft.commit) of each traced proposal not yet applied.
        self._proposals: dict[int, tuple[Span, Span]] = {}
        #: Spans the next Ready serves: commit spans (leader) and append spans (follower),
        #: and the appends it answers; moved to _served and _answering when it is taken.
        self._unwritten: list[Span] = []
        self._appends: list[Span] = []
        self._served: list[Span] = []
        self._answering: list[Span] = []
        self._replicating: defaultdict[NodeId, deque[tuple[int, Span]]] = defaultdict(deque)
        self._vote_answers: dict[tuple[NodeId, MessageType], Span] = {}
        self._election: Span | None = None
        self._phase: Span | None = None

    # -- a write ----------------------------------------------------------------------------

    def proposed(self, index: int, request: Span, term: int) -> None:
        commit = self._tracing.span(
            "raft.commit", request, attributes={"raft.index": index, "raft.term": term}
        )
        self._proposals[index] = (request, commit)
        self._unwritten.append(commit)

    def applying(self, index: int) -> Span | None:
        """The entry at `index` is committed: its commit span ends, its apply span starts."""
        traced = self._proposals.pop(index, None)
        if traced is None:
            return None
        request, commit = traced
        commit.end()
        return self._tracing.span("raft.apply", request, attributes={"raft.index": index})

    def lost(self, index: int, error: BaseException) -> None:
        """The proposal at `index` ended without being applied here."""
        traced = self._proposals.pop(index, None)
        if traced is not None:
            _fail(traced[1], str(error))

    def taken(self, rd: Ready) -> None:
        """`rd` was taken from the core: it holds everything proposed and received so far.
        A new role counts from here, before the Ready's votes are sent."""
        if rd.soft_state is not None:
            self._soft_state(rd.soft_state)
        self._served, self._unwritten = self._unwritten, []
        self._answering, self._appends = self._appends, []

    def writing(self, rd: Ready) -> Span | None:
        """The span of the taken Ready's write: child of the first request it serves."""
        served, self._served = self._served, []
        if not served:
            return None
        return self._tracing.span(
            "raft.persist",
            served[0],
            links=served[1:],
            attributes={"raft.entries": len(rd.entries)},
        )

    def answered(self) -> None:
        """This Ready's messages are sent: the appends it answers are done."""
        for span in self._answering:
            span.end()
        self._answering = []

    def span(self, name: str, index: int, parent: Context | None = None) -> Span:
        """A span of work on a snapshot at `index` (a trace of its own unless `parent`)."""
        return self._tracing.span(name, parent, attributes={"raft.index": index})

    # -- messages ---------------------------------------------------------------------------

    def sending(self, m: Message) -> str | None:
        """The "tp" for `m`: the trace its receiver's spans belong to (None: untraced)."""
        if m.type is MessageType.APPEND and m.entries:
            return self._replicate(m)
        if m.type in _ANSWER_TO and self._phase is not None:
            return traceparent(self._phase)
        if m.type in _ANSWER_TO.values():
            answer = self._vote_answers.pop((m.to, m.type), None)
            if answer is not None:
                answer.set_attribute("raft.granted", not m.reject)
                answer.end()
        return None

    def _replicate(self, m: Message) -> str | None:
        served = [p[1] for e in m.entries if (p := self._proposals.get(e.index)) is not None]
        if not served:
            return None
        last = m.entries[-1].index
        span = self._tracing.span(
            "raft.replicate",
            served[0],
            kind=SpanKind.CLIENT,
            links=served[1:],
            attributes={"raft.peer": m.to, "raft.entries": len(m.entries), "raft.index": last},
        )
        pending = self._replicating[m.to]
        if len(pending) >= MAX_REPLICATING:
            _fail(pending.popleft()[1], "too many unanswered appends")
        pending.append((last, span))
        return traceparent(span)

    def received(self, m: Message, parent: Context | None) -> None:
        """A message arrived, with the trace context it came with (if any)."""
        if m.type is MessageType.APPEND_RESP:
            self._acknowledged(m)
        elif parent is None:
            return
        elif m.type is MessageType.APPEND and m.entries:
            span = self._tracing.span(
                "raft.append",
                parent,
                kind=SpanKind.SERVER,
                attributes={"raft.leader": m.frm, "raft.entries": len(m.entries)},
            )
            self._unwritten.append(span)
            self._appends.append(span)
        elif m.type in _ANSWER_TO:
            answer = _ANSWER_TO[m.type]
            replaced = self._vote_answers.pop((m.frm, answer), None)
            if replaced is not None:
                _fail(replaced, "not answered")
            self._vote_answers[(m.frm, answer)] = self._tracing.span(
                "raft.vote.answer",
                parent,
                kind=SpanKind.SERVER,
                attributes={
                    "raft.candidate": m.frm,
                    "raft.pre_vote": m.type is MessageType.PRE_VOTE,
                },
            )

    def _acknowledged(self, m: Message) -> None:
        pending = self._replicating.get(m.frm)
        while pending and (m.reject or pending[0][0] <= m.index):
            _, span = pending.popleft()
            if m.reject:
                _fail(span, "the follower's log did not match")
            else:
                span.end()

    # -- elections --------------------------------------------------------------------------

    def _soft_state(self, soft: SoftState) -> None:
        if soft.role is not Role.LEADER:
            for pending in self._replicating.values():
                while pending:
                    _fail(pending.popleft()[1], "no longer the leader")
        if soft.role in (Role.PRE_CANDIDATE, Role.CANDIDATE):
            if self._election is None:
                self._election = self._tracing.span("raft.election", None)
            if self._phase is not None:
                self._phase.end()
            phase = "raft.prevote" if soft.role is Role.PRE_CANDIDATE else "raft.vote"
            self._phase = self._tracing.span(
                phase, self._election, attributes={"raft.term": soft.term}
            )
            return
        if self._phase is not None:
            self._phase.end()
            self._phase = None
        if self._election is not None:
            won = soft.role is Role.LEADER
            self._election.set_attributes(
                {"raft.outcome": "won" if won else "lost", "raft.term": soft.term}
            )
            self._election.end()
            self._election = None

    def close(self) -> None:
        """The node stops: end every span still open."""
        for _, commit in self._proposals.values():
            _fail(commit, "the node stopped")
        self._proposals.clear()
        spans = [s for q in self._replicating.values() for _, s in q]
        spans += list(self._vote_answers.values()) + self._answering + self._appends
        spans += [s for s in (self._phase, self._election) if s is not None]
        for span in spans:
            _fail(span, "the node stopped")
        self._replicating.clear()
        self._vote_answers.clear()
        self._answering, self._appends, self._unwritten, self._served = [], [], [], []
        self._phase = self._election = None


def _fail(span: Span, why: str) -> None:
    span.set_status(Status(StatusCode.ERROR, why))
    span.end()
