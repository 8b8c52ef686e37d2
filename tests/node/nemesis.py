"""A nemesis run: a real 3-node cluster on loopback under a seeded schedule of crashes, pauses
and leadership changes, driven by clients whose whole history is then checked.

Each test in test_cluster.py checks one scenario. Here faults follow each other at random
while clients keep doing every kind of operation (get, set, incr, cas, delete) on a few shared
keys, and afterwards the run checks:

- the clients' history is linearizable, by the checker the simulator uses
  (quicraft/sim/linearizability.py); a write whose answer never came counts as "may or may
  not have happened", a read without an answer as nothing;
- every node ends holding the same data as a linearizable read of it;
- no node exited or logged a traceback on its own, and no request failed in a way that
  retrying cannot explain.

    .venv/bin/python tests/node/nemesis.py --seed 7 --duration 120

The seed fixes the schedule of faults and the clients' choices, not the timing of four real
processes, so a failing run is not replayed exactly: the folder it ran in is kept, with every
node's log and the history (history.json), and the report names it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cluster_harness import Cluster

from quicraft.client import Client, ClientError, MgmtError, connect_mgmt
from quicraft.sim.linearizability import Operation, check_history

KEYS = ("a", "b", "c", "d")
#: The operations as the checker names them (its model is a register per key), and how often.
KINDS = ("get", "put", "incr", "cas", "del")
WEIGHTS = (35, 25, 15, 15, 10)
FAULTS = (
    "kill", "kill-leader", "pause", "pause-leader", "kill-majority", "kill-all",
    "pause-and-kill", "restart", "transfer",
)  # fmt: skip
#: Errors a write may end with under faults; its effect is then unknown. Anything else (bad
#: request, forbidden, internal) is a problem of the run.
EXPECTED_ERRORS = frozenset({"timeout", "unavailable", "session_expired"})
#: A request's whole budget, retries included: short enough that a write stuck behind a lost
#: majority becomes "unknown" and its client goes on, long enough to ride out an election.
CLIENT_TIMEOUT_S = 8.0
SETTLE_S = 60.0


@dataclass
class Report:
    seed: int
    folder: Path
    history: list[Operation] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    def count(self, *, known: bool, writes: bool) -> int:
        return sum(
            1
            for op in self.history
            if (op.ret is not None) == known and (op.kind != "get") == writes
        )

    def summary(self) -> str:
        kinds = Counter(f.split()[1] for f in self.faults)
        faults = ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items()))
        return (
            f"seed {self.seed}: {self.count(known=True, writes=True)} writes and "
            f"{self.count(known=True, writes=False)} reads answered, "
            f"{self.count(known=False, writes=True)} writes unknown; "
            f"{len(self.faults)} faults ({faults}); "
            f"errors {dict(self.errors) or 'none'}"
        )

    def describe(self) -> str:
        head = self.summary()
        if not self.problems:
            return f"{head}; linearizable, every node agrees"
        rerun = f"{sys.executable} tests/node/nemesis.py --seed {self.seed}"
        return "\n".join(
            [f"{head}", f"PROBLEMS (folder kept: {self.folder}; rerun: {rerun}):"]
            + [f"- {p}" for p in self.problems]
        )


@dataclass
class _Load:
    """What the clients share. Values for puts and cas are each new, so that the checker can
    tell writes apart; the last value a client saw of a key makes a cas that may succeed."""

    report: Report
    stop_at: float  #: on the event loop's clock
    stale_reads: bool
    _next: int = 1000
    last: dict[str, int | None] = field(default_factory=dict)

    def fresh(self) -> int:
        self._next += 1
        return self._next

    def saw(self, key: str, value: object) -> None:
        self.last[key] = value if isinstance(value, int) else None


async def _perform(client: Client, kind: str, key: str, args: tuple[Any, ...], stale: bool) -> Any:
    """One operation through the client, its result as the checker's model gives it."""
    if kind == "get":
        value = await client.kv.get(key, stale=stale)
        return None if value is None else int(value)
    if kind == "put":
        await client.kv.set(key, str(args[0]))
        return None
    if kind == "incr":
        return await client.kv.incr(key, args[0])
    if kind == "cas":
        expected = None if args[0] is None else str(args[0])
        return await client.kv.cas(key, expected, str(args[1]))
    return await client.kv.delete(key)


async def _client_loop(
    number: int, writer: Client, reader: Client, rng: random.Random, load: _Load
) -> None:
    loop, report = asyncio.get_running_loop(), load.report
    while loop.time() < load.stop_at:
        kind = rng.choices(KINDS, WEIGHTS)[0]
        key = rng.choice(KEYS)
        args: tuple[Any, ...] = ()
        if kind == "put":
            args = (load.fresh(),)
        elif kind == "incr":
            args = (rng.randint(1, 5),)
        elif kind == "cas":
            expected = load.last.get(key) if rng.random() < 0.7 else None
            args = (expected, load.fresh())
        call = time.monotonic_ns()
        try:
            client = reader if kind == "get" else writer
            result = await _perform(client, kind, key, args, load.stale_reads)
        except ClientError as err:
            report.errors[err.code] += 1
            if err.code not in EXPECTED_ERRORS:
                report.problems.append(f"client {number}: {kind} {key} failed: {err.code} {err}")
            if kind != "get":
                report.history.append(Operation(number, key, kind, args, call, None))
            await asyncio.sleep(rng.uniform(0.05, 0.3))
            continue
        ret = time.monotonic_ns()
        report.history.append(Operation(number, key, kind, args, call, ret, result))
        if kind in ("get", "incr"):
            load.saw(key, result)
        elif kind == "put" or (kind == "cas" and result):
            load.saw(key, args[-1])
        await asyncio.sleep(rng.uniform(0, 0.02))


