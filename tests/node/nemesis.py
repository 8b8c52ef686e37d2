"""A nemesis run: a real 3-node cluster under a seeded schedule of crashes, pauses, leadership
and membership changes, full disks (as root) and (on a LAN of namespaces) partitions, driven
by clients whose whole history is then checked.

Each test in test_cluster.py checks one scenario. Here faults follow each other at random
while clients keep doing every kind of operation (get, set, incr, cas, delete) on a few shared
keys, and afterwards the run checks:

- the clients' history is linearizable, by the checker the simulator uses
  (quicraft/sim/linearizability.py); a write whose answer never came counts as "may or may
  not have happened", a read without an answer as nothing;
- every node ends holding the same data as a linearizable read of it;
- no node exited or logged a traceback on its own, and no request failed in a way that
  retrying cannot explain.

    .venv/bin/python tests/node/nemesis.py --seed 7 --duration 120         # loopback
    .venv/bin/python tests/node/nemesis.py --lan --seed 7 --duration 120   # root: partitions

The seed fixes the schedule of faults and the clients' choices, not the timing of four real
processes, so a failing run is not replayed exactly: the folder it ran in is kept, with every
node's log, the faults and the history (report.json), and the report names it. docs/node.md
("Tested under faults") has the details.
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

import pytest
import small_disks
from nemesis_nodes import LanNodes, LoopbackNodes, Nodes

from quicraft.client import Client, ClientError, MgmtError
from quicraft.sim.linearizability import Operation, check_history

KEYS = ("a", "b", "c", "d")
#: The operations as the checker names them (its model is a register per key), and how often.
KINDS = ("get", "put", "incr", "cas", "del")
WEIGHTS = (35, 25, 15, 15, 10)
FAULTS = (
    "kill", "kill-leader", "pause", "pause-leader", "kill-majority", "kill-all",
    "pause-and-kill", "restart", "transfer", "replace",
)  # fmt: skip
#: Only where the nodes sit on a LAN of namespaces (nemesis_nodes.LanNodes).
PARTITIONS = ("isolate", "isolate-leader", "leader-deaf", "leader-mute", "bridge")
#: Only where this process may mount a tmpfs for each data directory (root).
DISK_FAULTS = ("disk-full", "disk-full-leader")
#: What a node that stopped on a full disk must have said (docs/storage.md).
NO_SPACE = "No space left on device"
#: The one error a request may end with under faults (the client retries the others that
#: faults cause until its budget is spent); a write's effect is then unknown. Anything else is
#: a problem of the run: bad_request or internal, and session_expired too, since a session
#: expires only after 10 minutes without writes and these clients write all the time.
EXPECTED_ERRORS = frozenset({"timeout"})
#: A request's whole budget, retries included: short enough that a write stuck behind a lost
#: majority becomes "unknown" and its client goes on, long enough to ride out an election.
CLIENT_TIMEOUT_S = 8.0
SETTLE_S = 60.0


@dataclass
class Report:
    seed: int
    folder: Path
    rerun: str  #: the command line's options that run it again
    #: When the faults began, on the history's clock (time.monotonic_ns): a fault noted at
    #: "12.50s" came at t0_ns + 12.5e9.
    t0_ns: int = 0
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
        rerun = f"{sys.executable} tests/node/nemesis.py {self.rerun}"
        return "\n".join(
            [f"{head}", f"PROBLEMS (folder kept: {self.folder}; rerun: {rerun}):"]
            + [f"- {p}" for p in self.problems]
        )


@dataclass
class _Load:
    """What the clients share. Values for puts and cas are each new, so that the checker can
    tell writes apart; the last value a client saw of a key makes a cas that may succeed."""

    report: Report
    stale_reads: bool
    faults_over: asyncio.Event = field(default_factory=asyncio.Event)
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
    report = load.report
    while not load.faults_over.is_set():
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
            if err.code not in EXPECTED_ERRORS and report.errors[err.code] <= 5:  # enough to see
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
    """Faults on the nodes, one at a time, each healed before the next."""

    def __init__(self, nodes: Nodes, rng: random.Random, report: Report):
        self.nodes = nodes
        self.rng = rng
        self.report = report
        self.faults = fault_kinds(nodes)
        report.t0_ns = time.monotonic_ns()
        self.killed: set[int] = set()  # nodes we stopped and did not restart yet
        self.paused: set[int] = set()
        self.filled: set[int] = set()  # nodes whose disk has no room left

    def note(self, text: str) -> None:
        seconds = (time.monotonic_ns() - self.report.t0_ns) / 1e9
        self.report.faults.append(f"{seconds:7.2f}s {text}")

    async def run(self, duration_s: float) -> None:
        """Faults for `duration_s`, and at least one of each kind."""
        stop_at = time.monotonic() + duration_s
        deck: list[str] = []  # every kind of fault once, in a new order each time round
        dealt = 0
        while time.monotonic() < stop_at or dealt < len(self.faults):
            dealt += 1
            await asyncio.sleep(self.rng.uniform(0.5, 2.5))
            self.check_alive()
            deck = deck or self.rng.sample(self.faults, len(self.faults))
            fault = deck.pop()
            # Mostly shorter than a request's budget; one in five longer, so that writes
            # caught by a lost majority end unknown and their clients go on without them.
            longer = self.rng.random() < 0.2
            hold_s = self.rng.uniform(3, 12) if longer else self.rng.uniform(0.3, 3.0)
            await self.inflict(fault, hold_s)
            self.heal()

    async def inflict(self, fault: str, hold_s: float) -> None:
        numbers = self.nodes.numbers()
        victim = self.rng.choice(numbers)
        if "leader" in fault:
            victim = await self.leader() or victim
        others = [n for n in numbers if n != victim]
        hit = [victim]  # the nodes the fault is done to, for the record
        if fault in ("kill", "kill-leader"):
            await self.kill(victim)
        elif fault in ("pause", "pause-leader"):
            self.pause(victim)
        elif fault == "kill-majority":
            hit = self.rng.sample(numbers, 2)
            for number in hit:
                await self.kill(number)
        elif fault == "kill-all":
            hit = numbers
            for number in numbers:
                await self.kill(number)
        elif fault == "pause-and-kill":
            hit.append(self.rng.choice(others))
            self.pause(victim)
            await self.kill(hit[1])
        elif fault == "restart":  # SIGTERM: a leader hands over before it goes
            await self.kill(victim, signal.SIGTERM)
        elif fault == "transfer":
            hit = []
            await self.transfer()
        elif fault == "replace":
            await self.replace(victim, others)
        elif fault in ("disk-full", "disk-full-leader"):  # restarted with room when healed
            self.nodes.fill(victim)
            self.filled.add(victim)
            await self.stops_for_lack_of_room(victim)
        elif fault in ("isolate", "isolate-leader"):
            for other in others:
                self.nodes.cut(victim, other)
                self.nodes.cut(other, victim)
        elif fault == "leader-deaf":  # it sends, but hears nothing back
            for other in others:
                self.nodes.cut(other, victim)
        elif fault == "leader-mute":  # it hears, but what it sends is lost
            for other in others:
                self.nodes.cut(victim, other)
        elif fault == "bridge":  # two nodes parted, the third reaching both
            hit = others
            self.nodes.cut(others[0], others[1])
            self.nodes.cut(others[1], others[0])
        self.note(f"{fault} {','.join(f'n{n}' for n in hit) or '-'} (held {hold_s:.1f}s)")
        await asyncio.sleep(hold_s)

    def heal(self) -> None:
        self.nodes.mend()
        for number in sorted(self.paused):
            self.nodes.signal(number, signal.SIGCONT)
        self.paused.clear()
        for number in sorted(self.killed):
            self.nodes.start(number)
        self.killed.clear()
        for number in sorted(self.filled):
            self.nodes.unfill(number)
            if not self.nodes.running(number):
                self.nodes.start(number)
        self.filled.clear()

    def pause(self, number: int) -> None:
        self.nodes.signal(number, signal.SIGSTOP)
        self.paused.add(number)

    async def kill(self, number: int, sig: int = signal.SIGKILL) -> None:
        if sig != signal.SIGKILL and number in self.paused:
            sig = signal.SIGKILL  # a stopped process would hold SIGTERM until it is continued
        self.nodes.signal(number, sig)
        deadline = time.monotonic() + 15
        while self.nodes.running(number):
            if time.monotonic() > deadline:  # a graceful stop that hangs is a problem too
                self.report.problems.append(f"n{number} did not stop on signal {sig}")
                self.nodes.signal(number, signal.SIGKILL)
                deadline = math.inf
            await asyncio.sleep(0.02)
        self.paused.discard(number)
        self.killed.add(number)

    async def stops_for_lack_of_room(self, number: int) -> None:
        """A node whose disk is full must stop at its next write, saying why; the clients
        write all the time, so it comes within seconds."""
        deadline = time.monotonic() + 15
        while self.nodes.running(number):
            if time.monotonic() > deadline:
                self.report.problems.append(f"n{number} went on for 15 s with its disk full")
                return
            await asyncio.sleep(0.02)
        tail = self.nodes.log(number)[-3000:]
        if NO_SPACE not in tail:
            self.report.problems.append(f"n{number} stopped, not for lack of room:\n{tail}")

    def check_alive(self) -> None:
        for number in self.nodes.numbers():
            if number not in self.killed and not self.nodes.running(number):
                tail = self.nodes.log(number)[-3000:]
                self.report.problems.append(f"n{number} exited on its own:\n{tail}")
                self.nodes.start(number)

    async def leader(self) -> int | None:
        """The node that leads as one live node sees it; None if that node does not
        answer within a second or knows no leader."""
        live = [n for n in self.nodes.numbers() if n not in self.killed | self.paused]
        try:
            async with self.nodes.mgmt(self.rng.choice(live), timeout=1) as mgmt:
                status = await mgmt.status()
        except MgmtError:
            return None
        where = {m["id"]: m["address"] for m in status["members"]}.get(status["leader"])
        return next((n for n in self.nodes.numbers() if self.nodes.address(n) == where), None)

    async def replace(self, victim: int, others: list[int]) -> None:
        """Replace a failed member as docs/operations.md says: while it is down the others
        remove it, then a new node (new key, no data) at its address is added."""
        await self.kill(victim)
        self.killed.discard(victim)  # it comes back now, as somebody else
        # By id: a node knows the names only of the members it has been connected to.
        if await self.change(others, "remove_member", self.nodes.node_id(victim)):
            self.nodes.renew(victim)
            self.nodes.start(victim)
            await self.change(others, "add_member", self.nodes.address(victim))
        else:
            self.nodes.start(victim)  # as it was: the run goes on with its old member

    async def change(self, numbers: list[int], op: str, target: str) -> bool:
        """A membership change through the leader, retried for up to a minute while nothing
        else is wrong; failing that is a problem of the run."""
        done_already = {"remove_member": "unknown_member", "add_member": "already_member"}[op]
        deadline = time.monotonic() + 60
        while True:
            try:
                async with self.nodes.mgmt(*numbers, timeout=20, follow=True) as mgmt:
                    await getattr(mgmt, op)(target)
                return True
            except MgmtError as err:
                if err.code == done_already:  # an earlier try that timed out took effect
                    return True
                if time.monotonic() > deadline:
                    self.report.problems.append(f"{op} {target} failed for a minute: {err}")
                    return False
            await asyncio.sleep(0.5)

    async def transfer(self) -> None:
        with contextlib.suppress(MgmtError):  # no leader just now: a fault like any other
            async with self.nodes.mgmt(timeout=3) as mgmt:
                await mgmt.transfer("auto")


async def _final_state(nodes: Nodes, report: Report, number: int) -> dict[str, int | None]:
    """Linearizable reads of every key once the faults are over, recorded in the history."""
    final: dict[str, int | None] = {}
    async with nodes.client(timeout=SETTLE_S) as client:
        for key in KEYS:
            call = time.monotonic_ns()
            final[key] = await _perform(client, "get", key, (), stale=False)
            ret = time.monotonic_ns()
            report.history.append(Operation(number, key, "get", (), call, ret, final[key]))
    return final


async def _converged(nodes: Nodes, final: dict[str, int | None]) -> list[str]:
    """Every node's own state machine reaches the final values (no writes happen now)."""
    problems = []
    for number in nodes.numbers():
        deadline = time.monotonic() + SETTLE_S
        async with nodes.client(number, timeout=SETTLE_S) as client:
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


