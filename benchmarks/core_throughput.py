"""Throughput of the sans-IO Raft core alone: three RaftCores in one process, no I/O.

This is a benchmark, not a test. It wires three `RaftCore`s with the smallest runtime that
follows the Ready contract (quicraft/core/ready.py): messages go to an in-memory FIFO, "persisting"
appends to an in-memory list, "applying" checks and counts the entries, then `advance()`. The
first node campaigns once and wins; the leader is ticked only at the end (below), so nothing
can disturb it.

After the election the leader is given `--entries` proposals of `--payload` bytes, `--batch` of
them at a time between two Ready cycles (the core packs everything proposed between two Ready
calls into one AppendEntries per follower). Two ways of feeding it:

- closed (default): propose one batch, run Ready cycles until nothing is left to do (the batch
  committed and applied on the leader), then propose the next. One client, no pipelining.
- pipelined: propose one batch before every Ready round while earlier batches are still in
  flight, then drain.

Either way a new commit index reaches the followers on the next batch's AppendEntries, as in
the runtime; the last one goes out with the leader's next tick (`settle`), as the runtime's
ticker would send it.

Reported rates are entries divided by the wall time from the first proposal until the last entry
is committed on the leader, and until it is applied on all three nodes. The time includes this
file's tiny runtime (delivery, storage, apply): about 5-10% of the time in the profiles.
Messages are handed over by reference, so there is no encoding, copying or network cost: this
is an upper bound for a real runtime, and shows whether the core itself can keep up.

    python benchmarks/core_throughput.py [--entries N] [--batch B] [--payload BYTES]
                                         [--repeat R] [--mode closed|pipelined] [--json]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import statistics
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:  # run as `python benchmarks/core_throughput.py` without installing
    sys.path.insert(0, _ROOT)

from quicraft.core import (  # noqa: E402
    Config,
    Entry,
    HardState,
    Message,
    RaftCore,
    Ready,
    Role,
    Snapshot,
    bootstrap_state,
)

GOAL_ENTRIES_PER_S = 100_000
NODE_IDS = ["n1", "n2", "n3"]


@dataclass(slots=True)
class Node:
    """One core plus its in-memory "disk" and state machine."""

    core: RaftCore
    stored: list[Entry]  # stored[i] is the entry at index i + 1 (no compaction here)
    hard_state: HardState
    snapshot: Snapshot | None = None
    applied: int = 0  # last index applied to the state machine
    applied_bytes: int = 0  # the "state machine": total payload bytes applied


@dataclass(slots=True)
class Counters:
    readies: int = 0
    messages: int = 0
    rounds: int = 0


class Cluster:
    """A minimal single-threaded runtime for three cores, following the Ready contract."""

    def __init__(self, seed: int) -> None:
        state = bootstrap_state(NODE_IDS)
        self.nodes: dict[str, Node] = {}
        for n, node_id in enumerate(NODE_IDS):
            core = RaftCore(Config(id=node_id), random.Random(seed + n), state)
            # bootstrap_state marks the founding entries committed; they are applied below
            # like any others, so start from applied = 0.
            self.nodes[node_id] = Node(core, list(state.entries), state.hard_state)
        self.order = list(self.nodes.values())
        self.inbox: deque[Message] = deque()
        self.counters = Counters()
        # Set by run_until_quiet() once the watched index is committed / applied everywhere.
        self.watch_index = 0
        self.leader_commit_at: float | None = None
        self.all_applied_at: float | None = None

    # -- the Ready contract -----------------------------------------------------------------

    def handle_ready(self, node: Node) -> None:
        rd: Ready = node.core.ready()
        self.counters.readies += 1
        # 1. messages that may leave at once
        self.inbox.extend(rd.messages)
        # 2. "persist": snapshot, then entries (replacing any suffix they overlap), then state
        if rd.snapshot is not None:
            node.snapshot = rd.snapshot
            node.stored = []  # this runtime never compacts, so a snapshot replaces the log
        if rd.entries:
            first = rd.entries[0].index
            base = node.snapshot.meta.index if node.snapshot is not None else 0
            del node.stored[first - base - 1 :]
            node.stored.extend(rd.entries)
        if rd.hard_state is not None:
            node.hard_state = rd.hard_state
        # 3. messages that promise what step 2 stored
        self.inbox.extend(rd.persisted_messages)
        self.counters.messages += len(rd.messages) + len(rd.persisted_messages)
        # 4. install the snapshot, then apply committed entries in order
        if rd.snapshot is not None:
            node.applied = rd.snapshot.meta.index
        applied = node.applied
        for entry in rd.committed_entries:
            if entry.index != applied + 1:
                raise AssertionError(f"{node.core.id}: applied {entry.index} after {applied}")
            applied = entry.index
            node.applied_bytes += len(entry.data)
        node.applied = applied
        # 5. read states: this benchmark issues no reads
        # 6.
        node.core.advance(rd)

    def run_until_quiet(self) -> None:
        """Ready rounds until a round finds no node with anything left to do."""
        while self.round():
            pass

    def round(self) -> bool:
        """Every node with work handles one Ready, then every queued message is delivered.
        Returns whether there was anything to do."""
        busy = False
        for node in self.order:
            if node.core.has_ready():
                self.handle_ready(node)
                busy = True
        inbox, nodes = self.inbox, self.nodes
        if inbox:
            busy = True
            while inbox:
                m = inbox.popleft()
                nodes[m.to].core.step(m)
        if busy:
            self.counters.rounds += 1
            self._check_watch()
        return busy

    def _check_watch(self) -> None:
        watch = self.watch_index
        if self.all_applied_at is not None or watch == 0:
            return
        if self.leader_commit_at is None and self.leader().core.log.committed >= watch:
            self.leader_commit_at = time.perf_counter()
        if self.leader_commit_at is not None and all(n.applied >= watch for n in self.order):
            self.all_applied_at = time.perf_counter()

    # -- helpers ----------------------------------------------------------------------------

    def leader(self) -> Node:
        leaders = [n for n in self.order if n.core.role is Role.LEADER]
        if len(leaders) != 1:
            raise AssertionError(f"expected one leader, found {len(leaders)}")
        return leaders[0]

    def elect(self) -> Node:
        self.order[0].core.campaign()
        self.run_until_quiet()
        leader = self.leader()
        # The new leader's no-op entry is committed and applied everywhere before timing.
        last = leader.core.log.last_index()
        if not all(n.applied == last for n in self.order):
            raise AssertionError("election did not settle")
        return leader

    def settle(self) -> None:
        """Tick the leader until every follower knows its commit index: with nothing more to
        append, the core sends the last commit with a tick (RaftCore._tick_leader)."""
        leader = self.leader().core
        for _ in range(leader.config.election_tick):
            if all(n.core.log.committed == leader.log.committed for n in self.order):
                return
            leader.tick()
            self.run_until_quiet()
        raise AssertionError("the followers never learned the leader's commit index")

    def check_consistent(self, last: int) -> None:
        for node in self.order:
            log = node.core.log
            if log.committed != last or node.applied != last or log.last_index() != last:
                raise AssertionError(
                    f"{node.core.id}: committed {log.committed}, applied {node.applied}, "
                    f"last {log.last_index()}, expected {last}"
                )
            if len(node.stored) != last or node.stored[-1] != self.order[0].stored[-1]:
                raise AssertionError(f"{node.core.id}: stored log differs")


@dataclass(slots=True)
class RunResult:
    entries: int
    leader_commit_s: float
    all_applied_s: float
    leader_commit_per_s: float
    all_applied_per_s: float
    readies: int
    messages: int
    rounds: int
    #: CPU time of this process over the whole run (to the last apply). Much below
    #: all_applied_s means the run was preempted by other work on the machine.
    cpu_s: float


def run_once(entries: int, batch: int, payload: int, mode: str, seed: int) -> RunResult:
    cluster = Cluster(seed)
    leader = cluster.elect()
    core = leader.core
    data = bytes(payload)  # one shared payload: the core treats data as opaque bytes
    start_index = core.log.last_index()
    target = start_index + entries
    cluster.watch_index = target
    cluster.counters = Counters()
    propose = core.propose

    cpu_start = time.process_time()
    start = time.perf_counter()
    remaining = entries
    while remaining:
        n = min(batch, remaining)
        for _ in range(n):
            propose(data)
        remaining -= n
        if mode == "closed":
            cluster.run_until_quiet()  # one client waiting for each batch
        else:
            cluster.round()  # the next batch goes out while this one is in flight
    cluster.run_until_quiet()
    cluster.settle()
    end = time.perf_counter()
    cpu_s = time.process_time() - cpu_start

    cluster.check_consistent(target)
    commit_at = cluster.leader_commit_at if cluster.leader_commit_at is not None else end
    applied_at = cluster.all_applied_at if cluster.all_applied_at is not None else end
    commit_s, applied_s = max(commit_at - start, 1e-9), max(applied_at - start, 1e-9)
    c = cluster.counters
    return RunResult(
        entries=entries,
        leader_commit_s=commit_s,
        all_applied_s=applied_s,
        leader_commit_per_s=entries / commit_s,
        all_applied_per_s=entries / applied_s,
        readies=c.readies,
        messages=c.messages,
        rounds=c.rounds,
        cpu_s=cpu_s,
    )


@dataclass(slots=True)
class Summary:
    median: float
    min: float
    max: float


def summarize(values: list[float]) -> Summary:
    return Summary(statistics.median(values), min(values), max(values))


@dataclass(slots=True)
class Report:
    benchmark: str
    entries: int
    batch: int
    payload: int
    repeat: int
    mode: str
    python: str
    cpus: int | None
    loadavg_1min_before: float
    goal_entries_per_s: int
    leader_commit_per_s: Summary
    all_applied_per_s: Summary
    #: entries / CPU seconds of the whole run: less sensitive to other load on the machine.
    applied_per_cpu_s: Summary
    runs: list[RunResult] = field(default_factory=list)


def _fmt(s: Summary) -> str:
    return f"median {s.median:>10,.0f}  min {s.min:>10,.0f}  max {s.max:>10,.0f}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--entries", type=int, default=200_000, help="entries per run (200000)")
    p.add_argument("--batch", type=int, default=256, help="proposals per Ready cycle (256)")
    p.add_argument("--payload", type=int, default=100, help="payload bytes per entry (100)")
    p.add_argument("--repeat", type=int, default=5, help="runs; median/min/max reported (5)")
    p.add_argument("--mode", choices=["closed", "pipelined"], default="closed")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = p.parse_args(argv)
    for name in ("entries", "batch", "repeat"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    if args.payload < 0:
        p.error("--payload must not be negative")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load_before = os.getloadavg()[0]
    runs: list[RunResult] = []
    for r in range(args.repeat):
        gc.collect()  # start every run from the same heap, not the previous run's garbage
        result = run_once(args.entries, args.batch, args.payload, args.mode, args.seed + r)
        runs.append(result)
        if not args.json:
            print(
                f"run {r + 1}/{args.repeat}: "
                f"leader commit {result.leader_commit_per_s:>10,.0f} entries/s  "
                f"applied on all {result.all_applied_per_s:>10,.0f} entries/s  "
                f"({result.all_applied_s:.2f} s wall, {result.cpu_s:.2f} s CPU, "
                f"{result.rounds:,} rounds, "
                f"{result.readies:,} Readies, {result.messages:,} messages)",
                flush=True,
            )
    report = Report(
        benchmark="core_throughput",
        entries=args.entries,
        batch=args.batch,
        payload=args.payload,
        repeat=args.repeat,
        mode=args.mode,
        python=f"{platform.python_implementation()} {platform.python_version()}",
        cpus=os.cpu_count(),
        loadavg_1min_before=load_before,
        goal_entries_per_s=GOAL_ENTRIES_PER_S,
        leader_commit_per_s=summarize([r.leader_commit_per_s for r in runs]),
        all_applied_per_s=summarize([r.all_applied_per_s for r in runs]),
        applied_per_cpu_s=summarize([r.entries / max(r.cpu_s, 1e-9) for r in runs]),
        runs=runs,
    )
    if args.json:
        print(json.dumps(asdict(report), indent=2))
        return 0
    c, a = report.leader_commit_per_s, report.all_applied_per_s
    print(
        f"\n{args.entries:,} entries x {args.payload} B, batch {args.batch}, {args.mode}, "
        f"{args.repeat} runs, {report.python}, {report.cpus} CPUs, "
        f"load average before {load_before:.2f}"
    )
    print(f"committed on leader  entries/s: {_fmt(c)}")
    print(f"applied on all three entries/s: {_fmt(a)}")
    print(f"applied on all per CPU second  : {_fmt(report.applied_per_cpu_s)}")
    verdict = "meets" if c.median >= GOAL_ENTRIES_PER_S else "below"
    print(f"goal {GOAL_ENTRIES_PER_S:,} committed entries/s: {verdict} (median)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
