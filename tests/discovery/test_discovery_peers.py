"""The rules of the peer events (PeerTable), the choice of address, and the small pure helpers
of the package: no network at all."""

from __future__ import annotations

import dataclasses
import time

import pytest

import quicraft.discovery as discovery
from quicraft.discovery import (
    Announcement,
    DiscoveredPeer,
    DiscoveryError,
    DiscoverySettings,
    PeerEvent,
    PeerEventKind,
    PeerTable,
    RecordError,
    announce_addresses,
    encode_txt,
    instance_label,
    ipv4_address,
    peer_from_service,
)

OWN = "00000000000000ff"
A = "00000000000000a1"
B = "00000000000000b2"
DISCOVERED, UPDATED, LOST = PeerEventKind.DISCOVERED, PeerEventKind.UPDATED, PeerEventKind.LOST


def peer(
    node_id: str = A, host: str = "10.0.0.1", cluster: str = "c1", **changes: object
) -> DiscoveredPeer:
    made = DiscoveredPeer(node_id, "n", cluster, (host, 7400), None, 1, (host,), "i1")
    return dataclasses.replace(made, **changes)  # type: ignore[arg-type]


def kinds(events: list[PeerEvent]) -> list[tuple[PeerEventKind, str]]:
    return [(e.kind, e.peer.node_id) for e in events]


def test_discovered_updated_lost() -> None:
    table = PeerTable("c1", OWN)
    assert kinds(table.put("i1", peer())) == [(DISCOVERED, A)]
    assert table.put("i1", peer()) == []  # a refresh that changes nothing
    moved = peer(host="10.0.0.9")
    [event] = table.put("i1", moved)
    assert (event.kind, event.peer, event.previous) == (UPDATED, moved, peer())
    formed = dataclasses.replace(moved, cluster_id="c1d0c1d0")
    assert kinds(table.put("i1", formed)) == [(UPDATED, A)]
    assert table.peers() == {A: formed}
    [lost] = table.remove("i1")
    assert (lost.kind, lost.peer) == (LOST, formed)
    assert table.peers() == {}
    assert table.remove("i1") == []


def test_ourselves_and_other_clusters_are_not_reported() -> None:
    table = PeerTable("c1", OWN)
    assert table.put("me", peer(OWN)) == []
    assert table.put("other", peer(B, cluster="c2")) == []
    assert table.peers() == {}


def test_a_record_that_stops_being_ours_is_lost() -> None:
    """An instance that now fails to parse (None) or moved to another cluster is gone."""
    table = PeerTable("c1", OWN)
    table.put("i1", peer())
    assert kinds(table.put("i1", None)) == [(LOST, A)]
    table.put("i1", peer())
    assert kinds(table.put("i1", peer(cluster="c2"))) == [(LOST, A)]


def test_the_id_is_the_identity_not_the_instance() -> None:
    table = PeerTable("c1", OWN)
    table.put("old-name", peer(host="10.0.0.1"))
    # The same key announced under another instance name (renamed, or restarted elsewhere).
    assert kinds(table.put("new-name", peer(host="10.0.0.2", instance="i2"))) == [(UPDATED, A)]
    assert table.peers()[A].address == ("10.0.0.2", 7400)
    # The old instance going away changes nothing: the id is still announced.
    assert table.remove("old-name") == []
    assert kinds(table.remove("new-name")) == [(LOST, A)]


def test_an_instance_that_changes_id_loses_one_and_finds_the_other() -> None:
    table = PeerTable("c1", OWN)
    table.put("i1", peer(A))
    assert kinds(table.put("i1", peer(B))) == [(LOST, A), (DISCOVERED, B)]


def test_the_freshest_instance_of_an_id_wins() -> None:
    table = PeerTable("c1", OWN)
    table.put("x", peer(host="10.0.0.1"))
    table.put("y", peer(host="10.0.0.2"))
    assert kinds(table.put("x", peer(host="10.0.0.3"))) == [(UPDATED, A)]
    assert table.peers()[A].address[0] == "10.0.0.3"
    assert kinds(table.remove("x")) == [(UPDATED, A)]  # back to y's
    assert table.peers()[A].address[0] == "10.0.0.2"


TXT = encode_txt(Announcement("c1", A, "n1", 7400).txt())