def fault_kinds(nodes: Nodes) -> tuple[str, ...]:
    """The kinds of fault a run on `nodes` deals."""
    kinds: tuple[str, ...] = FAULTS
    if nodes.partitionable:
        kinds += PARTITIONS
    if nodes.disks:
        kinds += DISK_FAULTS
    return kinds


def _tracebacks(nodes: Nodes) -> list[str]:
    found = []
    for name, text in nodes.logs().items():
        at = text.find("Traceback")
        if at >= 0:
            found.append(f"{name} logged a traceback:\n{text[max(0, at - 300) : at + 2500]}")
    return found


async def nemesis_run(
    folder: Path,
    seed: int,
    duration_s: float,
    clients: int = 4,
    stale_reads: bool = False,
    lan: str | None = None,
) -> Report:
    """Start three nodes in `folder`, run clients and faults for `duration_s`, check, stop.

    `lan`: the tag of a Lan (tests/netns) whose hosts 1-3 take the nodes, adding partitions
    to the faults; this process must run in another host of it. Otherwise on loopback.
    `stale_reads` makes every read a stale one from a node chosen per client: not
    linearizable, so the run must report it (the check's own check)."""
    rng = random.Random(seed)
    flags = [f"--seed {seed}", f"--duration {duration_s:g}", f"--clients {clients}"]
    flags += ["--lan"] * bool(lan) + ["--stale-reads"] * stale_reads
    report = Report(seed, folder, " ".join(flags))
    extra = ["--snapshot-every", "100"]  # snapshots, and installs after restarts
    disks = not small_disks.why_not()
    if lan:
        nodes: Nodes = LanNodes(folder, lan, extra, disks)
    else:
        nodes = LoopbackNodes(folder / "cluster", extra, disks)
    try:
        for number in nodes.numbers():
            nodes.start(number)
        await _run(nodes, rng, report, duration_s, clients, stale_reads)
    except Exception:
        report.problems.append(f"the run itself failed:\n{traceback.format_exc()}")
    finally:
        for number in nodes.numbers():  # a paused node would sit out its SIGTERM
            nodes.signal(number, signal.SIGCONT)
        nodes.stop()
    report.problems += _tracebacks(nodes)
    history = [asdict(op) for op in report.history]
    saved = {
        "t0_ns": report.t0_ns,
        "faults": report.faults,
        "problems": report.problems,
        "history": history,
    }
    (folder / "report.json").write_text(json.dumps(saved, indent=0))
    return report


