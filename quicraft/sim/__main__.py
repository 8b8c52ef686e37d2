"""`python -m quicraft.sim`: run many seeded simulations and report any that fail."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

from quicraft.core import DELIBERATE_BUGS

from .simulation import PROFILES, SimOptions, SimResult, run_seed

MAX_REPORTS = 3  # failures printed in full; the rest are listed by seed
#: Most seeds one run takes: days of running already. The options of every seed are made
#: before the first runs, so --seeds 1000000000 filled the memory instead of running.
MAX_SEEDS = 1_000_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--seeds", type=int, default=100, help=f"how many seeds to run (100; at most {MAX_SEEDS:,})"
    )
    parser.add_argument("--start", type=int, default=0, help="first seed (0)")
    parser.add_argument("--nodes", type=int, default=3, help="founding members (3)")
    parser.add_argument("--steps", type=int, default=300, help="ticks of faults per seed (300)")
    parser.add_argument("--clients", type=int, default=3, help="concurrent clients (3)")
    parser.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="worker processes (all cores)"
    )
    parser.add_argument(
        "--profile",
        choices=PROFILES,
        default="mixed",
        help="fault mix: 'mixed' draws a different mix per seed (default); 'leader-faults' "
        "crashes and isolates leaders often, with one entry per message; 'membership' "
        "changes the members often, proposing changes where a correct leader refuses them",
    )
    parser.add_argument(
        "--bug",
        action="append",
        default=[],
        choices=sorted(DELIBERATE_BUGS),
        help="switch on a deliberate protocol bug, to see the simulator catch it",
    )


def _check(args: argparse.Namespace) -> str | None:
    if not 1 <= args.seeds <= MAX_SEEDS:
        return f"--seeds must be from 1 to {MAX_SEEDS:,}"
    if not 1 <= args.nodes <= 9:
        return "--nodes must be between 1 and 9"
    if args.steps < 0 or args.clients < 0 or args.jobs < 1:
        return "--steps and --clients must be >= 0, --jobs >= 1"
    return None


def _results(options: list[SimOptions], jobs: int) -> Iterator[SimResult]:
    if jobs == 1 or len(options) == 1:
        yield from map(run_seed, options)
        return
    with ProcessPoolExecutor(jobs) as pool:
        yield from pool.map(run_seed, options, chunksize=4)


def run(args: argparse.Namespace) -> int:
    problem = _check(args)
    if problem:
        print(f"quicraft sim: {problem}", file=sys.stderr)
        return 2
    bugs = frozenset(args.bug)
    options = [
        SimOptions(seed, args.nodes, args.steps, args.clients, bugs, args.profile)
        for seed in range(args.start, args.start + args.seeds)
    ]
    started = time.monotonic()
    failed: list[SimResult] = []
    totals: dict[str, int] = {}
    for result in _results(options, args.jobs):
        for name, n in result.stats.items():
            totals[name] = totals.get(name, 0) + n
        if not result.ok:
            failed.append(result)
            if len(failed) <= MAX_REPORTS:
                print(result.report(), flush=True)
    elapsed = time.monotonic() - started
    seeds = f"seeds {args.start}..{args.start + args.seeds - 1}"
    shown = ", ".join(
        f"{totals.get(k, 0)} {k}" for k in ("ops ok", "ops unknown", "elections", "crashes")
    )
    print(
        f"{len(options) - len(failed)} passed, {len(failed)} failed "
        f"({seeds}, {args.nodes} nodes, {args.steps} steps; {shown}) in {elapsed:.1f}s"
    )
    if len(failed) > MAX_REPORTS:
        print("other failing seeds: " + " ".join(str(r.options.seed) for r in failed[MAX_REPORTS:]))
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m quicraft.sim",
        description="Run seeded simulations of a Raft cluster under faults; check safety after "
        "every step, then liveness, convergence and linearizability.",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    try:
        code = main()
        sys.stdout.flush()  # a reader gone fails here, not in Python's exit
    except BrokenPipeError:  # its reader went away (| head): end quietly, as `quicraft` does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python flushes again
        code = 141
    sys.exit(code)
