"""Failover on a LAN of network namespaces: the leader's cable is pulled, the majority elects
a new leader, keeping the write the old one acknowledged just before, the old one steps down
(CheckQuorum) and, plugged back in, rejoins as a follower without disrupting anyone (PreVote);
an event subscriber sees the change; five hosts form a cluster of five voters. Real processes,
real mDNS, nothing on the machine's own network (tests/netns/netns_harness.py); the helpers are
shared with test_forming_lan.py."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lan_helpers import (
    PORT,
    WAIT_S,
    Host,
    Lan,
    form,
    lan_factory,
    make_certs,
    quicraft,
    roles,
    start_node,
    status,
    wait_status,
)

__all__ = ["lan_factory"]

#: A few election timeouts of the default (dev) preset: 0.5-1 s each.
SETTLE_S = 3.0


def host_of(lan: Lan, state: dict[str, Any], node_id: str) -> Host:
    """The host running member `node_id` (node n<i> runs on host i)."""
    name = next(m["name"] for m in state["members"] if m["id"] == node_id)
    return lan.host(int(name.removeprefix("n")))


def own(state: dict[str, Any]) -> dict[str, Any]:
    """The answering node's own entry (it alone reports its term)."""
    me: dict[str, Any] = next(m for m in state["members"] if m["id"] == state["node"])
    return me


def endpoints(*hosts: Host) -> str:
    return ",".join(f"{h.address}:{PORT}" for h in hosts)


