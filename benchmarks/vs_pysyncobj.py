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
ratio of committed writes/s (quicraft / PySyncObj) against each placement. Benchmarks are
never run as timed tests.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
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


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def bench_arguments(description: str) -> argparse.Namespace:
    """The load every benchmark here takes: rounds, and the `quicraft bench` settings."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--value-size", type=int, default=100)
    return parser.parse_args()


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
            with logs[i].open("w") as log:
                member = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, text=True)
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
                member.kill()
                member.wait()
        text = [log.read_text(errors="replace") for log in logs]
    if result is None or "error" in result:
        problem = "the driver exited without a result" if result is None else result["error"]
        last = text[0].strip().splitlines()[-5:]
        raise SystemExit(f"PySyncObj: {problem}" + "".join(f"\n  {line}" for line in last))
    result["diverged"] = sum(t.count(DIVERGED) for t in text)
    return result


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


def main() -> int:
    args = bench_arguments(__doc__.split("\n\n")[0])
    if importlib.util.find_spec("pysyncobj") is None:
        raise SystemExit("PySyncObj is not installed here: pip install pysyncobj")
    ours: list[Run] = []
    theirs: dict[str, list[Run]] = {name: [] for name in PYSYNCOBJ_RUNS}
    for number in range(1, args.rounds + 1):
        ours.append(run_quicraft(args))
        for name, (batch, driver_leads) in PYSYNCOBJ_RUNS.items():
            theirs[name].append(run_pysyncobj(args, batch, driver_leads))
        others = "; ".join(f"{name} {_line(runs[-1])}" for name, runs in theirs.items())
        print(
            f"round {number}: quicraft {_line(ours[-1])}, {ours[-1]['reads_per_s']:,.0f} "
            f"reads/s; PySyncObj {others}",
            flush=True,
        )
    q = _median(ours, "writes_per_s")
    print(
        f"median of {args.rounds} rounds, {args.clients} writes in flight: quicraft {q:,.0f} "
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
