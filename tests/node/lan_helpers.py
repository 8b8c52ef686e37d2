"""Helpers of the LAN tests (test_forming_lan.py, test_lan_failover.py): `quicraft node
--cluster c1` on hosts of a LAN of network namespaces (tests/netns/netns_harness.py), and
`quicraft mgmt status --json` run inside a host's namespace. Every process is started through
the Lan, which stops it by pid; waits poll with deadlines."""

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

__all__ = ["Host", "HostProcess", "Lan", "lan_factory"]

PORT = 7400
WAIT_S = 45  # generous for a loaded 2-core machine; a healthy LAN forms in about 6 s


def quicraft(*args: str) -> list[str]:
    return [sys.executable, "-m", "quicraft.cli", *args]


def make_certs(folder: Path) -> Path:
    """One CA for the LAN (init also makes an admin key); each node issues its own key."""
    certs = folder / "certs"
    init = quicraft("certs", "init", "--cluster", "c1", "--certs", str(certs))
    subprocess.run(init, check=True, capture_output=True, timeout=60)
    return certs


def start_node(lan: Lan, host: Host, certs: Path, *extra: str) -> HostProcess:
    """`quicraft node --cluster c1 --expect 3` on `host` (a later `--expect` in `extra` wins)."""
    return lan.start(
        host,
        *quicraft(
            "node", "--cluster", "c1", "--expect", "3", "--name", f"n{host.index}",
            "--data", str(lan.folder / f"n{host.index}"), "--certs", str(certs),
            "--listen", f"{host.address}:{PORT}", *extra,
        ),
    )  # fmt: skip


def ask(lan: Lan, host: Host, certs: Path, *command: str) -> subprocess.CompletedProcess[str]:
    """`quicraft COMMAND` of cluster c1 run on `host`, asking the node there."""
    return lan.run(
        host,
        *quicraft(*command, "--cluster", "c1", "--certs", str(certs),
                  "--endpoints", f"{host.address}:{PORT}"),
        check=False,
    )  # fmt: skip


def status(lan: Lan, host: Host, certs: Path, *extra: str) -> dict[str, Any] | None:
    """`quicraft mgmt status --json`, run on `host` against its own node; None on failure."""
    result = ask(lan, host, certs, "mgmt", "status", "--json", "--timeout", "5", *extra)
    if result.returncode != 0:
        return None
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def wait_status(
    lan: Lan, host: Host, certs: Path, ok: Callable[[dict[str, Any]], bool], *extra: str
) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_S
    last = None
    while time.monotonic() < deadline:
        last = status(lan, host, certs, *extra)
        if last is not None and ok(last):
            return last
        time.sleep(0.5)
    logs = "\n".join(p.describe() for p in lan.processes)
    raise AssertionError(f"status never matched; last: {last}\n{logs}")


def roles(state: dict[str, Any]) -> dict[str, tuple[bool, str]]:
    """name -> (voter, role) of every member."""
    return {m["name"]: (m["voter"], m["role"]) for m in state["members"]}


def formed_of_three(state: dict[str, Any]) -> bool:
    members = roles(state)
    return (
        state["cluster_id"] is not None
        and len(members) == 3
        and all(voter for voter, _ in members.values())
        and sorted(role for _, role in members.values()) == ["follower", "follower", "leader"]
    )


def form(lan: Lan, certs: Path) -> tuple[dict[Host, HostProcess], dict[str, Any]]:
    nodes = {host: start_node(lan, host, certs) for host in lan.hosts[:3]}
    state = wait_status(lan, lan.hosts[0], certs, formed_of_three)
    return nodes, state
