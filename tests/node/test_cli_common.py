"""What every `quicraft` command does alike, whatever it is asked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_output_to_a_reader_that_went_away_ends_quietly_with_141(tmp_path: Path) -> None:
    """`quicraft events | head -n 1`: the reader closes the pipe; no traceback follows."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write to the pipe now fails with EPIPE
    try:
        done = subprocess.run(
            [sys.executable, "-m", "quicraft.cli", "certs", "init", "--cluster", "c1"],
            cwd=tmp_path,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (141, "")
    assert (tmp_path / "certs" / "c1" / "ca.crt").exists()  # it did its work, then printed
