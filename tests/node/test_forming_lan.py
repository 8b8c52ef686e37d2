"""Forming and joining on a LAN of network namespaces: hosts that run only
`quicraft node --cluster c1 --expect 3` form one cluster by themselves, later hosts join it,
and a member back on a new address is the same member. Real processes, real mDNS, nothing
on the machine's own network (tests/netns/netns_harness.py)."""

from __future__ import annotations

import json
import shutil
import signal
import time
from collections.abc import Callable

from lan_helpers import (
    PORT,
    WAIT_S,
    Lan,
    ask,
    form,
    formed_of_three,
    lan_factory,
    make_certs,
    quicraft,
    roles,
    start_node,
    wait_status,
)

__all__ = ["lan_factory"]


def test_three_hosts_form_one_cluster_and_a_fourth_joins_as_a_standby(
    lan_factory: Callable[[int], Lan],
) -> None:
    lan = lan_factory(4)
    certs = make_certs(lan.folder)
    nodes, state = form(lan, certs)
    cluster_id = state["cluster_id"]
    # Exactly one cluster: every node reports the same id and the same leader.
    for host in lan.hosts[1:3]:
        other = wait_status(lan, host, certs, formed_of_three)
        assert other["cluster_id"] == cluster_id and other["leader"] == state["leader"]
    # One of them founded it (the lowest id); the others were added by its leader.
    # In the whole logs: describe() shows only their tails.
    founders = [p for p in nodes.values() if "founding it (lowest id" in p.stderr_path.read_text()]
    assert len(founders) == 1, [p.describe() for p in nodes.values()]
    ids = sorted(m["id"] for m in state["members"])
    assert f"node {ids[0]} " in founders[0].stderr_path.read_text()

    # The leader's node-local events: which nodes it finds and loses on the LAN.
    leader_host = next(
        lan.host(int(m["name"].removeprefix("n")))
        for m in state["members"] if m["id"] == state["leader"]
    )  # fmt: skip
    # From what it has applied now: however long subscribing takes, nothing later is missed.
    seen = wait_status(lan, leader_host, certs, lambda s: True, "--no-follow")
    applied = next(m["applied"] for m in seen["members"] if m["id"] == seen["node"])
    watcher = lan.start(
        leader_host,
        *quicraft("events", "--kinds", "node_discovered,node_lost", "--since",
                  str(applied * 1024), "--cluster", "c1", "--certs", str(certs),
                  "--endpoints", f"{leader_host.address}:{PORT}"),
    )  # fmt: skip

    # A fourth host started later finds a formed cluster: it is added as a learner, and
    # stays one (--voters 3 is reached): a standby.
    fourth = lan.hosts[3]
    nodes[fourth] = start_node(lan, fourth, certs)
    joined = wait_status(
        lan, lan.hosts[0], certs,
        lambda s: roles(s).get("n4") == (False, "learner"),
    )  # fmt: skip
    assert joined["cluster_id"] == cluster_id
    assert sum(voter for voter, _ in roles(joined).values()) == 3
    time.sleep(2)  # several autopilot rounds: still a learner
    assert roles(wait_status(lan, lan.hosts[0], certs, lambda s: True))["n4"][0] is False
    # The learner learned the cluster id too (replicated), and announces it.
    wait_status(lan, fourth, certs, lambda s: s["cluster_id"] == cluster_id, "--no-follow")

    # A voter goes (removed by an operator): the leader promotes the standby. Not n1: the
    # test asks n1's node, and a removed node no longer hears who leads.
    victim = next(n for n, (voter, role) in roles(joined).items()
                  if voter and role != "leader" and n != "n1")  # fmt: skip
    victim_id = next(m["id"] for m in joined["members"] if m["name"] == victim)
    removed = ask(lan, lan.hosts[0], certs, "mgmt", "remove-member", victim_id)
    assert removed.returncode == 0, removed.stderr
    promoted = wait_status(lan, lan.hosts[0], certs, lambda s: roles(s).get("n4", (0,))[0] is True)
    assert victim not in roles(promoted) and len(promoted["members"]) == 3

    # The removed node stops by itself: on a LAN, members admit non-members (a joiner must say
    # hello), so it learns of its removal only from the connections they close at it.
    victim_host = lan.host(int(victim.removeprefix("n")))
    gone = nodes[victim_host]
    assert gone.popen.wait(timeout=WAIT_S) == 0, gone.describe()
    assert "was removed from cluster 'c1'" in gone.stderr_path.read_text(), gone.describe()
    # Started again on its data, it hears it in the members' hellos, and stops again.
    again = start_node(lan, victim_host, certs)
    assert again.popen.wait(timeout=WAIT_S) == 0, again.describe()
    assert "was removed from cluster 'c1'" in again.stderr_path.read_text(), again.describe()
    # Its data deleted, it is a new node that finds a formed cluster and waits to be added.
    # The leader adds every such node, but not this one: its key is as valid as before, and
    # forgetting its data must not undo its removal. An operator takes it back.
    shutil.rmtree(lan.folder / victim)
    fresh = start_node(lan, victim_host, certs)
    leader = next(m["name"] for m in promoted["members"] if m["id"] == promoted["leader"])
    leader_log = nodes[lan.host(int(leader.removeprefix("n")))].stderr_path
    deadline = time.monotonic() + WAIT_S
    while f"not adding {victim_id} ({victim})" not in leader_log.read_text():
        assert time.monotonic() < deadline, leader_log.read_text()[-3000:]
        assert fresh.popen.poll() is None, fresh.describe()
        time.sleep(0.2)
    time.sleep(1)  # more autopilot rounds: still left out
    assert victim not in roles(wait_status(lan, lan.hosts[0], certs, lambda s: True))
    address = f"{victim_host.address}:{PORT}"
    added = ask(lan, lan.hosts[0], certs, "mgmt", "add-member", address)
    assert added.returncode == 0, added.stderr
    wait_status(lan, lan.hosts[0], certs, lambda s: victim in roles(s))
    assert fresh.popen.poll() is None, fresh.describe()
    # The leader's subscriber saw n4 found, and the removed node lost once it stopped.
    found = watcher.wait_for(lambda e: e.get("kind") == "node_discovered", timeout=WAIT_S)
    assert found["data"]["name"] == "n4" and found["data"]["address"] == f"{fourth.address}:{PORT}"
    lost = watcher.wait_for(lambda e: e.get("kind") == "node_lost", timeout=WAIT_S)
    assert lost["data"]["node"] == victim_id


