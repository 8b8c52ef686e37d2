"""Discovery on a LAN of network namespaces: real zeroconf, real multicast, one process per
host (discovery_agent.py), and nothing on the machine's own network."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from netns_harness import Host, HostProcess, Lan

from quicraft.discovery import SERVICE_TYPE, Announcement
from quicraft.discovery.mdns import SETTLE_S
from quicraft.discovery.txt import encode_txt

AGENT = str(Path(__file__).with_name("discovery_agent.py"))
PORT = 7400
WAIT_S = 20  # generous for a loaded 2-core machine; a healthy LAN takes about 2 s


def node_id(host: Host) -> str:
    return f"{0xA0 + host.index:016x}"


def launch(
    lan: Lan, host: Host, cluster: str = "blue", via: str = "iterator", interface: str = "eth0"
) -> HostProcess:
    """Start an agent on `host` (see ready())."""
    return lan.python(
        host, AGENT, "--cluster", cluster, "--name", f"n{host.index}", "--id", node_id(host),
        "--port", str(PORT), "--via", via, "--interface", interface,
    )  # fmt: skip


def ready(*agents: HostProcess) -> None:
    for agent in agents:
        agent.wait_for(lambda line: line.get("event") == "ready", timeout=WAIT_S)


def start(lan: Lan, host: Host, cluster: str = "blue") -> HostProcess:
    agent = launch(lan, host, cluster)
    ready(agent)
    return agent


def event(kind: str, host: Host, **fields: Any) -> Callable[[Any], bool]:
    """A predicate: an output line reporting `kind` about `host` (with these fields)."""

    def matches(line: Any) -> bool:
        return (
            isinstance(line, dict)
            and line.get("event") == kind
            and line.get("id") == node_id(host)
            and all(line.get(k) == v for k, v in fields.items())
        )

    return matches


def event_about(host: Host) -> Callable[[Any], bool]:
    return lambda line: isinstance(line, dict) and line.get("id") == node_id(host)


def reported_ids(agent: HostProcess) -> set[str]:
    return {line["id"] for line in agent.output() if isinstance(line, dict) and "id" in line}


def test_each_node_finds_the_others_of_its_cluster_only(lan_factory: Callable[[int], Lan]) -> None:
    lan = lan_factory(6)
    b1, b2, b3, g4, g5, bad = lan.hosts
    # b1 reports through the on_event callback, the others through events(); b3 runs mDNS on
    # every interface of its host (lo and eth0), the others on eth0 only.
    blue = {
        b1: launch(lan, b1, via="callback"),
        b2: launch(lan, b2),
        b3: launch(lan, b3, interface="all"),
    }
    green = {g4: launch(lan, g4, cluster="green"), g5: launch(lan, g5, cluster="green")}
    # Announcements that claim the blue cluster but do not parse: a node id that is not hex,
    # and a TXT string whose length runs past the record.
    bad_id = b"\x0ccluster=blue" + b"\x0bid=NOT-HEX!" + b"\x07name=xx\x03v=1\x08formed=0"
    overrun = b"\x0ccluster=blue\xff"
    garbage = [
        lan.python(bad, AGENT, "--garbage", txt.hex(), "--name", f"bad{i}", "--port", "7401")
        for i, txt in enumerate((bad_id, overrun))
    ]
    ready(*blue.values(), *green.values(), *garbage)

    for group in (blue, green):
        for host, agent in group.items():
            for other in group:
                if other is not host:
                    line = agent.wait_for(event("discovered", other), timeout=WAIT_S)
                    assert line["address"] == [other.address, PORT]
                    assert line["name"] == f"n{other.index}"
                    assert line["formed"] is False and line["cid"] is None
                    assert line["v"] == 1

    # Every blue node received the green and the garbage announcements, and ignored them...
    for agent in blue.values():
        for instance, reason in [
            ("n4-00000000000000a4", " of cluster 'green'"),
            ("n5-00000000000000a5", " of cluster 'green'"),
            ("bad0", ": bad node id 'NOT-HEX!'"),
            ("bad1", ": TXT string at byte 13 overruns the record"),
        ]:
            agent.wait_for_stderr(f"ignoring {instance}._quicraft._udp.local.{reason}")
    # ...so it reported the other two blue nodes and nothing else, and lives on.
    for host, agent in blue.items():
        assert reported_ids(agent) == {node_id(h) for h in blue if h is not host}, agent.describe()
        assert agent.popen.poll() is None
    for host, agent in green.items():
        assert reported_ids(agent) == {node_id(h) for h in green if h is not host}


def test_formed_update_stop_and_clean_restart(lan_factory: Callable[[int], Lan]) -> None:
    lan = lan_factory(3)
    h1, h2, h3 = lan.hosts
    agents = {h: launch(lan, h) for h in lan.hosts}
    ready(*agents.values())
    for host, agent in agents.items():
        for other in lan.hosts:
            if other is not host:
                agent.wait_for(event("discovered", other), timeout=WAIT_S)

    # h1 joins a formed cluster: the same instance's TXT record changes in place.
    agents[h1].send_signal(signal.SIGUSR1)
    agents[h1].wait_for(lambda line: line.get("event") == "formed", timeout=WAIT_S)
    for host in (h2, h3):
        agents[host].wait_for(
            event("updated", h1, formed=True, cid="c1d0c1d0c1d0c1d0"), timeout=WAIT_S
        )

    # h3 stops cleanly: its goodbye packets make the others report it lost.
    assert agents[h3].stop() == 0
    assert agents[h3].output()[-1] == {"event": "closed"}
    for host in (h1, h2):
        agents[host].wait_for(event("lost", h3), timeout=WAIT_S)

    # It comes back on another address: the same id, found again, at its new address.
    lan.set_address(h3, "10.77.0.103")
    agents[h3] = start(lan, h3)
    for host in (h1, h2):
        agents[host].wait_for(
            event("discovered", h3, address=["10.77.0.103", PORT]), timeout=WAIT_S
        )
    agents[h3].wait_for(event("discovered", h1, formed=True), timeout=WAIT_S)


def test_a_node_back_on_a_new_address_is_an_update_of_the_same_id(
    lan_factory: Callable[[int], Lan],
) -> None:
    lan = lan_factory(2)
    h1, h2 = lan.hosts
    watcher, first = launch(lan, h1), launch(lan, h2)
    ready(watcher, first)
    watcher.wait_for(event("discovered", h2, address=[h2.address, PORT]), timeout=WAIT_S)

    # h2 dies without a goodbye (power cut), and comes back with a new address from DHCP.
    first.stop(sig=signal.SIGKILL)
    lan.set_address(h2, "10.77.0.102")
    start(lan, h2)
    watcher.wait_for(event("updated", h2, address=["10.77.0.102", PORT]), timeout=WAIT_S)
    # A second later the old address is flushed from the caches (RFC 6762 §10.2), and the
    # peer is reported with the new one only.
    watcher.wait_for(event("updated", h2, addresses=["10.77.0.102"]), timeout=WAIT_S)
    kinds = [line["event"] for line in watcher.output() if event_about(h2)(line)]
    assert kinds[0] == "discovered" and set(kinds[1:]) == {"updated"}, kinds


def test_an_out_of_date_txt_record_arriving_last_does_not_win(
    lan_factory: Callable[[int], Lan],
) -> None:
    lan = lan_factory(3)
    owner_host, watcher_host, replayer = lan.hosts
    owner = start(lan, owner_host)
    owner.send_signal(signal.SIGUSR1)
    owner.wait_for(lambda line: line.get("event") == "formed", timeout=WAIT_S)
    watcher = start(lan, watcher_host)
    watcher.wait_for(event("discovered", owner_host, formed=True), timeout=WAIT_S)

    # A third host sends the owner's record from before it formed: an old copy arriving after
    # the new one (or a forgery). The watcher stores it last, and must not believe it.
    instance = f"n{owner_host.index}-{node_id(owner_host)}.{SERVICE_TYPE}"
    unformed = Announcement("blue", node_id(owner_host), f"n{owner_host.index}", PORT)
    conflict = f"discovery: {instance} has 2 TXT records; asking its owner"
    asked_before = watcher.stderr_path.read_text().count(conflict)
    replay = lan.python(
        replayer, AGENT, "--replay", encode_txt(unformed.txt()).hex(), "--name", instance
    )
    replay.wait_for(lambda line: line.get("event") == "sent", timeout=WAIT_S)
    deadline = time.monotonic() + WAIT_S
    while watcher.stderr_path.read_text().count(conflict) == asked_before:
        assert time.monotonic() < deadline, watcher.describe()
        time.sleep(0.05)
    # The owner's answer settles it; the resolution after the settling second agrees.
    time.sleep(SETTLE_S + 0.5)
    about_owner = [line for line in watcher.output() if event_about(owner_host)(line)]
    assert about_owner[-1]["formed"] is True, watcher.describe()
