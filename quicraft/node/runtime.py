"""The asyncio runtime of one Raft core: ticks, persistence, sending, applying, answering.

Rules of this file:
- One event loop owns the core and the state machine. Every call into the core (`step`,
  `tick`, `propose`, ...) and every change of the state happens on the loop's thread. Worker
  threads touch neither: the storage write (the Ready it was given), encoding a snapshot
  (a copy of the state), decoding a received one (its bytes) and giving memory back.
- The Ready contract (core/ready.py) in order: send `messages` at once; persist; only then send
  `persisted_messages`, install the snapshot and apply; then `advance`. A received snapshot
  is decoded in a worker thread, like the write, and nothing after it is applied before it
  is installed. While a write is on disk or a snapshot is decoded the core keeps taking
  messages and proposals, and they go into the next Ready — that is the group commit:
  everything that arrived during one fsync is written by the next one.
- A proposer learns its result only when its entry is applied; an entry of another term at
  its index means the proposal was lost (the caller may retry: sessions make that safe).
- The commit index alone is never worth an fsync: Raft keeps it in volatile state (a restarted
  node learns it again from the leader; a stale stored value only means re-applying entries
  from the snapshot on). A Ready whose only durable change is the commit therefore writes
  nothing; the newest commit goes out with the next write that must sync anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from functools import partial
from typing import Any

from opentelemetry.context import Context
from opentelemetry.trace import Span

from quicraft.core import (
    ConfChange,
    Config,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    NodeId,
    PersistentState,
    RaftCore,
    RaftError,
    Ready,
    Role,
    Snapshot,
    SoftState,
    bootstrap_state,
)
from quicraft.statemachine import StateMachine, snapshot_encoder, snapshot_installer
from quicraft.storage import CorruptionError, Storage, StorageError
from quicraft.telemetry import NO_METRICS, Telemetry
from quicraft.transport.deadlines import Deadlines

from .memory import give_back_freed_memory
from .raft_trace import RaftTrace
from .settings import Timings

log = logging.getLogger("quicraft.node")


def is_fresh(state: PersistentState) -> bool:
    """True for the state of a node that has never been part of a cluster."""
    return state.hard_state.term == 0 and not state.entries and state.snapshot.meta.index == 0


class NodeError(Exception):
    """Base of the errors a request to the node can end with."""


class ProposalLost(NodeError):
    """Another leader's entry took the proposal's place; it was not applied."""


class NodeStopped(NodeError):
    """The node stopped before the request finished."""


class RequestTimeout(NodeError):
    """The request did not finish in time; a write's outcome is unknown."""


@dataclass(slots=True)
class _SnapshotUnderWay:
    applied: int  #: the index the state machine's state was copied at
    span: Span | None
    encoded: asyncio.Future[bytes]
    requests: list[asyncio.Future[int]]  #: snapshot() calls this snapshot answers
    compacted: asyncio.Future[None] | None = None


