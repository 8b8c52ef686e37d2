"""The benchmark scripts still run (speed is measured by them, never here). A benchmark that
breaks silently is only found when someone needs its numbers: core_throughput.py failed its
own consistency check for days after the core stopped sending an empty append for every new
commit index."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
