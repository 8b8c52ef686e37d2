"""quicraft against PySyncObj: 3-node clusters on this machine, alternating, same load.

    .venv/bin/pip install pysyncobj
    .venv/bin/python benchmarks/vs_pysyncobj.py --rounds 3 --duration 10 --clients 16

Each round runs `quicraft bench --local 3` (a throwaway durable cluster over QUIC, driven by
separate client connections) and then 3-process PySyncObj clusters in journal mode (driven
from inside one member, see pysyncobj_node.py), with the same number of writes in flight and
the same value size: unbatched with the driving member a follower, which forwards every write
to the leader (the same two client hops a quicraft write takes), unbatched with the driving
member the leader (no client hop at all: PySyncObj's best case), and in its default batched
mode with the driving member the leader. It prints every round and the medians, and the
ratio of committed writes/s (quicraft / PySyncObj) against each placement.

    .venv/bin/python benchmarks/vs_pysyncobj.py --rounds 3 --sweep 4,8,16,32,64,128,256

With `--sweep`, each round runs quicraft and the two unbatched placements at every number of
writes in flight given, lowest first, and the script also compares each side's peak: the
most committed writes/s it reached at any of those loads whose p99 stays within `--p99-bound`
(50 ms, the team's goal). One fixed load favours whichever side saturates first (PySyncObj's
unbatched writes/s hardly grow past 16 in flight, quicraft's keep growing with its batches
to 256); the peak under a latency bound compares what each can serve. Benchmarks are
never run as timed tests.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, cast

from quicraft.client.bench import cpu_per_write
from quicraft.node.local import cpu_seconds_of

HERE = Path(__file__).resolve().parent
#: Election timeouts in seconds (the driving member's, the others') that decide which member
#: wins the first election: the driving member's below or above all of the others'.
DRIVER_LEADS = ("0.31,0.35", "1,1.4")
DRIVER_FOLLOWS = ("2,3", "0.4,1.4")  # the others keep PySyncObj's default
PLACEMENT_ATTEMPTS = 3
#: What PySyncObj logs when a member drops log entries it had already applied.
DIVERGED = "state machine may have diverged"
#: A run's JSON result: its figures, and after a PySyncObj run the replicas' check.
Run = dict[str, Any]
#: How long after a run the replicas may take to apply the same index.
SETTLE_S = 10.0
#: How long a killed member's process group may take to be gone.
GROUP_GONE_S = 5.0


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def bench_parser(description: str) -> argparse.ArgumentParser:
    """The load every benchmark here takes: rounds, and the `quicraft bench` settings."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--value-size", type=int, default=100)
    return parser


def run_quicraft(args: argparse.Namespace, extra: list[str] | None = None) -> Run:
    """One `quicraft bench --local 3` run with `args`' load (and `extra` flags): its result."""
    base = free_ports(1)[0]
    command = [
        sys.executable, "-m", "quicraft.cli", "bench", "--local", "3", "--json",
        "--clients", str(args.clients), "--duration", str(args.duration),
        "--value-size", str(args.value_size), "--base-port", str(min(base, 60000)),
        *(extra or []),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=args.duration + 120)
    if done.returncode != 0:
        raise SystemExit(f"quicraft bench failed: {done.stderr.strip()}")
    result = json.loads(done.stdout)
    # Summed over the bench client and the nodes (what `quicraft bench` reports per process).
    per_process = result.pop("cpu_us_per_write", {})
    if per_process:
        result["cpu_us_per_write"] = sum(per_process.values())
    return cast(Run, result)


def run_pysyncobj(args: argparse.Namespace, batch: bool, driver_leads: bool) -> Run:
    """One PySyncObj run whose driving member leads or follows, as `driver_leads` asks;
    retried when an election went the other way."""
    where = "lead" if driver_leads else "follow"
    for _ in range(PLACEMENT_ATTEMPTS):
        result = _run_pysyncobj_once(args, batch, driver_leads)
        if bool(result.get("driver_led")) == driver_leads:
            return result
        print(f"(PySyncObj: the driving member did not {where}; once more)", file=sys.stderr)
    raise SystemExit(f"PySyncObj: the driving member did not {where} in {PLACEMENT_ATTEMPTS} runs")