def _unawaited_outcome(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and (error := future.exception()) is not None:
        log.debug("a snapshot abandoned as the node stopped failed too: %s", error)


def _answer_snapshot_requests(requests: list[asyncio.Future[int]], index: int) -> None:
    for future in requests:
        if not future.done():
            future.set_result(index)


@dataclass(slots=True)
class _Proposal:
    term: int
    future: asyncio.Future[object]


def successor(core: RaftCore, excluding: Collection[NodeId] = ()) -> NodeId | None:
    """On a leader: the voter to hand leadership to, the most caught-up of those that
    answered it, and within an election timeout (a voter that is down may have acknowledged
    the most, and would never take over), other than `excluding`; None if there is none."""
    others = [
        (pr.match, node)
        for node, pr in core.progress.items()
        if node != core.id
        and node not in excluding
        and node in core.membership.voters
        and pr.answered
        and pr.silent_ticks < core.config.election_tick
    ]
    return max(others)[1] if others else None


class RaftNode:
    """One Raft core driven by the event loop: it persists to `storage`, sends through `send`
    and applies committed entries to `state_machine` (see this module's rules)."""

    def __init__(
        self,
        node_id: NodeId,
        storage: Storage,
        state_machine: StateMachine,
        timings: Timings,
        send: Callable[[Message, str | None], None],
        rng: random.Random | None = None,
    ):
        self.id = node_id
        self.storage = storage
        self.state_machine = state_machine
        self.timings = timings
        self._send = send
        self._rng = rng or random.Random()
        self.core: RaftCore | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._proposals: dict[int, _Proposal] = {}
        self._reads: dict[bytes, asyncio.Future[None]] = {}
        self._applied_waiters: list[tuple[int, asyncio.Future[None]]] = []
        # What the state machine holds. The core's own applied index moves only at advance(),
        # after the reads of the same Ready were already waiting on it.
        self._applied = 0
        self._read_ids = itertools.count()
        self._snapshot_requests: list[asyncio.Future[int]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._failure: BaseException | None = None  # ends run() with this error
        self._where: object = "storage"  # what open() was told the storage is, for messages
        self._deadlines = Deadlines(RequestTimeout)
        self._writer = _Writer(f"{node_id}-writer")
        self._snapshotting: _SnapshotUnderWay | None = None
        #: Called with each new SoftState (leader, role, term) after it is known.
        self.on_soft_state: Callable[[SoftState], None] | None = None
        #: Called with every committed entry right after it is applied, in log order.
        self.on_applied: Callable[[Entry], None] | None = None
        #: Called with each snapshot taken here (False) or installed from the leader (True).
        self.on_snapshot: Callable[[Snapshot, bool], None] | None = None
        self.snapshot_index = 0
        self._stored_hard_state = HardState()  # as last written
        self._hard_state = HardState()  # as last reported by the core
        self._leader: NodeId | None = None
        # Telemetry (instrument()): off by default, and then nothing below records anything.
        self.metrics = NO_METRICS
        self._counting = False  # whether proposals' outcomes are counted
        self.trace: RaftTrace | None = None
        self._snapshot_parent: Context | None = None  # the trace a received snapshot came in

    def instrument(self, telemetry: Telemetry) -> None:
        """Record spans and metrics into `telemetry` (before run())."""
        self.metrics = telemetry.metrics
        self._counting = telemetry.metrics is not NO_METRICS
        self.trace = RaftTrace(telemetry.tracing) if telemetry.tracing.on else None

    # -- life cycle ------------------------------------------------------------------------

    def open(
        self,
        state: PersistentState,
        founders: list[NodeId] | None = None,
        *,
        where: object = "storage",
    ) -> None:
        """Start from the stored `state`, bootstrapping a new cluster of `founders` if it is
        empty. A node that has any state never bootstraps again, whatever `founders` says.
        CorruptionError, naming `where` (the data directory), if the state machine cannot
        read the stored snapshot."""
        if is_fresh(state) and founders:
            state = bootstrap_state(founders)
            self.storage.save(hard_state=state.hard_state, entries=state.entries, snapshot=None)
            log.info("founded a cluster of %d: %s", len(founders), ", ".join(sorted(founders)))
        self._where = where
        snap = state.snapshot
        if snap.meta.index:
            try:
                self.state_machine.restore(snap.data)
            except ValueError as err:
                # Its checksums held: a bug wrote it so, or a build whose state machine
                # writes another format. Either way the node cannot start from it.
                raise CorruptionError(
                    f"{where}: snapshot at {snap.meta.index}: the state machine cannot read "
                    f"it ({err})"
                ) from None
        self.snapshot_index = snap.meta.index
        self._stored_hard_state = self._hard_state = state.hard_state
        t = self.timings
        config = Config(self.id, election_tick=t.election_tick, heartbeat_tick=t.heartbeat_tick)
        self.core = RaftCore(config, self._rng, state, applied=snap.meta.index)
        self._applied = snap.meta.index

    async def run(self) -> None:
        """Tick and process Ready batches until `stop()`."""
        ticker = asyncio.create_task(self._ticker(), name=f"{self.id}-ticker")
        ticker.add_done_callback(self._ticker_ended)
        self._tasks = [ticker]
        try:
            await self._loop()
        finally:
            # However the loop ended, nothing will answer a request made from now on.
            self._stopping = True
            if self.trace is not None:
                self.trace.close()
            self._writer.stop()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._fail_everything(NodeStopped("the node is stopping"))
            self._abandon_snapshot()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    def _ticker_ended(self, ticker: asyncio.Task[None]) -> None:
        # It ends only when cancelled: a node whose time stopped would never campaign or send
        # a heartbeat again while looking healthy, so its failure ends run().
        if not ticker.cancelled() and (error := ticker.exception()) is not None:
            self.fail(error)

    def fail(self, error: BaseException) -> None:
        """End run() with `error`: the node must not go on."""
        self._failure = error
        self._wake.set()

    async def hand_over_leadership(self) -> bool:
        """If leader, transfer leadership to the most caught-up voter and wait for it to go.

        Returns True when this node is no longer the leader (or never was).
        """
        core = self._core
        if core.role is not Role.LEADER:
            return True
        loop = asyncio.get_running_loop()
        # A leader elected a moment ago may have heard from no voter yet: wait for one.
        heard_by = loop.time() + self.timings.election_timeout_s()
        while (target := successor(core)) is None and loop.time() < heard_by:
            await asyncio.sleep(self.timings.tick_ms / 1000)
            if core.role is not Role.LEADER:
                return True
        if target is None:
            return False
        tried: set[NodeId] = set()
        deadline = loop.time() + 2 * self.timings.election_timeout_s()
        while core.role is Role.LEADER and loop.time() < deadline:
            # The core gives a transfer up after an election timeout (its target went down
            # since it last answered, say): then the next voter gets its turn.
            if core.lead_transferee is None and target is not None:
                log.info("handing leadership over to %s", target)
                tried.add(target)
                with contextlib.suppress(RaftError):
                    core.transfer_leadership(target)
                self._wake.set()
            await asyncio.sleep(self.timings.tick_ms / 1000)
            target = successor(core, excluding=tried)
        return core.role is not Role.LEADER

    # -- inputs ----------------------------------------------------------------------------

    @property
    def _core(self) -> RaftCore:
        if self.core is None:
            raise NodeError("the node is not open")
        return self.core

    def receive(self, m: Message, parent: Context | None = None) -> None:
        """Step message `m`; `parent` is the trace context it came with, if traced."""
        self._core.step(m)
        if self.trace is not None:
            self.trace.received(m, parent)
        if m.type is MessageType.SNAPSHOT:
            self._snapshot_parent = parent
        self._wake.set()

    def report_unreachable(self, peer: NodeId) -> None:
        self._core.report_unreachable(peer)
        self._wake.set()

    def report_snapshot(self, peer: NodeId, ok: bool) -> None:
        self._core.report_snapshot(peer, ok)
        self._wake.set()

    def start_proposal(
        self, data: bytes, timeout: float, request: Span | None = None
    ) -> asyncio.Future[object]:
        """Start replicating one command. The future ends with what the state machine returned
        for it, or with ProposalLost, RequestTimeout or NodeStopped. `request` is the span of
        the request it serves, when traced.

        Raises NotLeader / ProposalDropped at once.
        """
        self._check_running()
        index, term = self._core.propose(data)
        if request is not None and self.trace is not None:
            self.trace.proposed(index, request, term)
        return self._track(index, term, timeout)

    def start_conf_change(
        self, change: ConfChange, timeout: float, request: Span | None = None
    ) -> asyncio.Future[object]:
        """Start one membership change (core.propose_conf_change). The future ends with None
        once the change's entry is committed and applied, or as start_proposal's does.
        `request` is the span of the operation it serves, when traced.

        Raises NotLeader / ProposalDropped (another change pending, no commit in this term
        yet) / RaftError (the change makes no sense in the current membership) at once.
        """
        self._check_running()
        index, term = self._core.propose_conf_change(change)
        if request is not None and self.trace is not None:
            self.trace.proposed(index, request, term)
        return self._track(index, term, timeout)

    def start_transfer(self, target: NodeId) -> None:
        """Start handing leadership to voter `target` (core.transfer_leadership); watch
        `core.leader` to see it happen. Raises NotLeader / RaftError at once."""
        self._check_running()
        self._core.transfer_leadership(target)
        self._wake.set()

    def _track(self, index: int, term: int, timeout: float) -> asyncio.Future[object]:
        """A future for our entry (`index`, `term`), answered when that index is applied."""
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        replaced = self._proposals.get(index)
        if replaced is not None and not replaced.future.done():
            # Our own entry of an earlier term sat at this index: appending here truncated it.
            replaced.future.set_exception(ProposalLost("replaced by another leader"))
        # A proposal that times out stays here until its index is applied or proposed again.
        self._proposals[index] = _Proposal(term, future)
        self._deadlines.add(future, timeout, "the write was not committed in time")
        if self._counting or self.trace is not None:
            future.add_done_callback(partial(self._proposal_done, index))
        self._wake.set()
        return future

    def _proposal_done(self, index: int, future: asyncio.Future[object]) -> None:
        error = RequestTimeout("cancelled") if future.cancelled() else future.exception()
        failed = error is not None
        if error is not None and self.trace is not None:
            self.trace.lost(index, error)
        if self._counting:
            (self.metrics.proposals_failed if failed else self.metrics.proposals_committed).add(1)

    async def propose(self, data: bytes, timeout: float) -> object:
        """Replicate and apply one command; returns what the state machine returned."""
        return await self.start_proposal(data, timeout)

    def start_read(self, timeout: float) -> asyncio.Future[None]:
        """Start a linearizable read (ReadIndex, §6.4; works on followers too, through the
        leader). The future ends once the local state machine reflects every write committed
        before this call, or with RequestTimeout or NodeStopped."""
        self._check_running()
        context = f"{self.id}/{next(self._read_ids)}".encode()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._reads[context] = future
        future.add_done_callback(lambda _: self._reads.pop(context, None))
        self._core.read_index(context)
        self._deadlines.add(future, timeout, "no leader confirmed the read in time")
        self._wake.set()
        return future

    async def read_barrier(self, timeout: float) -> None:
        """Wait until the local state machine reflects every write committed before the call."""
        await self.start_read(timeout)

    async def snapshot(self) -> int:
        """Snapshot the state machine at the applied index now; returns the snapshot's index.

        The loop copies the state between two Ready batches, never while one is being
        written, and answers once the snapshot is encoded and stored.
        """
        self._check_running()
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._snapshot_requests.append(future)
        self._wake.set()
        return await future

    def _snapshot_step(self) -> None:
        """Move a snapshot along, between two Readies. The state machine's state is copied
        here (StateMachine.capture, about a millisecond for the key-value store); encoding
        it (30-50 ms for 16,000 keys) and writing its data run in a thread of the default
        executor, and compacting the storage in the writer thread, in order with the writes,
        so the loop goes on replicating meanwhile. Their ends wake the loop, which hands the
        snapshot to the core and finishes here too."""
        core = self._core
        taking = self._snapshotting
        if taking is None:
            applied, every = core.log.applied, self.timings.snapshot_every
            # The cheap test first (this runs every loop turn); the base is never below it.
            due = applied - self.snapshot_index >= every and (
                applied - self._snapshot_base() >= every
            )
            if not (due or self._snapshot_requests):
                return
            if applied <= self.snapshot_index:
                requests, self._snapshot_requests = self._snapshot_requests, []
                _answer_snapshot_requests(requests, self.snapshot_index)
                return
            # Before the requests leave _snapshot_requests: a state machine whose capture()
            # or snapshot() raises ends run(), which fails them there (they waited forever).
            encoder = snapshot_encoder(self.state_machine)
            # Requests are answered by the snapshot that starts after them.
            requests, self._snapshot_requests = self._snapshot_requests, []
            span = self.trace.span("raft.snapshot.take", applied) if self.trace else None
            # Not the writer thread: the writes of the next Readies must not queue behind it.
            encode = partial(self._encode_snapshot, encoder, applied)
            encoded = asyncio.get_running_loop().run_in_executor(None, encode)
            self._snapshotting = taking = _SnapshotUnderWay(applied, span, encoded, requests)
            encoded.add_done_callback(self._wake_loop)
        if taking.compacted is None:
            if not taking.encoded.done():
                return
            # A snapshot from the leader may have covered `applied` meanwhile: then the
            # core ignores this one, and compacting storage to it would go backwards.
            core.snapshot_taken(taking.applied, taking.encoded.result())
            if core.log.snapshot.meta.index != taking.applied:
                self._snapshotting = None
                _answer_snapshot_requests(taking.requests, self.snapshot_index)
                return
            taking.compacted = self._writer.run(partial(self.storage.compact, core.log.snapshot))
            taking.compacted.add_done_callback(self._wake_loop)
        if not taking.compacted.done():
            return
        taking.compacted.result()  # a failed compaction stops the node, as a failed write
        self._snapshotting = None
        if taking.span is not None:
            taking.span.end()
        self.snapshot_index = max(self.snapshot_index, taking.applied)  # or one installed
        self.metrics.snapshots.add(1, {"kind": "taken"})
        log.info("snapshot taken at index %d", taking.applied)
        if self.on_snapshot is not None:
            self.on_snapshot(core.log.snapshot, False)
        _answer_snapshot_requests(taking.requests, self.snapshot_index)
        self._give_back_memory()

    def _snapshot_base(self) -> int:
        """Where this node's snapshot period starts: its last snapshot, or before the first
        one a point set by its rank among the voters, so that the nodes of a cluster, which
        apply the same entries, do not all take a snapshot at the same moment."""
        if self.snapshot_index:
            return self.snapshot_index
        voters = sorted(self._core.membership.voters)
        rank = voters.index(self.id) if self.id in voters else 0
        return rank * self.timings.snapshot_every // max(1, len(voters))

    def _encode_snapshot(self, encode: Callable[[], bytes], index: int) -> bytes:
        """In a worker thread: encode the snapshot at `index`, and write its data ahead
        (Storage.stage) so that compacting, which the log's writes wait for, has only the
        snapshot's record left to write."""
        data = encode()
        if not isinstance(data, bytes):
            # What the leader would store and send: a str would be refused by LevelDB in
            # its own words, and a bytearray the state machine may go on changing.
            raise TypeError(f"the state machine's snapshot is a {type(data).__name__}, not bytes")
        try:
            self.storage.stage(index, data)
        except StorageError as err:  # then compact() writes the data itself, or fails
            log.debug("could not stage the snapshot at %d: %s", index, err)
        return data

    def _wake_loop(self, _: object) -> None:
        self._wake.set()

    def _check_running(self) -> None:
        if self._stopping:
            raise NodeStopped("the node is stopping")

    # -- the loop --------------------------------------------------------------------------

    async def _ticker(self) -> None:
        loop = asyncio.get_running_loop()
        period = self.timings.tick_ms / 1000
        next_tick = loop.time() + period
        while True:
            await asyncio.sleep(max(0.0, next_tick - loop.time()))
            # Catch up at most one missed tick: a stalled loop must not fire a burst of
            # elections the moment it wakes.
            next_tick = max(next_tick + period, loop.time())
            self._core.tick()
            self._wake.set()

    async def _loop(self) -> None:
        core = self._core
        while True:
            # The failure first: stop() may follow fail() before the loop wakes.
            if self._failure is not None:
                raise self._failure
            if self._stopping:
                return
            self._snapshot_step()
            if not core.has_ready():
                self._wake.clear()
                await self._wake.wait()
                continue
            rd = core.ready()
            if self.trace is not None:
                self.trace.taken(rd)
            await self._handle(rd)
            core.advance(rd)

    async def _handle(self, rd: Ready) -> None:
        if rd.hard_state is not None:
            self._hard_state = rd.hard_state
        self._send_all(rd.messages)
        # Committed entries that were already durable here need not wait for this Ready's
        # write. Which goes first is whichever someone waits for: a follower's write holds
        # back its acknowledgement (persisted_messages), which the leader's commit waits on,
        # while nobody waits on its applying; a leader's applying answers clients (its own
        # entries count towards a commit only once durable, so all of its committed entries
        # are durable), while nobody waits on its write to be acknowledged.
        ready_now: list[Entry] = []
        if rd.snapshot is None:
            durable = self._core.log.stable
            ready_now = [e for e in rd.committed_entries if e.index <= durable]
        apply_first = not rd.persisted_messages
        if apply_first:
            self._apply(ready_now)
        if rd.snapshot is not None or rd.entries or self._term_or_vote_changed():
            await self._persist(rd)
        self._send_all(rd.persisted_messages)
        if not apply_first:
            await asyncio.sleep(0)  # the acknowledgement leaves (end of this turn) first
            self._apply(ready_now)
        if self.trace is not None:
            self.trace.answered()
        if rd.soft_state is not None:
            self._soft_state_changed(rd.soft_state)
        if rd.snapshot is not None:
            await self._install(rd.snapshot)
        self._apply(rd.committed_entries[len(ready_now) :])
        for rs in rd.read_states:
            read = self._reads.pop(rs.context, None)
            if read is not None and not read.done():
                self._when_applied(rs.index, read)

    def _send_all(self, messages: list[Message]) -> None:
        trace = self.trace
        for m in messages:
            self._send(m, trace.sending(m) if trace is not None else None)
            if self._counting and m.type is MessageType.APPEND and m.entries:
                self.metrics.append_batch_size.record(len(m.entries))

    async def _install(self, snapshot: Snapshot) -> None:
        """Replace the state machine with the leader's `snapshot`. It is decoded in a thread
        of the default executor (about half a second for 300 MB, which on the loop kept the
        node from answering anyone), and made the state here; the Ready that brought it,
        and the entries after it, wait meanwhile, as they wait for a write."""
        parent, self._snapshot_parent = self._snapshot_parent, None
        trace = self.trace
        span = trace.span("raft.snapshot.install", snapshot.meta.index, parent) if trace else None
        prepare = partial(snapshot_installer, self.state_machine, snapshot.data)
        try:
            install = await asyncio.get_running_loop().run_in_executor(None, prepare)
            install()  # a state machine without prepare() decodes here, in restore()
        except ValueError as err:
            # The leader's state machine wrote what this one cannot read (a build that
            # writes another format, or a bug): the node cannot go on. Said as open() says
            # it for the same snapshot once stored (it is already: a restart stops there),
            # an error the command reports in one line, not a traceback.
            raise CorruptionError(
                f"{self._where}: snapshot at {snapshot.meta.index} from the leader: the state "
                f"machine cannot read it ({err})"
            ) from None
        self.snapshot_index = snapshot.meta.index
        if span is not None:
            span.end()
        self.metrics.snapshots.add(1, {"kind": "installed"})
        self._fail_proposals_up_to(snapshot.meta.index)
        log.info("installed a snapshot at index %d", snapshot.meta.index)
        if self.on_snapshot is not None:
            self.on_snapshot(snapshot, True)
        self._wake_applied(snapshot.meta.index)
        self._give_back_memory()

    def _abandon_snapshot(self) -> None:
        """The snapshot under way will not be finished. Its encoding or compaction may still
        fail (the full disk that stopped the node fails a queued compaction too), and asyncio
        prints a future's error that nobody looked at as a traceback: looked at here."""
        taking, self._snapshotting = self._snapshotting, None
        if taking is not None:
            for future in (taking.encoded, taking.compacted):
                if future is not None:
                    future.add_done_callback(_unawaited_outcome)

    def _give_back_memory(self) -> None:
        """A snapshot taken or installed has just freed the log it covers, the encoder's
        pieces or the state it replaced: hand that back (node/memory.py), off the loop."""
        asyncio.get_running_loop().run_in_executor(None, give_back_freed_memory)

    def _apply(self, entries: list[Entry]) -> None:
        """Apply committed `entries` in order and answer their proposers."""
        if not entries:
            return
        on_applied, trace = self.on_applied, self.trace
        started = time.perf_counter() if self._counting else 0.0
        for entry in entries:
            result: object = None
            span = trace.applying(entry.index) if trace is not None else None
            if entry.type is EntryType.NORMAL:
                result = self.state_machine.apply(entry.index, entry.data)
            if span is not None:
                span.end()
            if on_applied is not None:
                on_applied(entry)
            proposal = self._proposals.pop(entry.index, None)
            if proposal is not None and not proposal.future.done():
                if proposal.term == entry.term:
                    proposal.future.set_result(result)
                else:
                    proposal.future.set_exception(ProposalLost("replaced by another leader"))
        if self._counting:
            self.metrics.apply_duration.record(time.perf_counter() - started)
        self._wake_applied(entries[-1].index)

    def _term_or_vote_changed(self) -> bool:
        stored, latest = self._stored_hard_state, self._hard_state
        return (stored.term, stored.vote) != (latest.term, latest.vote)

    async def _persist(self, rd: Ready) -> None:
        """Write `rd` durably in a worker thread, so the loop keeps receiving (and the leader
        keeps replicating) while the disk syncs. Writing on the loop was measured: faster
        with one busy client connection, twice as slow with sixteen."""
        hard_state = self._hard_state if self._hard_state != self._stored_hard_state else None
        span = self.trace.writing(rd) if self.trace is not None else None
        started = time.perf_counter()
        await self._writer.run(
            partial(
                self.storage.save, hard_state=hard_state, entries=rd.entries, snapshot=rd.snapshot
            )
        )
        self.metrics.fsync_duration.record(time.perf_counter() - started)
        if span is not None:
            span.end()
        if hard_state is not None:
            self._stored_hard_state = hard_state

    def _soft_state_changed(self, soft: SoftState) -> None:
        log.info("term %d: %s, leader %s", soft.term, soft.role.value, soft.leader or "unknown")
        if soft.leader is not None and soft.leader != self._leader:
            self._leader = soft.leader  # the last leader known: an election between is no change
            self.metrics.leader_changes.add(1)
        if self.on_soft_state is not None:
            self.on_soft_state(soft)

    # -- waiting for the state machine -----------------------------------------------------

    def _when_applied(self, index: int, future: asyncio.Future[None]) -> None:
        if self._applied >= index:
            future.set_result(None)
        else:
            self._applied_waiters.append((index, future))

    def _wake_applied(self, applied: int) -> None:
        self._applied = max(self._applied, applied)
        waiting = []
        for index, future in self._applied_waiters:
            if future.done():
                continue  # its reader gave up (timed out): nothing to keep it for
            if index <= applied:
                future.set_result(None)
            else:
                waiting.append((index, future))
        self._applied_waiters = waiting

    def _fail_proposals_up_to(self, index: int) -> None:
        """A snapshot replaced these entries: whether they were applied is unknown here."""
        for at in [i for i in self._proposals if i <= index]:
            future = self._proposals.pop(at).future
            if not future.done():
                future.set_exception(RequestTimeout("outcome unknown: replaced by a snapshot"))

    def _fail_everything(self, error: Exception) -> None:
        futures: list[asyncio.Future[Any]] = [p.future for p in self._proposals.values()]
        futures += list(self._reads.values())
        futures += [f for _, f in self._applied_waiters]
        futures += self._snapshot_requests
        if self._snapshotting is not None:
            futures += self._snapshotting.requests
        for future in futures:
            if not future.done():
                future.set_exception(error)
        self._proposals.clear()
        self._reads.clear()
        self._applied_waiters.clear()
        self._snapshot_requests.clear()


class _Writer:
    """The node's storage writes, one at a time, in a thread of its own.

    asyncio.to_thread does the same through the default executor, at about twice the CPU
    per write (a copied context, two chained futures and the executor's locks, measured at
    50-70 us against 28 us for a round trip with nothing to do), and the leader and each
    follower hand it a write per Ready. The thread starts with the first write and ends
    with stop(); a write already queued still runs first."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._queue: queue.SimpleQueue[tuple[asyncio.Future[None], Callable[[], None]] | None]
        self._queue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def run(self, write: Callable[[], None]) -> asyncio.Future[None]:
        """Run `write` in the writer thread; the future ends with its outcome."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name=self._name, daemon=True)
            self._thread.start()
        self._queue.put((future, write))
        return future

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread = None

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            future, write = job
            error: BaseException | None = None
            try:
                write()
            except BaseException as exc:  # handed to the awaiting loop, as to_thread would
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting
                future.get_loop().call_soon_threadsafe(_settle, future, error)


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():  # the awaiting task was cancelled meanwhile
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
