"""Joining by --join with mDNS off, on a LAN of network namespaces: the joiner dials the
cluster, both sides say hello (node/peers.py), and the leader, which could not have found the
joiner any other way, adds it. Real processes; nothing on the machine's own network
(tests/netns/netns_harness.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "netns"))

from netns_harness import Host, HostProcess, Lan, lan_factory

__all__ = ["lan_factory"]

PORT = 7400
WAIT_S = 30  # a healthy LAN takes about 5 s (3 s of them the founder's grace)


def quicraft(*args: str) -> list[str]:
    return [sys.executable, "-m", "quicraft.cli", *args]


def start_node(lan: Lan, host: Host, certs: Path, *extra: str) -> HostProcess:
    return lan.start(
        host,
        *quicraft(
            "node", "--cluster", "c1", "--no-mdns", "--name", f"n{host.index}",
            "--data", str(lan.folder / f"n{host.index}"), "--certs", str(certs),
            "--listen", f"{host.address}:{PORT}", *extra,
        ),
    )  # fmt: skip


def client(lan: Lan, host: Host, certs: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A quicraft client command run on `host` against its own node."""
    common = ("--cluster", "c1", "--certs", str(certs), "--endpoints", f"{host.address}:{PORT}")
    return lan.run(host, *quicraft(*args, *common), check=False)


def wait_until(lan: Lan, what: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        found = what()
        if found:
            return found
        time.sleep(0.3)
    logs = "\n".join(p.describe() for p in lan.processes)
    raise AssertionError(f"never happened: {what.__doc__}\n{logs}")


def members_by_name(state: dict[str, Any]) -> dict[str, Any]:
    return {m["name"]: m for m in state["members"]}


def test_a_node_given_join_is_added_with_mdns_off(lan_factory: Callable[[int], Lan]) -> None:
    lan = lan_factory(3)
    certs = lan.folder / "certs"
    init = quicraft("certs", "init", "--cluster", "c1", "--certs", str(certs))
    subprocess.run(init, check=True, capture_output=True, timeout=60)
    h1, h2, h3 = lan.hosts

    def status(host: Host, *extra: str) -> dict[str, Any] | None:
        result = client(lan, host, certs, "mgmt", "status", "--json", "--timeout", "5", *extra)
        parsed: dict[str, Any] | None = (
            json.loads(result.stdout) if result.returncode == 0 else None
        )
        return parsed

    first = start_node(lan, h1, certs, "--expect", "1")

    def formed() -> dict[str, Any] | None:
        """n1 founds a cluster of its own and gives it an id"""
        state = status(h1)
        return state if state is not None and state["cluster_id"] is not None else None

    cluster_id = wait_until(lan, formed)["cluster_id"]
    second = start_node(lan, h2, certs, "--join", f"{h1.address}:{PORT}")

    def two_voters() -> dict[str, Any] | None:
        """n1's leader adds n2 (a learner, then a voter: fewer than 3 voters)"""
        state = status(h1)
        if state is None:
            return None
        members = {m["name"]: m for m in state["members"]}
        n2 = members.get("n2")
        if len(members) != 2 or n2 is None or not n2["voter"]:
            return None
        return state if n2["address"] == f"{h2.address}:{PORT}" else None

    state = wait_until(lan, two_voters)
    assert state["cluster_id"] == cluster_id
    # The whole logs: describe() shows only their tails, where a line may no longer be.
    first_log, second_log = first.stderr_path.read_text(), second.stderr_path.read_text()
    assert "autopilot: adding as a learner" in first_log, first.describe()
    assert "autopilot: promoting" in first_log, first.describe()
    assert "verified" in first_log and "by its hello: not formed" in first_log, first.describe()
    # n2 learned from n1's hello that the cluster at --join was formed: it never founded.
    assert "founding it" not in second_log, second.describe()
    assert "by its hello: formed" in second_log, second.describe()

    written = client(lan, h1, certs, "kv", "set", "probe", "joined", "--json")
    assert written.returncode == 0, written.stderr

    def readable_on_n2() -> bool:
        """the write through n1 is in n2's own state"""
        read = client(lan, h2, certs, "kv", "get", "probe", "--stale")
        return read.returncode == 0 and read.stdout.strip() == "joined"

    wait_until(lan, readable_on_n2)
    # The joiner knows the cluster id too (replicated): one cluster, not two.
    own = wait_until(lan, lambda: status(h2, "--no-follow"))
    assert own["cluster_id"] == cluster_id

    # n2 leads; n3 is given --join to n1, now a follower. n1's hello names its leader, n3
    # says hello there too, and n2 adds it.
    moved = client(lan, h1, certs, "mgmt", "transfer", "n2")
    assert moved.returncode == 0, moved.stderr
    third = start_node(lan, h3, certs, "--join", f"{h1.address}:{PORT}")

    def three_voters() -> dict[str, Any] | None:
        """n2, leading, adds n3, which dialed only the follower n1"""
        state = status(h1)
        if state is None:
            return None
        members = members_by_name(state)
        return state if len(members) == 3 and members["n3"]["voter"] else None

    state = wait_until(lan, three_voters)
    assert state["leader"] == members_by_name(state)["n2"]["id"]
    assert "founding it" not in third.stderr_path.read_text(), third.describe()