def _run_pysyncobj_once(args: argparse.Namespace, batch: bool, driver_leads: bool) -> Run:
    ports = free_ports(3)
    addresses = [f"127.0.0.1:{p}" for p in ports]
    timeouts = DRIVER_LEADS if driver_leads else DRIVER_FOLLOWS
    with tempfile.TemporaryDirectory(prefix="pysyncobj-bench-") as folder:
        members = []
        logs = [Path(folder) / f"member{i}.log" for i in range(len(addresses))]
        reports = [Path(folder) / f"member{i}.report" for i in range(len(addresses))]
        for i, address in enumerate(addresses):
            partners = ",".join(a for a in addresses if a != address)
            argv = [
                sys.executable, str(HERE / "pysyncobj_node.py"),
                "--self", address, "--partners", partners,
                "--journal", str(Path(folder) / f"journal{i}"), "--report", str(reports[i]),
            ]  # fmt: skip
            if batch:
                argv.append("--batch")
            argv += ["--election", timeouts[0] if i == 0 else timeouts[1]]
            if i == 0:
                argv += ["--drive", "--clients", str(args.clients)]
                argv += ["--duration", str(args.duration), "--value-size", str(args.value_size)]
            # Its log goes to a file (PySyncObj's warnings would fill a pipe and stop it).
            # A group of its own, so that the children it forks to write its dumps die with it.
            with logs[i].open("w") as log:
                member = subprocess.Popen(
                    argv, stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True
                )
            members.append(member)
        # A stuck run is killed, which ends the driver's output and so the loop below.
        watchdog = threading.Timer(args.duration + 120, members[0].kill)
        watchdog.start()
        try:
            result = _read_driver(members)
            if result is not None and "error" not in result:
                result["replicas"] = _check_replicas(members, reports, result.get("expected"))
        finally:
            watchdog.cancel()
            for member in members:
                _kill_group(member)
        text = [log.read_text(errors="replace") for log in logs]
    if result is None or "error" in result:
        problem = "the driver exited without a result" if result is None else result["error"]
        last = text[0].strip().splitlines()[-5:]
        raise SystemExit(f"PySyncObj: {problem}" + "".join(f"\n  {line}" for line in last))
    result["diverged"] = sum(t.count(DIVERGED) for t in text)
    return result


def _kill_group(member: subprocess.Popen[str]) -> None:
    """Kill a member and every process it forked, and wait until none is left: PySyncObj
    writes its dumps (every 5,000 entries, `logCompactionMinEntries`) in a forked child, which
    outlived a kill of the member alone and wrote into the run's folder as it was removed."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(member.pid, signal.SIGKILL)
    member.wait()
    deadline = time.monotonic() + GROUP_GONE_S
    while time.monotonic() < deadline:
        try:
            os.killpg(member.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise SystemExit(f"PySyncObj: processes of member {member.pid} outlived SIGKILL")


def _read_driver(members: list[subprocess.Popen[str]]) -> Run | None:
    """The driver's result (None if it ended without one), with the CPU per write its three
    members used while it drove them (read from /proc between its "started" line and its
    result, as `quicraft bench` does for its nodes)."""
    assert members[0].stdout is not None
    before: dict[str, float] = {}
    for line in members[0].stdout:
        try:
            message = json.loads(line)
        except ValueError:
            continue  # not ours: PySyncObj writing to stdout
        if message.get("started"):
            before = _cpu(members)
            continue
        used = cpu_per_write(before, _cpu(members), message.get("writes", 0))
        if used:
            message["cpu_us_per_write"] = sum(used.values())
        return cast(Run, message)
    return None


def _check_replicas(
    members: list[subprocess.Popen[str]], reports: list[Path], expected: object
) -> str:
    """Whether the members, once they applied the same index, hold the same dict, and whether
    it is the one the driver's acknowledged writes must have left: "agree", or what differs."""
    deadline = time.monotonic() + SETTLE_S
    seen: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        for report in reports:
            report.unlink(missing_ok=True)
        for member in members:
            member.send_signal(signal.SIGUSR1)
        time.sleep(0.3)
        try:
            seen = [json.loads(report.read_text()) for report in reports]
        except (OSError, ValueError):
            continue  # a member has not written yet
        if len({r["applied"] for r in seen}) == 1:
            break
    else:
        return f"did not apply the same index within {SETTLE_S:.0f} s: " + _indexes(seen)
    prints = {r["fingerprint"] for r in seen}
    if len(prints) > 1:
        return "DIVERGED: different contents at the same index"
    if expected is None:
        return "agree (no expectation: the load had errors)"
    if prints != {expected}:
        return "LOST WRITES: the replicas agree, but not with the writes acknowledged"
    return "agree"


