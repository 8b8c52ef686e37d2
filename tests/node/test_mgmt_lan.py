"""Running a cluster on a LAN of network namespaces with `quicraft mgmt` and the Python
management client, both finding the cluster by its name over mDNS; event subscribers that
resume; a reader that may not manage. Real processes, real mDNS, nothing on the machine's
own network (tests/netns/netns_harness.py)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lan_helpers import (
    PORT,
    WAIT_S,
    Host,
    HostProcess,
    Lan,
    form,
    lan_factory,
    make_certs,
    quicraft,
    roles,
    wait_status,
)

__all__ = ["lan_factory"]

AGENT = str(Path(__file__).with_name("mgmt_agent.py"))


def by_name(lan: Lan, host: Host, certs: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`quicraft ARGS --cluster c1` on `host`, finding the nodes over mDNS (no --endpoints)."""
    command = quicraft(*args, "--cluster", "c1", "--certs", str(certs), "--mdns-interface", "eth0")
    return lan.run(host, *command, check=False, timeout=60)


def ok_json(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, f"{done.args}\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout)


def agent(lan: Lan, host: Host, certs: Path, *ops: str, name: str = "admin") -> list[Any]:
    """The Python management client (mgmt_agent.py) on `host`: its JSON lines, once it exits."""
    process = lan.python(host, AGENT, "--cluster", "c1", "--certs", str(certs), "--name", name,
                         *ops)  # fmt: skip
    process.popen.wait(timeout=120)
    return process.output()


def id_of(state: dict[str, Any], name: str) -> str:
    return str(next(m["id"] for m in state["members"] if m["name"] == name))


def test_operators_run_a_lan_cluster_by_its_name(lan_factory: Callable[[int], Lan]) -> None:
    lan = lan_factory(5)
    certs = make_certs(lan.folder)
    h1, h2, _, h4, h5 = lan.hosts
    _, state = form(lan, certs)
    # Host 5 runs no node: `mgmt status` finds the cluster by its name alone.
    found = ok_json(by_name(lan, h5, certs, "mgmt", "status", "--json"))
    assert found["cluster_id"] == state["cluster_id"] and found["leader"] == state["leader"]

    # A node that announces nothing and waits to be added (--no-mdns --no-bootstrap) is
    # added by an operator as a learner; the cluster has its 3 voters, so it stays one.
    lan.start(h4, *quicraft(
        "node", "--cluster", "c1", "--no-mdns", "--no-bootstrap", "--name", "n4",
        "--data", str(lan.folder / "n4"), "--certs", str(certs), "--listen", f"{h4.address}:{PORT}",
    ))  # fmt: skip
    added = ok_json(by_name(lan, h5, certs, "mgmt", "add-member", f"{h4.address}:{PORT}",
                            "--learner", "--json"))  # fmt: skip
    state = wait_status(lan, h1, certs, lambda s: roles(s).get("n4") == (False, "learner"))
    assert added["node"] == id_of(state, "n4")

    # From Python: promote it and hand it the leadership. It runs without mDNS and only the
    # leader that added it dialed it: it wins only because the leader published every
    # member's address through the log (node/address_book.py).
    leader = next(m["name"] for m in state["members"] if m["id"] == state["leader"])
    lines = agent(lan, h5, certs, "promote:n4", "transfer:n4")
    assert [line.get("op") for line in lines] == ["promote:n4", "transfer:n4"], lines
    assert lines[1].get("result") == id_of(state, "n4"), lines
    wait_status(lan, h1, certs, lambda s: roles(s).get("n4") == (True, "leader"))
    # From the command line: hand it back; then remove n4 from Python.
    moved = ok_json(by_name(lan, h5, certs, "mgmt", "transfer", leader, "--json"))
    assert moved["leader"] == id_of(state, leader)
    wait_status(lan, h1, certs, lambda s: roles(s).get(leader) == (True, "leader"))
    lines = agent(lan, h5, certs, "remove:n4")
    assert lines[0].get("op") == "remove:n4" and lines[0]["result"] > 0, lines
    state = wait_status(lan, h1, certs, lambda s: "n4" not in roles(s))

    # Backups, from the command line and from Python, of the same state; restore one on
    # host 5 as a new one-node cluster (announcing nothing: the old cluster still runs).
    ok_json(by_name(lan, h1, certs, "kv", "set", "config/colour", "teal", "--json"))
    cli_backup, py_backup = lan.folder / "cli.backup", lan.folder / "py.backup"
    ok_json(by_name(lan, h5, certs, "mgmt", "backup", str(cli_backup), "--json"))
    lines = agent(lan, h5, certs, f"backup:{py_backup}")
    assert lines[0]["result"]["bytes"] > 0 and cli_backup.exists() and py_backup.exists()
    restored = lan.folder / "n5"
    done = lan.run(h5, *quicraft("mgmt", "restore", str(py_backup), "--data", str(restored),
                                 "--cluster", "c1", "--name", "n5", "--certs", str(certs)),
                   check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    lan.start(h5, *quicraft(
        "node", "--cluster", "c1", "--no-mdns", "--name", "n5", "--data", str(restored),
        "--certs", str(certs), "--listen", f"{h5.address}:{PORT}",
    ))  # fmt: skip
    read = wait_for_read(lan, h5, certs, "config/colour")
    assert read == "teal"

    # A reader may read and subscribe, not manage: refused at the connection, one line.
    issued = quicraft("certs", "issue", "--cluster", "c1", "--name", "viewer", "--role", "reader",
                      "--certs", str(certs))  # fmt: skip
    subprocess.run(issued, check=True, capture_output=True, timeout=60)
    refused = by_name(lan, h2, certs, "mgmt", "transfer", "auto", "--name", "viewer")
    assert refused.returncode == 1 and "role_not_allowed" in refused.stderr, refused.stderr
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    ok_json(by_name(lan, h2, certs, "kv", "get", "config/colour", "--name", "viewer", "--json"))


def wait_for_read(lan: Lan, host: Host, certs: Path, key: str) -> str:
    """The value of `key` read on `host`'s own node, once that node serves."""
    command = quicraft("kv", "get", key, "--cluster", "c1", "--certs", str(certs),
                       "--endpoints", f"{host.address}:{PORT}", "--timeout", "5")  # fmt: skip
    for _ in range(int(WAIT_S)):
        done = lan.run(host, *command, check=False, timeout=60)
        if done.returncode == 0:
            return done.stdout.strip()
    raise AssertionError(f"{key} never readable on host {host.index}: {done.stderr}")


def test_a_subscriber_that_resumes_misses_nothing(lan_factory: Callable[[int], Lan]) -> None:
    lan = lan_factory(3)
    certs = make_certs(lan.folder)
    h1, h2, h3 = lan.hosts
    form(lan, certs)

    def subscribe(host: Host, *extra: str) -> HostProcess:
        command = quicraft("events", "--kinds", "kv", "--prefix", "r/", "--cluster", "c1",
                           "--certs", str(certs), "--mdns-interface", "eth0", *extra)  # fmt: skip
        return lan.start(host, *command)

    def write(first: int, last: int) -> None:
        for i in range(first, last + 1):
            ok_json(by_name(lan, h1, certs, "kv", "set", f"r/{i}", str(i), "--json"))

    def keys(process: HostProcess, count: int) -> list[Any]:
        process.wait_for(lambda _: len(events_of(process)) >= count, timeout=WAIT_S)
        return events_of(process)

    # From the very first event on, so that what the first subscriber sees is exact.
    first = subscribe(h2, "--since", "0")
    write(1, 3)
    seen = keys(first, 3)
    first.stop()
    write(4, 6)  # while nobody listens
    resumed = subscribe(h3, "--since", str(seen[-1]["pos"]))
    write(7, 8)
    rest = keys(resumed, 5)
    got = [e["data"]["key"] for e in seen + rest]
    assert got == [f"r/{i}" for i in range(1, 9)], got
    positions = [e["pos"] for e in seen + rest]
    assert positions == sorted(set(positions))  # in order, no repeats
    resumed.stop()


def events_of(process: HostProcess) -> list[Any]:
    return [line for line in process.output() if isinstance(line, dict) and "kind" in line]
