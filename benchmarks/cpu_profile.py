"""Where `quicraft bench --local 3` spends CPU time, per process: a sampling profile by CPU time.

    .venv/bin/python benchmarks/cpu_profile.py --clients 16 --duration 10

py-spy samples wall-clock time: on a machine with fewer cores than busy processes, a thread
waiting for a core, or sitting in `sendto` while the process it woke runs, looks as busy as one
that computes. This runs the bench with a `sitecustomize` (written to a temporary directory and
put first on PYTHONPATH, so the bench client and every node it starts load it) that samples the
main thread's Python stack on SIGPROF, once per millisecond of the process's own CPU time, and
prints for each process the share of its samples inside aioquic's QuicConnection and the
functions that took the most samples themselves. Samples taken while importing are left out.
CPU time of the process's other threads (the storage thread) is sampled as well, attributed to
wherever the main thread was at the moment, usually waiting in `select`.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SAMPLER = """
import atexit, collections, os, signal, sys
_OUT = os.environ.get("QUICRAFT_CPU_PROFILE")
_KIND = next((a for a in sys.argv[1:3] if a in ("node", "bench")), None)
if _OUT and _KIND:
    _counts = collections.Counter()

    def _sample(signum, frame):
        stack = []
        while frame is not None:
            code = frame.f_code
            stack.append(f"{code.co_name} ({code.co_filename}:{code.co_firstlineno})")
            frame = frame.f_back
        _counts[";".join(reversed(stack))] += 1

    def _dump():
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        path = os.path.join(_OUT, f"{_KIND}-{os.getpid()}.txt")
        with open(path, "w") as out:
            for stack, count in _counts.items():
                out.write(f"{stack}\\t{count}\\n")

    signal.signal(signal.SIGPROF, _sample)
    signal.setitimer(signal.ITIMER_PROF, 0.001, 0.001)
    atexit.register(_dump)
"""

#: aioquic's connection state machine: what a datagram costs to receive, send and time.
AIOQUIC_CONNECTION = os.path.join("aioquic", "quic", "connection.py")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16, help="writes kept in flight")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of writes")
    parser.add_argument("--top", type=int, default=12, help="functions listed per process")
    args = parser.parse_args()
    project = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        (work / "sitecustomize.py").write_text(SAMPLER)
        out = work / "samples"
        out.mkdir()
        path = os.pathsep.join(filter(None, [str(work), os.environ.get("PYTHONPATH")]))
        env = dict(os.environ, PYTHONPATH=path, QUICRAFT_CPU_PROFILE=str(out))
        command = [sys.executable, "-m", "quicraft.cli", "bench", "--local", "3", "--json"]
        command += ["--clients", str(args.clients), "--duration", str(args.duration)]
        done = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"quicraft bench failed: {done.stderr.strip()}", file=sys.stderr)
            return 1
        result = json.loads(done.stdout)
        print(f"{result['writes_per_s']:,.0f} writes/s at {args.clients} in flight")
        for file in sorted(out.iterdir()):
            report(file, args.top)
    return 0


def report(file: Path, top: int) -> None:
    stacks = []
    for line in file.read_text().splitlines():
        stack, _, samples = line.rpartition("\t")
        frames = stack.split(";")
        if not any("_find_and_load" in frame for frame in frames):
            stacks.append((frames, int(samples)))
    total = sum(count for _, count in stacks) or 1
    in_aioquic = sum(
        count for frames, count in stacks if any(AIOQUIC_CONNECTION in f for f in frames)
    )
    own: collections.Counter[str] = collections.Counter()
    for frames, count in stacks:
        own[short(frames[-1])] += count
    share = 100 * in_aioquic / total
    print(f"\n{file.stem}: {total} samples, {share:.1f} % in aioquic's connection")
    for name, count in own.most_common(top):
        print(f"  {100 * count / total:5.1f} %  {name}")


def short(frame: str) -> str:
    """'name (/long/path/module.py:12)' as 'name (module.py:12)'."""
    name, _, where = frame.partition(" (")
    return f"{name} ({os.path.basename(where)}"


if __name__ == "__main__":
    sys.exit(main())
