"""Every example runs, and says what it claims."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_in_process_cluster_replicates_and_reads() -> None:
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "in_process_cluster.py")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert "leads term" in out
    for node in ("n1", "n2", "n3"):
        assert f"'{node}': ['hello', 'raft']" in out
    assert "linearizable read confirmed: [(" in out and "b'my-read'" in out
