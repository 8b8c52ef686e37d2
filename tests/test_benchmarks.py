"""The benchmark scripts still run (speed is measured by them, never here). A benchmark that
breaks silently is only found when someone needs its numbers: core_throughput.py failed its
own consistency check for days after the core stopped sending an empty append for every new
commit index."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.mark.parametrize("script", sorted(p.name for p in BENCHMARKS.glob("*.py")))
def test_every_benchmark_explains_itself(script: str) -> None:
    done = _run(script, "--help")
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout


@pytest.mark.parametrize("mode", ["closed", "pipelined"])
def test_core_throughput_runs_and_checks_every_node(mode: str) -> None:
    done = _run("core_throughput.py", "--entries", "3000", "--repeat", "1", "--mode", mode,
                "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["mode"] == mode and report["runs"][0]["entries"] == 3000


def _vs_pysyncobj() -> ModuleType:
    """benchmarks/vs_pysyncobj.py as a module (benchmarks/ is no package)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import vs_pysyncobj
    finally:
        sys.path.remove(str(BENCHMARKS))
    return vs_pysyncobj


def _runs(*figures: tuple[float, float]) -> list[dict[str, float]]:
    return [{"writes_per_s": writes, "write_p99_ms": p99} for writes, p99 in figures]


def test_a_sweeps_peak_is_the_most_writes_within_the_p99_bound() -> None:
    bench = _vs_pysyncobj()
    by_load = {
        16: _runs((4000, 7), (4200, 8), (4100, 9)),
        64: _runs((7000, 25), (7400, 60), (7200, 45)),  # median p99 45: within 50
        256: _runs((9000, 70), (9500, 80), (9900, 90)),  # the most writes, over the bound
    }
    assert bench._peak(by_load, 50.0) == (64, 7200, 45)
    assert bench._peak(by_load, 45.0) == (64, 7200, 45)  # a p99 at the bound is within it
    assert bench._peak(by_load, 20.0) == (16, 4100, 8)
    assert bench._peak(by_load, 5.0) is None
    # Round by round, a run over the bound is no peak, however fast.
    assert bench._round_peak([runs[1] for runs in by_load.values()], 50.0) == 4200
    assert bench._round_peak([runs[2] for runs in by_load.values()], 50.0) == 7200
    assert bench._round_peak(by_load[256], 50.0) is None


def test_a_sweep_takes_only_numbers_of_writes_in_flight() -> None:
    done = _run("vs_pysyncobj.py", "--sweep", "16,x")
    assert done.returncode == 2 and "not a list of numbers" in done.stderr
    done = _run("vs_pysyncobj.py", "--sweep", "0,16")
    assert done.returncode == 2 and "start at 1" in done.stderr
    assert _vs_pysyncobj()._counts("64,16,64") == [16, 64]


def test_a_round_without_a_peak_on_one_side_is_shown_not_dropped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Dropping such a round would leave a shorter list whose median looks like all rounds'."""
    bench = _vs_pysyncobj()
    ours = {16: _runs((4000, 10), (9000, 90), (4400, 10))}  # round 2 over the bound
    theirs = {"load in the leader": {16: _runs((2000, 10), (2000, 10), (2000, 10))}}
    bench._compare_peaks(50.0, ours, theirs)
    line = capsys.readouterr().out.splitlines()[-1]
    assert "round by round 2.00, none, 2.20 (median 2.10 of 2 rounds)" in line, line


def test_a_killed_pysyncobj_member_takes_the_children_it_forked_along() -> None:
    """PySyncObj writes its dumps in a forked child; one that outlived its member wrote into
    the run's folder as the benchmark removed it."""
    forks_and_sleeps = "import os, time\nos.fork()\ntime.sleep(60)\n"
    member = subprocess.Popen([sys.executable, "-c", forks_and_sleeps], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while len(_group(member.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(_group(member.pid)) == 2  # the member and its child
        _vs_pysyncobj()._kill_group(member)
        assert _group(member.pid) == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(member.pid, signal.SIGKILL)
        member.wait()


def _group(pgid: int) -> list[int]:
    """The live processes of a process group (zombies left out), from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(stat.parent.name))
    return members