def _indexes(reports: list[dict[str, object]]) -> str:
    return ", ".join(str(r["applied"]) for r in reports) or "no reports"


def _cpu(members: list[subprocess.Popen[str]]) -> dict[str, float]:
    return cpu_seconds_of({str(m.pid): m.pid for m in members})


def _median(runs: list[Run], field: str) -> float:
    return float(statistics.median(r[field] for r in runs))


def _median_cpu(runs: list[Run]) -> str:
    if not all("cpu_us_per_write" in r for r in runs):
        return ""  # no /proc here
    return f", {_median(runs, 'cpu_us_per_write'):,.0f} µs CPU per write"


def _line(run: Run) -> str:
    cpu = f", {run['cpu_us_per_write']:,.0f} µs CPU per write" if "cpu_us_per_write" in run else ""
    diverged = f", {run['diverged']:,} warnings '{DIVERGED}'" if run.get("diverged") else ""
    replicas = f", replicas: {run['replicas']}" if "replicas" in run else ""
    return (
        f"{run['writes_per_s']:,.0f} writes/s (p50 {run['write_p50_ms']:.1f} ms, "
        f"p99 {run['write_p99_ms']:.1f} ms{cpu}{diverged}{replicas})"
    )


#: The PySyncObj runs of every round: name -> (batched, the driving member leads).
PYSYNCOBJ_RUNS = {
    "load in a follower": (False, False),
    "load in the leader": (False, True),
    "batched, load in the leader": (True, True),
}
#: A sweep leaves the batched mode out: its appends wait for a 0.1 s timer, so no load of it
#: keeps a p99 bound below 100 ms (about 150 writes/s at 16 in flight, 600 at 64).
SWEEP_RUNS = ("load in a follower", "load in the leader")


def _counts(text: str) -> list[int]:
    try:
        counts = sorted({int(part) for part in text.split(",")})
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if counts[0] < 1:
        raise argparse.ArgumentTypeError("writes in flight start at 1")
    return counts


def main() -> int:
    parser = bench_parser(__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sweep",
        type=_counts,
        metavar="N,N,...",
        help="run every round at each of these numbers of writes in flight (instead of "
        "--clients) and compare each side's peak within --p99-bound",
    )
    parser.add_argument(
        "--p99-bound",
        type=float,
        default=50.0,
        metavar="MS",
        help="with --sweep: a load whose median p99 is above this is no peak (default 50, the "
        "team's goal)",
    )
    args = parser.parse_args()
    if importlib.util.find_spec("pysyncobj") is None:
        raise SystemExit("PySyncObj is not installed here: pip install pysyncobj")
    counts = args.sweep or [args.clients]
    names = list(SWEEP_RUNS if args.sweep else PYSYNCOBJ_RUNS)
    ours: dict[int, list[Run]] = {count: [] for count in counts}
    # Each PySyncObj placement's runs by load, as ours are.
    theirs: dict[str, dict[int, list[Run]]] = {name: {c: [] for c in counts} for name in names}
    for number in range(1, args.rounds + 1):
        for count in counts:
            load = argparse.Namespace(**{**vars(args), "clients": count})
            ours[count].append(run_quicraft(load))
            for name in names:
                theirs[name][count].append(run_pysyncobj(load, *PYSYNCOBJ_RUNS[name]))
            others = "; ".join(f"{name} {_line(theirs[name][count][-1])}" for name in names)
            print(
                f"round {number}, {count} in flight: quicraft {_line(ours[count][-1])}, "
                f"{ours[count][-1]['reads_per_s']:,.0f} reads/s; PySyncObj {others}",
                flush=True,
            )
    for count in counts:
        _compare(count, ours[count], {name: theirs[name][count] for name in names})
    if args.sweep:
        _compare_peaks(args.p99_bound, ours, theirs)
    return 0


