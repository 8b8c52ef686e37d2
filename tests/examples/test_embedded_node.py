"""examples/embedded_node.py runs as a user would run it, says what happened, and leaves
nothing behind: no process, no taken port, no temporary folder."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

# pytest puts only this folder on sys.path; free_base_port lives in tests/node.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "node"))

from cluster_harness import free_base_port

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "embedded_node.py"


def test_the_embedded_cluster_elects_writes_reads_and_stops(tmp_path: Path) -> None:
    base = free_base_port(3)
    # A session of its own: afterwards, any process left in it would still be found there.
    example = subprocess.Popen(
        [sys.executable, str(EXAMPLE), "--base-port", str(base)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    try:
        out, err = example.communicate(timeout=60)
    finally:
        if example.returncode is None:
            example.kill()
            example.wait()
    assert example.returncode == 0, out + err
    assert err == "", err

    ports = ", ".join(f"n{i} on port {base + i}" for i in (1, 2, 3))
    assert f"started {ports}\n" in out, out
    assert re.search(r"^n[123] leads \(elected [\d.]+s after the start\)$", out, re.M), out
    assert re.search(r"^set greeting = 'hello' at revision \d+$", out, re.M), out
    assert "incr visits -> 1\nincr visits -> 2\n" in out, out
    assert re.search(
        r"^get greeting -> b'hello' \(linearizable\), from 127\.0\.0\.1:\d+$", out, re.M
    )
    assert "event incr visits -> 1\nevent incr visits -> 2\n" in out, out
    assert out.endswith("stopped n1, n2, n3\n"), out

    made = re.search(r"^made the keys of cluster 'demo' in (.+)$", out, re.M)
    assert made is not None, out
    folder = Path(made[1])
    assert folder.parent == tmp_path and not folder.exists()
    try:
        os.killpg(example.pid, 0)
        raise AssertionError(f"a process of the example's session is still running:\n{out}")
    except ProcessLookupError:
        pass
    for port in (base + 1, base + 2, base + 3):  # every node's port is free again
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", port))


def test_a_taken_port_fails_in_one_line(tmp_path: Path) -> None:
    base = free_base_port(3)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", base + 2))
        done = subprocess.run(
            [sys.executable, str(EXAMPLE), "--base-port", str(base)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "TMPDIR": str(tmp_path)},
        )
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.startswith("embedded_node: error: "), done.stderr
    assert "Traceback" not in done.stderr and str(base + 2) in done.stderr, done.stderr
    assert "stopped n1, n2, n3" in done.stdout, done.stdout
    assert list(tmp_path.iterdir()) == []  # the temporary folder is gone too