class _Nemesis:
    """Faults on the cluster's processes, one at a time, each healed before the next."""

    def __init__(self, cluster: Cluster, rng: random.Random, report: Report):
        self.cluster = cluster
        self.local = cluster.local
        self.rng = rng
        self.report = report
        self.started = time.monotonic()
        self.killed: set[int] = set()  # numbers of nodes we stopped and did not restart yet
        self.paused: set[int] = set()

    def note(self, text: str) -> None:
        self.report.faults.append(f"{time.monotonic() - self.started:7.2f}s {text}")

    async def run(self, stop_at: float) -> None:
        loop = asyncio.get_running_loop()
        deck: list[str] = []  # every kind of fault once, in a new order each time round
        while loop.time() < stop_at:
            await asyncio.sleep(self.rng.uniform(0.5, 2.5))
            self.check_alive()
            deck = deck or self.rng.sample(FAULTS, len(FAULTS))
            fault = deck.pop()
            # Mostly shorter than a request's budget; one in five longer, so that writes
            # caught by a lost majority end unknown and their clients go on without them.
            longer = self.rng.random() < 0.2
            hold_s = self.rng.uniform(3, 12) if longer else self.rng.uniform(0.3, 3.0)
            await self.inflict(fault, hold_s)
            await self.heal()

    async def inflict(self, fault: str, hold_s: float) -> None:
        numbers = [1, 2, 3]
        victim = self.rng.choice(numbers)
        if fault.endswith("-leader"):
            victim = await self.leader() or victim
        if fault in ("kill", "kill-leader"):
            await self.kill(victim)
        elif fault in ("pause", "pause-leader"):
            self.pause(victim)
        elif fault == "kill-majority":
            for number in self.rng.sample(numbers, 2):
                await self.kill(number)
        elif fault == "kill-all":
            for number in numbers:
                await self.kill(number)
        elif fault == "pause-and-kill":
            self.pause(victim)
            await self.kill(self.rng.choice([n for n in numbers if n != victim]))
        elif fault == "restart":  # SIGTERM: a leader hands over before it goes
            await self.kill(victim, signal.SIGTERM)
        elif fault == "transfer":
            await self.transfer()
        self.note(f"{fault} (held {hold_s:.1f}s)")
        await asyncio.sleep(hold_s)

    async def heal(self) -> None:
        for number in sorted(self.paused):
            self.local.kill(self.local.node(number), signal.SIGCONT)
        self.paused.clear()
        for number in sorted(self.killed):
            self.cluster.start(number)
        self.killed.clear()

    def pause(self, number: int) -> None:
        self.local.kill(self.local.node(number), signal.SIGSTOP)
        self.paused.add(number)

    async def kill(self, number: int, sig: int = signal.SIGKILL) -> None:
        node = self.local.node(number)
        if sig != signal.SIGKILL and number in self.paused:
            sig = signal.SIGKILL  # a stopped process would hold SIGTERM until it is continued
        self.local.kill(node, sig)
        deadline = time.monotonic() + 15
        while self.local.running(node):
            if time.monotonic() > deadline:  # a graceful stop that hangs is a problem too
                self.report.problems.append(f"n{number} did not stop on signal {sig}")
                self.local.kill(node, signal.SIGKILL)
                deadline = math.inf
            await asyncio.sleep(0.02)
        self.paused.discard(number)
        self.killed.add(number)

    def check_alive(self) -> None:
        for number, node in enumerate(self.local.nodes, start=1):
            if number not in self.killed and not self.local.running(node):
                tail = self.cluster.log(number)[-3000:]
                self.report.problems.append(f"n{number} exited on its own:\n{tail}")
                self.cluster.start(number)

    async def leader(self) -> int | None:
        """The number of the node that says it leads, as one live node sees it; None if
        no live node answers within a second or knows a leader."""
        live = [n for n in (1, 2, 3) if n not in self.killed | self.paused]
        node = self.local.node(self.rng.choice(live))
        mgmt = connect_mgmt(node.address, self.local.cluster, self.local.certs, timeout=1)
        try:
            async with mgmt:
                status = await mgmt.status()
        except MgmtError:
            return None
        where = {m["id"]: m["address"] for m in status["members"]}.get(status["leader"])
        return next((i for i, n in enumerate(self.local.nodes, 1) if n.address == where), None)

    async def transfer(self) -> None:
        mgmt = connect_mgmt(self.local.endpoints(), self.local.cluster, self.local.certs, timeout=3)
        with contextlib.suppress(MgmtError):  # no leader just now: a fault like any other
            async with mgmt:
                await mgmt.transfer("auto")


