"""One seeded simulation of a cluster: faults, clients, and every check.

A run has two phases. In the fault phase (`steps` ticks) clients read and write while the seed's
fault profile crashes, pauses and restarts nodes, cuts the network in many shapes, slows disks,
changes membership, transfers leadership and snapshots often. Then every fault heals and the run
checks liveness: a leader appears within a bound, a new write commits, and every live member
converges to the same state. Safety properties are checked after every event (invariants.py) and the
clients' history must be linearizable (linearizability.py).

Everything random comes from the seed, so a failing seed replays exactly.
"""

from __future__ import annotations

import heapq
import random
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from quicraft.core import (
    ConfChange,
    ConfChangeKind,
    Config,
    Message,
    MessageType,
    NodeId,
    NotLeader,
    RaftError,
    Ready,
    Role,
    bootstrap_state,
)

from .invariants import SafetyChecker, Violation
from .kv import Command
from .linearizability import Operation, check_history
from .network import Network, NetworkFaults
from .node import Durable, SimNode

TICK = 10  # time units per tick; network delays are finer than ticks
ELECTION_TICK = 10
OP_TIMEOUT = 30 * TICK
HEAL_BOUND = 20 * ELECTION_TICK  # ticks allowed for a leader to emerge after faults heal
CATCH_UP_BOUNDS = 10  # HEAL_BOUNDs a member still applying entries may take to converge
KEYS = ("a", "b", "c")
# Events one run may take (a normal run takes well under 100,000). Hitting it is a failure:
# something loops, and a deterministic budget keeps that failure reproducible.
EVENT_BUDGET = 2_000_000
# Pauses (see _pause). A pause strikes the leader at least this often: it does the most work.
PAUSE_LEADER = 0.75
# The longest a watched pause (FaultProfile.watch) waits for a read it could answer stale.
WATCH_LIMIT = 10 * ELECTION_TICK * TICK
# Chance a client reads the key of its completed write next, through another node, while
# a node is paused.
FOLLOW_UP_READ = 0.75
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SimOptions:
    seed: int
    nodes: int = 3
    steps: int = 300  # ticks of the fault phase
    clients: int = 3
    bugs: frozenset[str] = frozenset()
    profile: str = "mixed"  # one of PROFILES

    def command(self) -> str:
        """The command line that replays this run."""
        cmd = (
            f"python -m quicraft.sim --seeds 1 --start {self.seed} "
            f"--nodes {self.nodes} --steps {self.steps} --clients {self.clients}"
        )
        if self.profile != "mixed":
            cmd += f" --profile {self.profile}"
        return cmd + "".join(f" --bug {b}" for b in sorted(self.bugs))


