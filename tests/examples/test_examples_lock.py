"""examples/lock_and_election.py against a real 3-node loopback cluster: one leader at a time,
takeovers after a step-down and after a crash, fencing tokens that only grow."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

# pytest puts only this folder on sys.path; the cluster harness lives in tests/node.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "node"))

from cluster_harness import Cluster, cluster

__all__ = ["cluster"]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "lock_and_election.py"
LEADS = re.compile(r"candidate (\d+) is leader \(fencing token (\d+)\)")
ENDS = re.compile(r"candidate (\d+) (stepped down|crashed|lost leadership)")
TAKES = re.compile(r"candidate (\d+) took over from candidate (\d+) \((.*)\)")


def run_example(cluster: Cluster, *extra: str) -> subprocess.CompletedProcess[str]:
    local = cluster.local
    connection = ["--cluster", "t1", "--endpoints", local.endpoints(), "--certs", str(local.certs)]
    argv = [sys.executable, str(EXAMPLE), *connection, *extra]
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )


def test_one_leader_at_a_time_with_takeovers_and_growing_tokens(cluster: Cluster) -> None:
    done = run_example(
        cluster, "--candidates", "3", "--lease", "1.5", "--lead-for", "2", "--duration", "13"
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    leader: str | None = None
    tokens: list[int] = []
    last_end: tuple[str, str] | None = None  # (candidate, how) of the last leader's end
    takeovers: list[str] = []
    for line in out.splitlines():
        if took := TAKES.search(line):
            assert leader is None, f"a takeover while candidate {leader} leads:\n{out}"
            assert last_end is not None and took[2] == last_end[0], out
            why = {"stepped down": "it stepped down", "crashed": "its lease expired"}
            assert took[3] == why.get(last_end[1], took[3]), out
            takeovers.append(last_end[1])
        elif leads := LEADS.search(line):
            assert leader is None, f"two leaders at once:\n{out}"
            leader = leads[1]
            tokens.append(int(leads[2]))
        elif ends := ENDS.search(line):
            assert ends[1] == leader, f"candidate {ends[1]} ended a term it did not hold:\n{out}"
            leader, last_end = None, (ends[1], ends[2])
    assert tokens == sorted(set(tokens)), f"fencing tokens must strictly increase:\n{out}"
    assert "stepped down" in takeovers and "crashed" in takeovers, out
    assert "refused" not in out, out
    assert f"fencing tokens {tokens}" in out, out


def test_bad_arguments_and_identities_fail_cleanly(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, str(EXAMPLE), "--cluster", "t1", "--certs", str(tmp_path), *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60)

    misuse = run("--endpoints", "127.0.0.1:9", "--lease", "0")
    assert misuse.returncode == 2 and "must be more than 0" in misuse.stderr, misuse.stderr
    address = run("--endpoints", "127.0.0.1")
    assert address.returncode == 2 and "expected HOST:PORT" in address.stderr, address.stderr
    no_keys = run("--endpoints", "127.0.0.1:9", "--duration", "1")
    assert no_keys.returncode == 1, no_keys.stderr
    assert no_keys.stderr.startswith("lock_and_election: error:"), no_keys.stderr
    assert "Traceback" not in no_keys.stderr