async def _final_state(cluster: Cluster, report: Report, number: int) -> dict[str, int | None]:
    """Linearizable reads of every key once the faults are over, recorded in the history."""
    final: dict[str, int | None] = {}
    async with cluster.client(timeout=SETTLE_S) as client:
        for key in KEYS:
            call = time.monotonic_ns()
            final[key] = await _perform(client, "get", key, (), stale=False)
            ret = time.monotonic_ns()
            report.history.append(Operation(number, key, "get", (), call, ret, final[key]))
    return final


async def _converged(cluster: Cluster, final: dict[str, int | None]) -> list[str]:
    """Every node's own state machine reaches the final values (no writes happen now)."""
    problems = []
    for number in range(1, len(cluster.nodes) + 1):
        deadline = time.monotonic() + SETTLE_S
        async with cluster.client(number, timeout=SETTLE_S) as client:
            while True:
                held = {}
                for key in KEYS:
                    value = await client.kv.get(key, stale=True)
                    held[key] = None if value is None else int(value)
                if held == final:
                    break
                if time.monotonic() > deadline:
                    problems.append(f"n{number} holds {held}, the cluster {final}")
                    break
                await asyncio.sleep(0.1)
    return problems


def _tracebacks(cluster: Cluster) -> list[str]:
    found = []
    for number in range(1, len(cluster.nodes) + 1):
        text = cluster.log(number)
        at = text.find("Traceback")
        if at >= 0:
            found.append(f"n{number} logged a traceback:\n{text[max(0, at - 300) : at + 2500]}")
    return found


async def nemesis_run(
    folder: Path, seed: int, duration_s: float, clients: int = 4, stale_reads: bool = False
) -> Report:
    """Start a cluster in `folder`, run clients and faults for `duration_s`, check, stop it.

    `stale_reads` makes every read a stale one from a node chosen per client: not
    linearizable, so the run must report it (the check's own check)."""
    rng = random.Random(seed)
    report = Report(seed, folder)
    cluster = Cluster(folder / "cluster")
    cluster.extra = ["--snapshot-every", "100"]  # snapshots, and installs after restarts
    cluster.start()
    try:
        await _run(cluster, rng, report, duration_s, clients, stale_reads)
    except Exception:
        report.problems.append(f"the run itself failed:\n{traceback.format_exc()}")
    finally:
        for node in cluster.nodes:  # a paused node would sit out its SIGTERM
            cluster.local.kill(node, signal.SIGCONT)
        cluster.stop()
    report.problems += _tracebacks(cluster)
    (folder / "history.json").write_text(
        json.dumps([asdict(op) for op in report.history], indent=0)
    )
    return report


async def _run(
    cluster: Cluster,
    rng: random.Random,
    report: Report,
    duration_s: float,
    clients: int,
    stale_reads: bool,
) -> None:
    async with cluster.client(timeout=SETTLE_S) as first:
        await first.kv.set("nemesis/ready", b"1")  # a leader, and a majority holds the log
    load = _Load(report, asyncio.get_running_loop().time() + duration_s, stale_reads)
    nemesis = _Nemesis(cluster, random.Random(rng.random()), report)
    opened: list[Client] = []

    def client(*numbers: int) -> Client:
        made = cluster.client(*numbers, timeout=CLIENT_TIMEOUT_S)
        opened.append(made)
        return made

    loops = []
    for number in range(clients):
        writer = client()
        reader = client(rng.randint(1, 3)) if stale_reads else writer
        loops.append(_client_loop(number, writer, reader, random.Random(rng.random()), load))
    try:
        await asyncio.gather(nemesis.run(load.stop_at), *loops)
        nemesis.check_alive()
        await nemesis.heal()
        final = await _final_state(cluster, report, clients)
        report.problems += await _converged(cluster, final)
    finally:
        for made in opened:
            await made.close()
    verdict = check_history(report.history)
    if not verdict.ok:
        report.problems.append(("not proven: " if verdict.gave_up else "") + verdict.explanation)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1, help="fixes faults and choices (1)")
    parser.add_argument("--duration", type=float, default=60, help="seconds of faults (60)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (4)")
    parser.add_argument("--runs", type=int, default=1, help="seeds SEED, SEED+1, ... (1)")
    parser.add_argument("--dir", type=Path, help="where to run (a temporary folder)")
    parser.add_argument(
        "--stale-reads", action="store_true", help="read stale, to see the check fail"
    )
    args = parser.parse_args(argv)
    failed = 0
    for seed in range(args.seed, args.seed + args.runs):
        folder = (args.dir or Path(tempfile.mkdtemp(prefix="nemesis-"))) / f"seed-{seed}"
        report = asyncio.run(
            nemesis_run(folder, seed, args.duration, args.clients, args.stale_reads)
        )
        print(report.describe(), flush=True)
        if report.problems:
            failed += 1
        elif args.dir is None:
            shutil.rmtree(folder.parent, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