@dataclass(frozen=True, slots=True)
class FaultProfile:
    """How hard this seed shakes the cluster; chances are per tick."""

    network: NetworkFaults
    # Core settings vary too: a core must be safe under any of them, and small batches and
    # windows split work across messages, where the subtle interleavings live.
    max_entries_per_msg: int
    max_inflight_msgs: int
    pre_vote: bool
    check_quorum: bool
    quick_restart: float  # chance a crashed node is back within a tick or two
    crash_leader: float  # chance a crash picks the leader rather than any node
    # Chance to strike at a critical moment: isolate or crash a leader just elected (before
    # its no-op spreads), crash a node just after it durably voted.
    pounce: float
    # Chance that a message still in flight when its sender crashes is lost with it, as the
    # unsent packets of a machine that loses power are.
    crash_loses_sends: float
    crash: float
    partition: float
    churn: float
    transfer: float
    slow_disk: float
    # Chance a node (the leader, as often as a crash picks it) freezes for a few election
    # timeouts, as a process does in a long GC pause or a stopped VM: its clock stands still,
    # and what reaches it waits until it resumes. A leader that resumes has not noticed that
    # it was deposed; only a quorum round (ReadIndex) keeps it from answering reads then.
    pause: float
    # Chance a leader's pause is watched: it lasts until a read that the leader could answer
    # stale waits for it (WATCH_LIMIT at most), then its clients' requests go first.
    watch: float
    # Chance, at each moment a correct core refuses a membership change (a leader just
    # elected, before its term's first commit; a change just proposed, before it commits),
    # that the leader proposes one at once; and that a leader which just proposed a change
    # is struck (a crash, a pause or its isolation).
    change_pounce: float
    snapshot_every: int

    @classmethod
    def draw(cls, rng: random.Random, kind: str) -> FaultProfile:
        if kind == "leader-faults":
            return cls.leader_faults(rng)
        if kind == "membership":
            return cls.membership(rng)

        def chance(high: float) -> float:
            return 0.0 if rng.random() < 0.25 else rng.uniform(0.0, high)

        network = NetworkFaults(
            drop=chance(0.1),
            duplicate=chance(0.05),
            min_delay=1,
            max_delay=rng.choice((3, 10, 30)),
            long_delay=chance(0.02),
        )
        return cls(
            network=network,
            max_entries_per_msg=rng.choice((1, 3, 64)),
            max_inflight_msgs=rng.choice((1, 4, 256)),
            pre_vote=rng.random() < 0.8,
            check_quorum=rng.random() < 0.8,
            quick_restart=rng.choice((0.0, 0.5)),
            crash_leader=0.5,
            pounce=chance(0.1),
            crash_loses_sends=chance(1.0),
            crash=chance(0.02),
            partition=chance(0.02),
            churn=chance(0.02),
            transfer=chance(0.01),
            slow_disk=chance(0.01),
            pause=chance(0.02),
            watch=0.75,
            change_pounce=0.0,
            snapshot_every=rng.choice((5, 20, 100)),
        )

    @classmethod
    def leader_faults(cls, rng: random.Random) -> FaultProfile:
        """Leaders fail often and come back fast, and every message carries one entry.

        This is where the classic traps live (paper Figure 8; votes and reads around a leader
        change): an old-term entry replicated without the new leader's no-op, a voter that
        restarts while its term's election is still going on.
        """
        return cls(
            network=NetworkFaults(drop=0.05, duplicate=0.02, max_delay=10, long_delay=0.02),
            max_entries_per_msg=1,
            max_inflight_msgs=rng.choice((1, 4)),
            pre_vote=rng.random() < 0.5,
            check_quorum=rng.random() < 0.5,
            quick_restart=0.8,
            crash_leader=0.9,
            pounce=0.3,
            crash_loses_sends=0.7,
            crash=0.04,
            partition=0.01,
            churn=0.0,
            transfer=0.05,
            slow_disk=0.02,
            pause=0.02,
            # Its leaders are crashed too often to see their successors commit: a long pause
            # would only keep its clients waiting.
            watch=0.0,
            change_pounce=0.0,
            snapshot_every=rng.choice((20, 100)),
        )

    @classmethod
    def membership(cls, rng: random.Random) -> FaultProfile:
        """Membership changes often, and at the moments that matter: proposed by a leader
        just elected and right after another (which a correct core refuses: thesis §4.1 and
        the single-server change bug of 2015), and followed by the leader's fall.
        """
        return cls(
            network=NetworkFaults(drop=0.02, duplicate=0.02, max_delay=rng.choice((3, 10))),
            max_entries_per_msg=rng.choice((1, 64)),
            max_inflight_msgs=rng.choice((1, 256)),
            pre_vote=rng.random() < 0.5,
            check_quorum=rng.random() < 0.5,
            quick_restart=0.5,
            crash_leader=0.7,
            pounce=0.2,
            crash_loses_sends=0.5,
            crash=0.01,
            partition=0.02,
            churn=0.1,
            transfer=0.01,
            slow_disk=0.01,
            pause=0.005,
            watch=0.0,
            change_pounce=0.5,
            snapshot_every=rng.choice((20, 100)),
        )


PROFILES = ("mixed", "leader-faults", "membership")


@dataclass(frozen=True, slots=True)
class SimResult:
    options: SimOptions
    violation: Violation | None
    trace: list[str]
    stats: dict[str, int]

    @property
    def ok(self) -> bool:
        return self.violation is None

    def report(self) -> str:
        if self.violation is None:
            return f"seed {self.options.seed}: ok"
        lines = [
            f"seed {self.options.seed}: FAILED {self.violation.prop}",
            f"  {self.violation.detail}",
            "  last events:",
            *(f"    {t}" for t in self.trace),
            f"  reproduce: {self.options.command()}",
        ]
        return "\n".join(lines)


@dataclass(slots=True)
class _Op:
    client: int
    key: str
    kind: str
    args: tuple[int | None, ...]
    call: int
    node: NodeId
    # Writes: the proposed entry's data, which names this op alone. Its (index, term) does
    # not: a single voter elected within one Ready that crashes before storing its new term
    # is elected in that term again and puts other entries at the indexes it gave out.
    command: bytes = b""
    done: bool = False


@dataclass(slots=True)
class _Client:
    id: int
    seq: int = 0
    leader_hint: NodeId | None = None
    # After a write: read its key next at another node (key, the node that took the write)
    follow_up: tuple[str, NodeId] | None = None
    # Only reads what _maybe_observe sends it to, one at a time: no loop of its own.
    observer: bool = False