def test_an_update_costs_the_same_however_many_instances_are_announced() -> None:
    """Anyone may announce thousands of instances; each update used to scan them all, so
    40,000 held the event loop for about 25 s of CPU (0.5 s now)."""
    table = PeerTable("c1", OWN)
    started = time.process_time()
    for n in range(40_000):
        table.put(f"i{n}", peer(f"a{n:015x}", instance=f"i{n}"))
    for n in range(0, 40_000, 2):
        table.remove(f"i{n}")
    assert time.process_time() - started < 5
    assert len(table.peers()) == 20_000


def test_a_peer_from_a_resolved_service() -> None:
    found = peer_from_service("n1-x._quicraft._udp.local.", TXT, 7400, ["10.0.0.5"])
    assert found == DiscoveredPeer(
        A, "n1", "c1", ("10.0.0.5", 7400), None, 1, ("10.0.0.5",), "n1-x._quicraft._udp.local."
    )
    assert not found.formed


#: Newest first within a rank; the LAN's IPv4, then global IPv6, IPv4 link-local, loopback.
#: Dropped: unscoped IPv6 link-local, unspecified, multicast, garbage, repeats.
ADDRESS_CASES = [
    (["10.0.0.2", "10.0.0.1"], ["10.0.0.2", "10.0.0.1"]),
    (["127.0.0.1", "2001:db8::1", "10.0.0.1"], ["10.0.0.1", "2001:db8::1", "127.0.0.1"]),
    (["169.254.1.1", "127.0.0.1"], ["169.254.1.1", "127.0.0.1"]),
    (["fe80::1", "0.0.0.0", "224.0.0.251", "not an ip", "10.0.0.1", "10.0.0.1"], ["10.0.0.1"]),
    # Broadcast, the reserved 240/4 and "this network" (0/8) are no host's address.
    (["255.255.255.255", "240.0.0.1", "0.1.2.3", "::1", "10.0.0.1"], ["10.0.0.1", "::1"]),
]


@pytest.mark.parametrize(("announced", "kept"), ADDRESS_CASES)
def test_address_choice(announced: list[str], kept: list[str]) -> None:
    found = peer_from_service("i", TXT, 7400, announced)
    assert found.address == (kept[0], 7400)
    assert list(found.addresses) == kept


def test_a_peer_keeps_a_few_of_its_addresses_however_many_it_announces() -> None:
    """Addresses are anyone's to announce, and each one kept is dialed (node/lan.py)."""
    announced = [f"10.1.{n // 250}.{n % 250 + 1}" for n in range(1000)]
    found = peer_from_service("i", TXT, 7400, announced)
    assert list(found.addresses) == announced[: discovery.peers.MAX_ADDRESSES]
    assert found.address == (announced[0], 7400)


def test_a_service_without_a_usable_address_is_refused() -> None:
    with pytest.raises(RecordError, match="no usable address"):
        peer_from_service("i", TXT, 7400, ["fe80::1", "0.0.0.0"])
    with pytest.raises(RecordError):
        peer_from_service("i", b"\x03abc", 7400, ["10.0.0.1"])


def test_instance_labels_are_unique_per_id_and_valid_host_labels() -> None:
    assert instance_label("n1", A) == f"n1-{A}"
    long = instance_label("node.with_odd.chars" + "x" * 60, "f" * 64)
    assert len(long) <= 63 and long.endswith("-" + "f" * 16)
    assert set(long) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")
    assert instance_label("n1", A) != instance_label("n1", B)


def test_interface_names_map_to_addresses() -> None:
    """Reads the loopback interface's address: an ioctl, no traffic."""
    assert ipv4_address("lo") == "127.0.0.1"
    with pytest.raises(DiscoveryError, match="no network interface named 'nosuch0'"):
        ipv4_address("nosuch0")
    for bad in ("", "x" * 16, "a\0b"):
        with pytest.raises(DiscoveryError, match="bad interface name"):
            ipv4_address(bad)
    assert announce_addresses("10.1.2.3", ["lo"]) == ["10.1.2.3"]
    assert announce_addresses("0.0.0.0", ["lo"]) == ["127.0.0.1"]
    everywhere = announce_addresses("0.0.0.0")  # loopback only when there is nothing else
    assert everywhere == ["127.0.0.1"] or "127.0.0.1" not in everywhere


def test_settings_default_to_mdns_on_every_interface() -> None:
    settings = DiscoverySettings()
    assert (settings.enabled, settings.interfaces, settings.join) == (True, (), ())


def test_public_api_is_sorted_and_importable() -> None:
    names = discovery.__all__
    assert names == sorted(names, key=lambda n: (not n.isupper(), n))
    for name in names:
        assert hasattr(discovery, name), name