async def _run(
    nodes: Nodes,
    rng: random.Random,
    report: Report,
    duration_s: float,
    clients: int,
    stale_reads: bool,
) -> None:
    async with nodes.client(timeout=SETTLE_S) as first:
        await first.kv.set("nemesis/ready", b"1")  # a leader, and a majority holds the log
    load = _Load(report, stale_reads)
    nemesis = _Nemesis(nodes, random.Random(rng.random()), report)
    opened: list[Client] = []

    def client(*numbers: int) -> Client:
        made = nodes.client(*numbers, timeout=CLIENT_TIMEOUT_S)
        opened.append(made)
        return made

    async def faults() -> None:
        await nemesis.run(duration_s)
        load.faults_over.set()

    loops = []
    for number in range(clients):
        writer = client()
        reader = client(rng.choice(nodes.numbers())) if stale_reads else writer
        loops.append(_client_loop(number, writer, reader, random.Random(rng.random()), load))
    try:
        await asyncio.gather(faults(), *loops)
        nemesis.check_alive()
        nemesis.heal()
        final = await _final_state(nodes, report, clients)
        report.problems += await _converged(nodes, final)
    finally:
        for made in opened:
            await made.close()
    verdict = check_history(report.history)
    if not verdict.ok:
        report.problems.append(("not proven: " if verdict.gave_up else "") + verdict.explanation)