def test_a_member_back_on_a_new_address_is_the_same_member(
    lan_factory: Callable[[int], Lan],
) -> None:
    lan = lan_factory(3)
    certs = make_certs(lan.folder)
    nodes, state = form(lan, certs)
    third = lan.hosts[2]
    third_id = next(m["id"] for m in state["members"] if m["name"] == "n3")

    # n3 stops, its host gets a new address, and n3 starts again on its data directory.
    assert nodes[third].stop(sig=signal.SIGTERM) == 0
    lan.set_address(third, "10.77.0.103")
    restarted = start_node(lan, third, certs)
    state = wait_status(
        lan, lan.hosts[0], certs,
        lambda s: {m["id"]: m["address"] for m in s["members"]}.get(third_id)
        == f"10.77.0.103:{PORT}" and formed_of_three(s),
    )  # fmt: skip
    # The same member (same id, still a voter); it never founded a second time.
    assert roles(state)["n3"][0] is True and len(state["members"]) == 3
    assert "founding it" not in restarted.stderr_path.read_text(), restarted.describe()

    # Writes still reach it at its new address.
    written = ask(lan, lan.hosts[0], certs, "kv", "set", "probe", "after-move", "--json")
    assert written.returncode == 0, written.stderr
    revision = json.loads(written.stdout)["revision"]
    wait_status(
        lan, third, certs,
        lambda s: next(m for m in s["members"] if m["id"] == third_id)["applied"] >= revision,
        "--no-follow",
    )  # fmt: skip


def test_two_clusters_formed_apart_with_one_name_are_reported(
    lan_factory: Callable[[int], Lan],
) -> None:
    lan = lan_factory(2)
    certs = make_certs(lan.folder)
    h1, h2 = lan.hosts
    alone = ("--expect", "1")
    # n1 forms a cluster of its own and stops; n2, started while n1 is away, does the same:
    # --expect 1 cannot tell "alone" from "first" (docs/operations.md).
    first = start_node(lan, h1, certs, *alone)
    one = wait_status(lan, h1, certs, lambda s: s["cluster_id"] is not None)
    assert first.stop() == 0
    start_node(lan, h2, certs, *alone)
    two = wait_status(lan, h2, certs, lambda s: s["cluster_id"] is not None)
    assert one["cluster_id"] != two["cluster_id"]

    # n1 comes back: each sees a node of its name in another formed cluster, and says so.
    split_events = lan.start(
        h2,
        *quicraft("events", "--kinds", "cluster_split_detected", "--since", "0", "--cluster",
                  "c1", "--certs", str(certs), "--endpoints", f"{h2.address}:{PORT}"),
    )  # fmt: skip
    back = start_node(lan, h1, certs, *alone)
    back.wait_for_stderr("cluster split:", timeout=WAIT_S)
    deadline = time.monotonic() + WAIT_S
    while True:
        health = ask(lan, h2, certs, "mgmt", "health", "--json")
        problems = json.loads(health.stdout)["problems"] if health.stdout.strip() else []
        if any(one["cluster_id"] in p and "split" in p for p in problems):
            break
        assert time.monotonic() < deadline, f"{health.stdout}\n{health.stderr}"
        time.sleep(0.5)
    assert health.returncode != 0  # unhealthy: a split is a problem
    split = split_events.wait_for(lambda e: e.get("kind") == "cluster_split_detected")
    assert split["data"]["cluster_id"] == two["cluster_id"], split
    assert split["data"]["other_cluster_id"] == one["cluster_id"], split