def kv(lan: Lan, host: Host, certs: Path, *args: str, at: str) -> dict[str, Any]:
    """`quicraft kv ARGS --json`, run on `host` against the endpoints `at`."""
    result = lan.run(
        host,
        *quicraft("kv", *args, "--json", "--cluster", "c1", "--certs", str(certs),
                  "--endpoints", at),
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"kv {' '.join(args)}: {result.stdout}\n{result.stderr}"
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def isolate_leader(
    lan: Lan, certs: Path, state: dict[str, Any]
) -> tuple[Host, list[Host], dict[str, Any]]:
    """Pull the leader's cable; wait for the other two to elect a leader of their own.
    Returns (old leader's host, the majority's hosts, the majority's status)."""
    old_id = state["leader"]
    old = host_of(lan, state, old_id)
    majority = [h for h in lan.hosts[:3] if h is not old]
    lan.link_down(old)
    elected = wait_status(
        lan, majority[0], certs,
        lambda s: s["leader"] not in (None, old_id) and s["term"] > state["term"],
        "--no-follow",
    )  # fmt: skip
    return old, majority, elected


def test_the_leaders_link_goes_down_and_comes_back_without_disruption(
    lan_factory: Callable[[int], Lan],
) -> None:
    lan = lan_factory(3)
    certs = make_certs(lan.folder)
    nodes, state = form(lan, certs)
    old_id = state["leader"]
    # A write the leader acknowledged just before its cable goes must survive the failover.
    leader = host_of(lan, state, old_id)
    before = kv(lan, leader, certs, "set", "before-split", "acked", at=endpoints(leader))
    old, majority, elected = isolate_leader(lan, certs, state)
    new_id, new_term = elected["leader"], elected["term"]
    # The other member of the majority agrees on the new leader.
    wait_status(lan, majority[1], certs, lambda s: s["leader"] == new_id, "--no-follow")

    # The old leader, alone, hears from no quorum and steps down (CheckQuorum): its own
    # status says so, and so does its log. Without a quorum it cannot win a PreVote, so its
    # term stays where it was.
    alone = wait_status(
        lan, old, certs, lambda s: own(s)["role"] != "leader" and s["leader"] is None,
        "--no-follow",
    )  # fmt: skip
    assert alone["term"] == state["term"] < new_term, alone
    nodes[old].wait_for_stderr(f"term {state['term']}: follower, leader unknown", timeout=WAIT_S)

    # Writes through the majority succeed while the old leader is away.
    written = kv(
        lan, majority[0], certs, "set", "during-split", "majority", at=endpoints(*majority)
    )
    revision = written["revision"]

    # The cable goes back in: the old leader follows the new one, at the new leader's term.
    lan.link_up(old)
    back = wait_status(
        lan, old, certs,
        lambda s: s["leader"] == new_id and own(s)["role"] == "follower"
        and own(s)["applied"] >= revision,
        "--no-follow",
    )  # fmt: skip
    assert back["term"] == new_term, back
    # ...and it disrupted nothing (PreVote): a few election timeouts later, still the same
    # leader in the same term, everywhere.
    time.sleep(SETTLE_S)
    for host in lan.hosts[:3]:
        now = wait_status(lan, host, certs, lambda s: s["leader"] is not None, "--no-follow")
        assert (now["leader"], now["term"]) == (new_id, new_term), (host.index, now)
    assert old_id != new_id
    # The write made during the split is on the old leader's own state machine.
    read = kv(lan, old, certs, "get", "during-split", "--stale", at=endpoints(old))
    assert read["value"] == "majority", read
    assert read["revision"] == revision, read
    # The write acknowledged before the failover is there: a linearizable read, through the
    # new leader.
    kept = kv(lan, majority[0], certs, "get", "before-split", at=endpoints(*majority))
    assert (kept["value"], kept["revision"]) == ("acked", before["revision"]), kept


def test_an_event_subscriber_sees_the_leader_change(
    lan_factory: Callable[[int], Lan],
) -> None:
    lan = lan_factory(3)
    certs = make_certs(lan.folder)
    _, state = form(lan, certs)
    old_id = state["leader"]
    watcher_host = next(h for h in lan.hosts[:3] if h is not host_of(lan, state, old_id))
    # Resume after what the watcher's node has applied now: however long subscribing takes,
    # every leader change after this point is delivered, and none before it.
    applied = own(wait_status(lan, watcher_host, certs, lambda s: True, "--no-follow"))["applied"]
    watcher = lan.start(
        watcher_host,
        *quicraft("events", "--kinds", "leader_changed", "--since", str(applied * 1024),
                  "--cluster", "c1", "--certs", str(certs),
                  "--endpoints", endpoints(watcher_host)),
    )  # fmt: skip
    _, _, elected = isolate_leader(lan, certs, state)
    new_id = elected["leader"]
    # The first event it prints is the new leader's, naming the old one as previous.
    event = watcher.wait_for(lambda line: isinstance(line, dict), timeout=WAIT_S)
    assert event["kind"] == "leader_changed" and event["pos"] > applied * 1024, event
    assert event["data"]["leader"] == new_id, event
    assert event["data"]["previous"] == old_id, event
    assert event["data"]["term"] == elected["term"], event
    assert event["pos"] % 1024 == 0  # a log event: at its entry's index * 1024


def test_five_hosts_form_one_cluster_of_five_voters(
    lan_factory: Callable[[int], Lan],
) -> None:
    lan = lan_factory(5)
    certs = make_certs(lan.folder)
    for host in lan.hosts:
        start_node(lan, host, certs, "--expect", "5", "--voters", "5")

    def formed_of_five(s: dict[str, Any]) -> bool:
        members = roles(s)
        return (
            s["cluster_id"] is not None
            and set(members) == {f"n{h.index}" for h in lan.hosts}
            and all(voter for voter, _ in members.values())
            and sorted(role for _, role in members.values()) == ["follower"] * 4 + ["leader"]
        )

    state = wait_status(lan, lan.hosts[0], certs, formed_of_five)
    # One cluster, one leader: every host reports the same id, leader and voters.
    voters = sorted(m["id"] for m in state["members"])
    for host in lan.hosts[1:]:
        other = wait_status(lan, host, certs, formed_of_five)
        assert (other["cluster_id"], other["leader"]) == (state["cluster_id"], state["leader"])
        assert sorted(m["id"] for m in other["members"]) == voters
    # Founded once (the lowest id), the others added by its leader.
    founders = [p for p in lan.processes if "founding it (lowest id" in p.stderr_path.read_text()]
    assert len(founders) == 1, [p.describe() for p in lan.processes]
    assert f"node {voters[0]} " in founders[0].stderr_path.read_text()
    # Each host answers for itself as a voter of that cluster.
    for host in lan.hosts:
        mine = status(lan, host, certs, "--no-follow")
        assert mine is not None and mine["cluster_id"] == state["cluster_id"], host.index
        assert own(mine)["voter"] is True, mine