def run_on_a_lan(folder: Path, seed: int, duration_s: float, clients: int) -> tuple[bool, str]:
    """A run on a Lan of four namespaces made for it (nodes on hosts 1-3, this script again,
    with the clients and the checks, on host 4); whether it passed, and what it printed.
    Skips (pytest's Skipped) where namespaces cannot be made."""
    from lan_helpers import Lan  # puts tests/netns on the path

    lan = Lan.create(4, folder)
    try:
        argv = [
            sys.executable, str(Path(__file__).resolve()), "--in-lan", lan.tag,
            "--seed", str(seed), "--duration", str(duration_s), "--clients", str(clients),
            "--dir", str(folder),
        ]  # fmt: skip
        done = lan.run(lan.host(4), *argv, timeout=duration_s + 900, check=False)
        return done.returncode == 0, (done.stdout + done.stderr).strip()
    finally:
        lan.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1, help="fixes faults and choices (1)")
    parser.add_argument(
        "--duration",
        type=float,
        default=60,
        help="seconds of faults, one of each kind at least (60)",
    )
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (4)")
    parser.add_argument("--runs", type=int, default=1, help="seeds SEED, SEED+1, ... (1)")
    parser.add_argument("--dir", type=Path, help="where to run (a temporary folder)")
    parser.add_argument(
        "--lan", action="store_true", help="nodes in network namespaces, with partitions (root)"
    )
    parser.add_argument(
        "--stale-reads", action="store_true", help="read stale, to see the check fail"
    )
    parser.add_argument("--in-lan", help=argparse.SUPPRESS)  # run_on_a_lan's inner run
    args = parser.parse_args(argv)
    if args.lan and args.stale_reads:
        parser.error("--stale-reads runs on loopback only")
    if args.in_lan:
        report = asyncio.run(
            nemesis_run(args.dir, args.seed, args.duration, args.clients, lan=args.in_lan)
        )
        print(report.describe(), flush=True)
        return 1 if report.problems else 0
    failed = 0
    base = args.dir or Path(tempfile.mkdtemp(prefix="nemesis-"))
    for seed in range(args.seed, args.seed + args.runs):
        folder = base / f"seed-{seed}"
        if args.lan:
            try:
                passed, text = run_on_a_lan(folder, seed, args.duration, args.clients)
            except pytest.skip.Exception as why:  # no root, no iproute2, ...
                print(f"nemesis: cannot make a LAN of namespaces here: {why}", file=sys.stderr)
                return 2
        else:
            report = asyncio.run(
                nemesis_run(folder, seed, args.duration, args.clients, args.stale_reads)
            )
            passed, text = not report.problems, report.describe()
        print(text, flush=True)
        failed += not passed
    if not failed and args.dir is None:
        shutil.rmtree(base, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