def _compare(count: int, ours: list[Run], theirs: dict[str, list[Run]]) -> None:
    """The medians of one load's rounds, and the ratio against each PySyncObj placement."""
    q = _median(ours, "writes_per_s")
    print(
        f"median of {len(ours)} rounds, {count} writes in flight: quicraft {q:,.0f} "
        f"writes/s (p99 {_median(ours, 'write_p99_ms'):.1f} ms{_median_cpu(ours)})"
    )
    for name, runs in theirs.items():
        p = _median(runs, "writes_per_s")
        diverged = sum(int(r.get("diverged", 0)) for r in runs)
        agreed = sum(r.get("replicas") == "agree" for r in runs)
        # A round's runs follow each other within a minute, so their ratio is the least
        # touched by the machine's speed drifting between rounds; the ratio of medians stays.
        by_round = [o["writes_per_s"] / t["writes_per_s"] for o, t in zip(ours, runs, strict=True)]
        print(
            f"  PySyncObj {name}: {p:,.0f} writes/s (p99 {_median(runs, 'write_p99_ms'):.1f} "
            f"ms{_median_cpu(runs)}); ratio {q / p:.2f}; round by round "
            f"{', '.join(f'{r:.2f}' for r in by_round)} (median {statistics.median(by_round):.2f})"
            + (f"; it logged '{DIVERGED}' {diverged:,} times" if diverged else "")
            + f"; replicas agreed with the acknowledged writes after {agreed} of {len(runs)} runs"
        )


def _compare_peaks(
    bound: float,
    ours: dict[int, list[Run]],
    theirs: dict[str, dict[int, list[Run]]],
) -> None:
    """Each side's peak over the sweep within the p99 bound: by the medians of each load, and
    round by round (each round's best run within the bound on either side; "none" where a side
    has no run within it)."""
    print(f"peak committed writes/s with p99 within {bound:g} ms:")
    mine = _peak(ours, bound)
    print(f"  quicraft {_peak_text(mine)}")
    rounds = len(next(iter(ours.values())))
    for name, runs_by_count in theirs.items():
        other = _peak(runs_by_count, bound)
        # A round where either side has no run within the bound stays in the list as "none":
        # dropped, the median of the rest would read as every round's.
        by_round: list[float | None] = []
        for i in range(rounds):
            a = _round_peak([runs[i] for runs in ours.values()], bound)
            b = _round_peak([runs[i] for runs in runs_by_count.values()], bound)
            by_round.append(a / b if a is not None and b is not None else None)
        ratio = f"; ratio {mine[1] / other[1]:.2f}" if mine and other else ""
        rounds_text = ", ".join("none" if r is None else f"{r:.2f}" for r in by_round)
        known = [r for r in by_round if r is not None]
        of = "" if len(known) == rounds else f" of {len(known)} rounds"
        median = f" (median {statistics.median(known):.2f}{of})" if known else ""
        print(
            f"  PySyncObj {name} {_peak_text(other)}{ratio}; round by round {rounds_text}{median}"
        )


#: A side's peak: the load (writes in flight), its median writes/s and median p99 in ms.
Peak = tuple[int, float, float]


def _peak(runs_by_count: dict[int, list[Run]], bound: float) -> Peak | None:
    """The load with the most median writes/s among those whose median p99 is within
    `bound`; None if none is."""
    loads = [
        (count, _median(runs, "writes_per_s"), _median(runs, "write_p99_ms"))
        for count, runs in runs_by_count.items()
    ]
    within = [load for load in loads if load[2] <= bound]
    return max(within, key=lambda load: load[1]) if within else None


def _round_peak(runs: list[Run], bound: float) -> float | None:
    within = [run["writes_per_s"] for run in runs if run["write_p99_ms"] <= bound]
    return max(within) if within else None


def _peak_text(peak: Peak | None) -> str:
    if peak is None:
        return "reached no load within the bound"
    count, writes, p99 = peak
    return f"{writes:,.0f} writes/s at {count} in flight (p99 {p99:.1f} ms)"


if __name__ == "__main__":
    sys.exit(main())