@dataclass(slots=True)
class _Pause:
    """A node frozen as in a long GC pause: what reaches it is held until it resumes."""

    start: int
    until: int
    # On resume the held client requests go first, before the messages held with them. A
    # process reads its sockets in any order; this is the one that exposes a deposed leader,
    # which otherwise learns of its successor from the first message it reads.
    clients_first: bool
    # Ends early, at the moment that matters: once a read that was sent after a write of its
    # key completed elsewhere (during the pause) waits here (_hold_request).
    watch: bool
    held: list[tuple[bool, Callable[[], None]]] = field(default_factory=list)  # (request?, run)


@dataclass(slots=True)
class _Stats:
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n


class Simulation:
    def __init__(self, options: SimOptions):
        self.options = options
        self.rng = random.Random(options.seed)
        self.profile = FaultProfile.draw(self.rng, options.profile)
        self.net = Network(random.Random(self.rng.random()), self.profile.network)
        self.checker = SafetyChecker()
        self.now = 0
        self._queue: list[tuple[int, int, Callable[[], None]]] = []
        self._seq = 0
        self._events = 0
        self.trace: deque[str] = deque(maxlen=30)
        self.stats = _Stats()
        self.history: list[Operation] = []
        self._writes: dict[tuple[NodeId, int], _Op] = {}
        self._reads: dict[bytes, _Op] = {}
        self._clients = [_Client(i) for i in range(options.clients)]
        self._observer = _Client(options.clients, observer=True)
        self._clients.append(self._observer)
        self._observing: _Op | None = None
        self._final: tuple[SimNode, int, int] | None = None  # see _final_write
        # The acknowledged write of the highest index so far: (index, key).
        self._newest_write: tuple[int, str] | None = None
        self._clients_on = True
        self._faults_on = True
        self._last_value: dict[str, int | None] = {}
        self._slow_until: dict[NodeId, int] = {}
        self._pauses: dict[NodeId, _Pause] = {}
        self._changed: dict[str, int] = {}  # key -> when a client last saw a write change it
        self._leader_commit: dict[NodeId, tuple[int, int]] = {}  # (term, commit) seen
        self._next_id = options.nodes + 1
        self.nodes: dict[NodeId, SimNode] = {}
        founders = [f"n{i}" for i in range(1, options.nodes + 1)]
        boot = bootstrap_state(founders)
        for nid in founders:
            durable = Durable(boot.hard_state, boot.snapshot, list(boot.entries))
            self._add_node(nid, durable)

    # -- scheduling -----------------------------------------------------------------------

    def _at(self, delay: int, fn: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (self.now + delay, self._seq, fn))

    def _run_until(self, end: int) -> None:
        while self._queue and self._queue[0][0] <= end:
            self._events += 1
            if self._events > EVENT_BUDGET:
                raise Violation("liveness", f"more than {EVENT_BUDGET} events: a loop?")
            self.now, _, fn = heapq.heappop(self._queue)
            fn()
            self._pump()
        self.now = end

    def _pump(self) -> None:
        """Start writes for every node with work, and check safety after the event."""
        for node in list(self.nodes.values()):
            if not node.alive or self._paused(node):
                continue
            rd = node.take_ready()
            if rd is not None:
                self._begin_write(node, rd)
            self.checker.after_step(node)
            if node.core.role is Role.LEADER:
                self._maybe_strike_on_commit(node)

    def _maybe_strike_on_commit(self, node: SimNode) -> None:
        """A leader that just advanced its commit index is the only one who knows it. Its
        first advance in a term is the pivotal one (§5.4.2): strike there most often."""
        term, commit = node.core.term, node.core.log.committed
        last_term, last_commit = self._leader_commit.get(node.id, (0, 0))
        if (term, commit) > (last_term, last_commit):
            self._leader_commit[node.id] = (term, commit)
            chance = self.profile.pounce if term > last_term else self.profile.pounce / 4
            if self._faults_on and self.rng.random() < chance:
                self._at(0, lambda: self._strike_leader(node))

    def _add_node(self, nid: NodeId, durable: Durable) -> SimNode:
        p = self.profile
        config = Config(
            nid,
            election_tick=ELECTION_TICK,
            max_entries_per_msg=p.max_entries_per_msg,
            max_inflight_msgs=p.max_inflight_msgs,
            pre_vote=p.pre_vote,
            check_quorum=p.check_quorum,
            deliberate_bugs=self.options.bugs,
        )
        node = SimNode(config, self.rng.randrange(1 << 30), durable, self.profile.snapshot_every)
        self.nodes[nid] = node
        self._start_ticking(node)
        return node

    def _start_ticking(self, node: SimNode) -> None:
        epoch = node.epoch

        def tick() -> None:
            if node.alive and node.epoch == epoch:
                if not self._paused(node):  # a paused node's clock stands still
                    node.core.tick()
                self._at(TICK, tick)

        self._at(self.rng.randrange(1, TICK + 1), tick)

    def _paused(self, node: SimNode) -> bool:
        return node.id in self._pauses

    def _defer_if_paused(
        self, node: SimNode, fn: Callable[[], None], request: bool = False
    ) -> bool:
        """A paused node does nothing: run `fn` once it resumes (`request`: a client's)."""
        pause = self._pauses.get(node.id)
        if pause is None:
            return False
        pause.held.append((request, fn))
        return True

    # -- the Ready contract -----------------------------------------------------------------

    def _begin_write(self, node: SimNode, rd: Ready) -> None:
        self.checker.on_ready(node, rd)
        if rd.soft_state is not None and rd.soft_state.role is Role.LEADER:
            self._note(f"{node.id} leads term {rd.soft_state.term}")
            self.stats.add("elections")
            if self._faults_on and self.rng.random() < self.profile.pounce:
                # At once (before its no-op leaves) or a few round trips in (mid catch-up).
                delay = self.rng.choice((self.rng.randint(0, 3), self.rng.randint(0, 4 * TICK)))
                self._at(delay, lambda: self._strike_leader(node))
            self._maybe_observe(node)
            self._maybe_change_at_once()
        self._send(node, rd.messages)
        slow = self._slow_until.get(node.id, 0) > self.now
        delay = self.rng.randint(20, 80) if slow else self.rng.randint(0, 3)
        epoch = node.epoch

        def written() -> None:
            if node.alive and node.epoch == epoch and not self._defer_if_paused(node, written):
                self._finish_write(node, rd)

        self._at(delay, written)

    def _finish_write(self, node: SimNode, rd: Ready) -> None:
        applied = node.finish_write(rd)
        self.checker.on_persist(node.id, node.durable.hard_state)
        self._send(node, rd.persisted_messages)
        voted = any(
            m.type in (MessageType.VOTE, MessageType.VOTE_RESP) for m in rd.persisted_messages
        )
        if voted and self._faults_on and self.rng.random() < self.profile.pounce:
            self._at(0, lambda: self._crash(node, quick=True))
        if rd.snapshot is not None:
            self.stats.add("snapshots installed")
        for a in applied:
            self.checker.on_apply(node, a.entry)
            op = self._writes.pop((node.id, a.entry.index), None)
            if op is not None and not op.done:
                if op.command == a.entry.data:
                    if self._newest_write is None or a.entry.index > self._newest_write[0]:
                        self._newest_write = (a.entry.index, op.key)
                    self._complete(op, a.result)
                else:
                    self._fail(op)  # another entry took its index: it was never applied
        for ctx in node.ready_reads():
            op = self._reads.pop(ctx, None)
            if op is not None and not op.done:
                self._complete(op, node.kv.get(op.key))

    def _send(self, node: SimNode, messages: list[Message]) -> None:
        self.checker.on_send(node, messages)
        for m in messages:
            epoch = self.nodes[m.frm].epoch
            delays = self.net.delays(m)
            for delay in delays:
                self._at(delay, lambda m=m, e=epoch: self._deliver(m, e))  # type: ignore[misc]
            if not delays and m.type is MessageType.SNAPSHOT:
                self._report_snapshot(m, ok=False)

    def _deliver(self, m: Message, sender_epoch: int) -> None:
        node = self.nodes.get(m.to)
        if (
            node is not None
            and node.alive
            and self._defer_if_paused(node, lambda: self._deliver(m, sender_epoch))
        ):
            return
        delivered = node is not None and node.alive and self.net.can_reach(m.frm, m.to)
        if self.nodes[m.frm].epoch != sender_epoch:  # the sender crashed meanwhile
            delivered = delivered and self.rng.random() >= self.profile.crash_loses_sends
        if node is not None and delivered:
            node.core.step(m)
        if m.type is MessageType.SNAPSHOT:
            self._report_snapshot(m, delivered)

    def _report_snapshot(self, m: Message, ok: bool) -> None:
        """A transport tells the sender how a snapshot transfer ended, as a real one must."""

        def report() -> None:
            sender = self.nodes.get(m.frm)
            if sender is not None and sender.alive and not self._defer_if_paused(sender, report):
                sender.core.report_snapshot(m.to, ok)

        self._at(self.rng.randint(1, TICK), report)

    def _note(self, text: str) -> None:
        self.trace.append(f"t={self.now // TICK}: {text}")

    # -- clients --------------------------------------------------------------------------

    def _client_loop(self, client: _Client) -> None:
        if not self._clients_on:
            return
        client.seq += 1
        kind = self.rng.choices(("get", "put", "incr", "cas", "del"), (35, 25, 15, 15, 10))[0]
        key = self.rng.choice(KEYS)
        args: tuple[int | None, ...] = ()
        if kind == "put":
            args = (self.rng.randint(1, 99),)
        elif kind == "incr":
            args = (self.rng.randint(1, 5),)
        elif kind == "cas":
            expected = self._last_value.get(key) if self.rng.random() < 0.7 else None
            args = (expected, self.rng.randint(1, 99))
        node = self._pick_node(client)
        if client.follow_up is not None:
            # Read one's own write through another node, as a client reading from the
            # nearest node does: right after a leader change, that may be the old leader.
            written, writer = client.follow_up
            client.follow_up = None
            others = [n for n in self._alive() if n.id != writer]
            if others:
                kind, key, args, node = "get", written, (), self.rng.choice(others)
        if node is None:
            self._at(TICK, lambda: self._client_loop(client))
            return
        op = _Op(client.id, key, kind, args, self.now, node.id)
        self._at(OP_TIMEOUT, lambda: self._time_out(op))
        self._request(client, op, node, node.epoch)

    def _request(self, client: _Client, op: _Op, node: SimNode, epoch: int) -> None:
        """`node` takes the client's request (later, if it is paused; never, if it crashed)."""
        if op.done or not node.alive or node.epoch != epoch:
            return  # the client gave up, or the request died with the node: it times out
        if self._defer_if_paused(node, lambda: self._request(client, op, node, epoch), True):
            self._hold_request(node, op)
            return
        if op.kind == "get":
            ctx = f"{client.id}:{client.seq}".encode()
            self._reads[ctx] = op
            node.core.read_index(ctx)
            return
        op.command = Command(client.id, client.seq, op.kind, op.key, op.args).encode()
        try:
            index, _ = node.core.propose(op.command)
        except RaftError as err:
            if isinstance(err, NotLeader):
                client.leader_hint = err.leader
            self._fail(op)
            return
        self._writes[(node.id, index)] = op
        # A leader that just appended is the only node holding that entry.
        if self._faults_on and self.rng.random() < self.profile.pounce / 4:
            self._at(0, lambda: self._strike_leader(node))

    def _maybe_observe(self, leader: SimNode) -> None:
        """Read the key of the newest acknowledged write from a `leader` just elected that
        does not know that write is committed, as a client reading right after a failover
        does. Only an entry of its own term committed tells it (§6.4): a ReadIndex taken
        from it before then could miss the write (read_index_before_term_commit)."""
        newest, observer, observing = self._newest_write, self._observer, self._observing
        if not self._faults_on or newest is None or (observing is not None and not observing.done):
            return
        index, key = newest
        if leader.core.log.committed >= index:
            return
        observer.seq += 1
        op = self._observing = _Op(observer.id, key, "get", (), self.now, leader.id)
        self._at(OP_TIMEOUT, lambda: self._time_out(op))
        self.stats.add("observed elections")
        self._note(f"{leader.id} is read from for {key!r}, written at {index}: is it committed?")
        epoch = leader.epoch
        self._at(self.rng.randint(0, 3), lambda: self._request(observer, op, leader, epoch))

    def _pick_node(self, client: _Client) -> SimNode | None:
        hint = self.nodes.get(client.leader_hint or "")
        if hint is not None and hint.alive and self.rng.random() < 0.9:
            return hint
        alive = [n for n in self.nodes.values() if n.alive]
        return self.rng.choice(alive) if alive else None

    def _complete(self, op: _Op, result: object) -> None:
        op.done = True
        if op.kind != "get":
            if op.kind in ("put", "incr") or result is True:
                self._changed[op.key] = self.now
            # Only while a node is paused (the old leader, mostly): at other times the reads
            # would only take the place of writes, which the other checks feed on.
            if self._pauses and self.rng.random() < FOLLOW_UP_READ:
                self._clients[op.client].follow_up = (op.key, op.node)
        self.stats.add("ops ok")
        self.history.append(
            Operation(op.client, op.key, op.kind, op.args, op.call, self.now, result)
        )
        if op.kind in ("put", "cas", "incr", "get"):
            value = op.args[0] if op.kind == "put" else result
            if op.kind == "cas":
                value = op.args[1] if result else self._last_value.get(op.key)
            self._last_value[op.key] = value if isinstance(value, int) else None
        self._next_op(op)

    def _fail(self, op: _Op) -> None:
        """The operation certainly had no effect: it is left out of the history."""
        op.done = True
        self.stats.add("ops failed")
        self._next_op(op)

    def _time_out(self, op: _Op) -> None:
        if op.done:
            return
        op.done = True
        # As a real client does, try another node next: the one it used may be stuck.
        self._clients[op.client].leader_hint = None
        if op.kind != "get":  # a write that may or may not have happened
            self.stats.add("ops unknown")
            self.history.append(Operation(op.client, op.key, op.kind, op.args, op.call, None))
        self._next_op(op)

    def _next_op(self, op: _Op) -> None:
        client = self._clients[op.client]
        if client.observer:
            return
        self._at(self.rng.randint(0, 2 * TICK), lambda: self._client_loop(client))

    # -- faults ---------------------------------------------------------------------------

    def _fault_tick(self) -> None:
        if not self._faults_on:
            return
        p, rng = self.profile, self.rng
        if rng.random() < p.crash:
            self._crash_one()
        if rng.random() < p.partition:
            self._partition()
        if rng.random() < p.churn:
            self._churn()
        if rng.random() < p.transfer:
            self._transfer()
        if rng.random() < p.pause:
            self._pause_one()
        if rng.random() < p.slow_disk:
            victim = rng.choice(sorted(self.nodes))
            self._slow_until[victim] = self.now + rng.randint(5, 50) * TICK
            self._note(f"{victim} disk slow")
        self._at(TICK, self._fault_tick)

    def _alive(self) -> list[SimNode]:
        return [self.nodes[n] for n in sorted(self.nodes) if self.nodes[n].alive]

    def leader(self) -> SimNode | None:
        """The live leader of the highest term, if any."""
        leaders = [n for n in self._alive() if n.core.role is Role.LEADER]
        return max(leaders, key=lambda n: n.core.term, default=None)

    def _victim(self, candidates: list[SimNode], bias: float = 0.0) -> SimNode | None:
        """The node a crash or a pause strikes: the leader, if among `candidates`, as often
        as the profile says (or `bias`, if more), else any of them."""
        if not candidates:
            return None
        leader = self.leader()
        if leader in candidates and self.rng.random() < max(bias, self.profile.crash_leader):
            return leader
        return self.rng.choice(candidates)

    def _crash_one(self) -> None:
        node = self._victim(self._alive())
        if node is not None:
            self._crash(node, quick=self.rng.random() < self.profile.quick_restart)

    def _pause_one(self) -> None:
        node = self._victim([n for n in self._alive() if not self._paused(n)], PAUSE_LEADER)
        if node is not None:
            self._pause(node)

    def _pause(self, node: SimNode) -> None:
        if any(p.watch for p in self._pauses.values()):
            return  # while a watched pause waits, the others keep going
        # Long enough, mostly, for the others to elect a new leader and commit without it.
        # A watched leader's pause instead lasts until a read it could answer stale waits for
        # it (up to WATCH_LIMIT): its clients give up on it only after OP_TIMEOUT, and then
        # must find the new leader and complete a write there first.
        watch = node.core.role is Role.LEADER and self.rng.random() < self.profile.watch
        length = WATCH_LIMIT if watch else self.rng.randint(1, 6) * ELECTION_TICK * TICK
        clients_first = watch or self.rng.random() < 0.5
        pause = _Pause(self.now, self.now + length, clients_first, watch)
        self._pauses[node.id] = pause
        self._at(length, lambda: self._resume(node, pause))
        self.stats.add("pauses")
        self._note(f"{node.id} pauses")

    def _resume(self, node: SimNode, pause: _Pause) -> None:
        """End `pause` (unless it already ended) and release what it held within a tick, in
        a random order, or the client requests first."""
        if self._pauses.get(node.id) is not pause:
            return  # ended early, or by a crash
        del self._pauses[node.id]
        if node.alive:
            self._note(
                f"{node.id} resumes" + (", its clients first" if pause.clients_first else "")
            )
        for request, fn in pause.held:
            if pause.clients_first:
                self._at(0 if request else self.rng.randint(1, TICK), fn)
            else:
                self._at(self.rng.randint(0, TICK), fn)

    def _hold_request(self, node: SimNode, op: _Op) -> None:
        """A request waits on a pause. A watched one ends within a tick if this is a read
        sent after a write changed its key during the pause: a read the paused node may not
        answer with what it holds (a linearizability violation if it does)."""
        pause = self._pauses[node.id]
        changed = self._changed.get(op.key, -1)
        if pause.watch and op.kind == "get" and pause.start < changed < op.call:
            pause.watch = False
            pause.until = self.now + self.rng.randint(1, TICK)
            self._at(pause.until - self.now, lambda: self._resume(node, pause))

    def _crash(self, node: SimNode, quick: bool) -> None:
        if not node.alive:
            return
        node.crash()
        pause = self._pauses.get(node.id)
        if pause is not None:  # it restarts running; what it held finds it crashed
            self._resume(node, pause)
        self.stats.add("crashes")
        self._note(f"{node.id} crashes")
        down = self.rng.randint(1, 2 * TICK) if quick else self.rng.randint(5, 50) * TICK
        self._at(down, lambda: self._restart(node))

    def _strike_leader(self, node: SimNode) -> None:
        if not node.alive or node.core.role is not Role.LEADER or self._paused(node):
            return
        strike = self.rng.random()
        if strike < 0.25 and self.profile.pause > 0:
            self._pause(node)
            return
        if strike < 0.6:
            self._crash(node, quick=True)
            return
        self.net.split({node.id}, set(self.nodes) - {node.id})
        self._note(f"partition: new leader {node.id} isolated")
        self.stats.add("partitions")
        self._at(self.rng.randint(5, 30) * TICK, self._heal_network)

    def _restart(self, node: SimNode) -> None:
        if node.alive or node.id not in self.nodes:
            return
        node.start()
        self.checker.restarted(node.id)
        self._start_ticking(node)
        self._note(f"{node.id} restarts at term {node.core.term}")

    def _partition(self) -> None:
        ids = sorted(self.nodes)
        if len(ids) < 2:  # a cluster of one, not grown yet: nothing to cut
            return
        shape = self.rng.choice(("split", "isolate leader", "one way", "bridge", "ring"))
        leader = self.leader()
        if shape == "split":
            side = set(self.rng.sample(ids, self.rng.randint(1, len(ids) // 2)))
            self.net.split(side, set(ids) - side)
        elif shape == "isolate leader" and leader is not None:
            self.net.split({leader.id}, set(ids) - {leader.id})
        elif shape == "one way":
            victim = self.rng.choice(ids)
            self.net.one_way({victim}, set(ids) - {victim})
        elif shape == "bridge":
            self.net.bridge(ids, self.rng.choice(ids))
        else:
            self.net.ring(ids)
        self._note(f"partition: {shape}")
        self.stats.add("partitions")
        self._at(self.rng.randint(10, 80) * TICK, self._heal_network)

    def _heal_network(self) -> None:
        if self.net.blocked:
            self.net.heal()
            self._note("network healed")

    def _churn(self, of_voters: bool = False) -> None:
        """The leader proposes a membership change; `of_voters`: one that changes the voters
        if it can (a learner's does not move a quorum)."""
        leader = self.leader()
        if leader is None or self._paused(leader):
            return
        members = leader.core.membership
        voters = [ConfChange(ConfChangeKind.PROMOTE, n) for n in sorted(members.learners)]
        if len(members.voters) > 3:
            voters += [ConfChange(ConfChangeKind.REMOVE, n) for n in sorted(members.voters)]
        choices: list[ConfChange] = []
        if len(members.members()) < self.options.nodes + 2:
            choices.append(ConfChange(ConfChangeKind.ADD_LEARNER, f"n{self._next_id}"))
        choices += voters
        choices += [ConfChange(ConfChangeKind.REMOVE, n) for n in sorted(members.learners)]
        if of_voters and voters:
            choices = voters
        if not choices:  # grown from fewer than three founders to its cap: nothing to change
            return
        change = self.rng.choice(choices)
        try:
            leader.core.propose_conf_change(change)
        except RaftError as err:
            self._note(f"{change.kind.value} {change.node} refused: {err}")
            return
        self.stats.add("membership changes")
        self._note(f"{leader.id} proposes {change.kind.value} {change.node}")
        if change.kind is ConfChangeKind.ADD_LEARNER:
            self._next_id += 1
            self._add_node(change.node, Durable())
        self._maybe_change_at_once()
        if self._change_pounces():
            self._at(self.rng.randint(0, 2 * TICK), lambda: self._strike_leader(leader))

    def _maybe_change_at_once(self) -> None:
        """At a moment a correct core refuses a membership change, sometimes propose one."""
        if self._change_pounces():
            self._at(self.rng.randint(0, 3), lambda: self._churn(of_voters=True))

    def _change_pounces(self) -> bool:
        # Profiles without change pounces draw nothing here: their seeds run as before.
        chance = self.profile.change_pounce
        return self._faults_on and chance > 0 and self.rng.random() < chance

    def _transfer(self) -> None:
        leader = self.leader()
        if leader is None or self._paused(leader):
            return
        targets = sorted(leader.core.membership.voters - {leader.id})
        if not targets:
            return
        target = self.rng.choice(targets)
        try:
            leader.core.transfer_leadership(target)
        except RaftError:
            return
        self.stats.add("transfers")
        self._note(f"{leader.id} transfers leadership to {target}")

    # -- the run --------------------------------------------------------------------------

    def run(self) -> SimResult:
        violation: Violation | None = None
        try:
            self._fault_phase()
            self._heal_phase()
            self._check_linearizable()
        except Violation as v:
            violation = v
        except Exception as exc:  # a core assertion: report it like any other violation
            where = traceback.extract_tb(exc.__traceback__)[-1]
            violation = Violation(
                "crash", f"{type(exc).__name__}: {exc} ({where.filename}:{where.lineno})"
            )
        self.stats.add("messages", self.net.sent)
        self.stats.add("events", self._events)
        return SimResult(self.options, violation, list(self.trace), dict(self.stats.counts))

    def _fault_phase(self) -> None:
        for client in (c for c in self._clients if not c.observer):
            self._at(self.rng.randint(0, 5 * TICK), lambda c=client: self._client_loop(c))  # type: ignore[misc]
        self._at(TICK, self._fault_tick)
        self._run_until(self.options.steps * TICK)

    def _heal_phase(self) -> None:
        self._faults_on = False
        self._clients_on = False
        self.net.heal()
        self.net.faults = NetworkFaults(max_delay=self.profile.network.max_delay)
        self._slow_until.clear()
        for nid in sorted(self._pauses):
            self._resume(self.nodes[nid], self._pauses[nid])
        for node in list(self.nodes.values()):
            if not node.alive:
                self._restart(node)
        self._note("all faults healed")
        healed = self.now
        leader = self._await(HEAL_BOUND, self.leader)
        if leader is None:
            raise Violation("liveness", f"no leader within {HEAL_BOUND} ticks after healing")
        self._note(f"leader after healing: {leader.id} (term {leader.core.term})")
        # Outstanding operations finish or time out; then the cluster must take a new write.
        self._run_until(self.now + OP_TIMEOUT + TICK)
        index = self._await(HEAL_BOUND, self._final_write)
        if index is None:
            raise Violation("liveness", "a write after healing did not commit")
        if not self._await_convergence(index):
            raise Violation("convergence", self._divergence(index))
        self.stats.add("heal ticks", (self.now - healed) // TICK)

    def _await_convergence(self, index: int) -> bool:
        """Every member applies up to `index` and agrees, within HEAL_BOUND ticks of the last
        entry any member applied: a learner added late may still be catching up, one small
        append per round trip in some profiles, and that is slow, not stuck."""
        for _ in range(CATCH_UP_BOUNDS):
            applied = sum(n.core.log.applied for n in self.nodes.values())
            if self._await(HEAL_BOUND, lambda: self._converged(index)) is not None:
                return True
            if sum(n.core.log.applied for n in self.nodes.values()) == applied:
                return False
        return False

    def _await(self, ticks: int, probe: Callable[[], T | None]) -> T | None:
        for _ in range(ticks):
            found = probe()
            if found is not None:
                return found
            self._run_until(self.now + TICK)
        return probe()

    def _final_write(self) -> int | None:
        """The index of a write after healing once a leader has committed it; None until
        then. A leader may be deposed before its entry spreads (one cut off until the heal
        has not yet heard of its successor, or one removed from the members, which no one
        tells), and the entry is lost: it is proposed again at the leader of the highest
        term, as a client would retry it."""
        leader = self.leader()
        if self._final is not None:
            node, index, term = self._final
            log = node.core.log
            if log.term(index) == term and log.committed >= index:
                return index
            if node is leader and node.core.term == term:
                return None  # still its leader's to commit
        if leader is None:
            return None
        try:
            index, term = leader.core.propose(Command(-1, 0, "put", "final", (1,)).encode())
        except RaftError:
            return None
        self._final = (leader, index, term)
        return None

    def _members(self) -> list[SimNode]:
        leader = self.leader()
        if leader is None:
            return []
        return [self.nodes[n] for n in sorted(leader.core.membership.members())]

    def _converged(self, index: int) -> bool | None:
        members = self._members()
        if not members or any(not n.alive or n.core.log.applied < index for n in members):
            return None
        leader = self.leader()
        assert leader is not None
        applied = leader.core.log.applied
        if any(n.core.log.applied != applied for n in members):
            return None
        states = {tuple(sorted(n.kv.data.items())) for n in members}
        if len(states) > 1:
            raise Violation("convergence", self._divergence(index))
        return True

    def _divergence(self, index: int) -> str:
        parts = [
            f"{n.id}: alive={n.alive} applied={n.core.log.applied} kv={n.kv.data}"
            for n in self._members()
        ]
        return f"members did not converge on index {index}: " + "; ".join(parts)

    def _check_linearizable(self) -> None:
        result = check_history(self.history)
        if not result.ok:
            why = "checker gave up (not proven)" if result.gave_up else "not linearizable"
            raise Violation("linearizability", f"key {result.key!r}: {why}\n{result.explanation}")


def run_seed(options: SimOptions) -> SimResult:
    return Simulation(options).run()
