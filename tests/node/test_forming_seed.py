"""Forming on a LAN where nodes meet only through one seed (--join to it, no mDNS), with real
nodes in this process over loopback QUIC. Each node counts what it sees and what the seed says
it sees (forming.py); before, each node whose id was below the seed's founded a cluster of its
own (found by a review on 2026-12-02)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from inprocess import Nodes, nodes_in, until

from quicraft.discovery import DiscoverySettings
from quicraft.node import Node

NAMES = "abcd"


def join_node(nodes: Nodes, name: str, seed: str | None, expect: int = 2) -> Node:
    join = () if seed is None else (nodes.address(seed),)
    quiet = DiscoverySettings(enabled=False, join=join)
    return nodes.node(name, discovery=quiet, expect=expect, lan=True)


async def start(*started: Node) -> None:
    """Start them together; a start waits for the forming verdict, which must come."""
    await asyncio.wait_for(asyncio.gather(*(n.start() for n in started)), 30)


async def one_cluster_of_all(nodes: Nodes) -> None:
    """Until every node is a member of one cluster with one id."""

    def formed() -> bool:
        ids = {n.cluster_id() for n in nodes.running}
        core = nodes.running[0].raft.core
        members = core.membership.members() if core is not None else set()
        return len(ids) == 1 and None not in ids and members == {n.id for n in nodes.running}

    try:
        await until(formed, timeout=30)
    except TimeoutError:
        raise AssertionError({n.settings.name: n.cluster_id() for n in nodes.running}) from None


def by_id(nodes: Nodes) -> list[str]:
    return sorted(NAMES, key=nodes.id_of)


def form_by_rank(
    tmp_path: Path, ranks: tuple[str, ...], joins: dict[str, str | None], expect: int
) -> None:
    """Start one node per role (`ranks`: the roles from the lowest id up), each given
    --join to the role `joins` names, all together, in the order of `joins`; they must form
    one cluster of all."""

    async def scenario() -> None:
        async with nodes_in(tmp_path, NAMES) as nodes:
            name = dict(zip(ranks, sorted(NAMES, key=nodes.id_of), strict=True))
            await start(*(
                join_node(nodes, name[role], name[seed] if seed else None, expect)
                for role, seed in joins.items()
            ))  # fmt: skip
            await one_cluster_of_all(nodes)

    asyncio.run(scenario())


def test_nodes_that_meet_only_through_a_seed_form_one_cluster(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with nodes_in(tmp_path, NAMES) as nodes:
            *leaves, seed = by_id(nodes)  # every leaf's id is below the seed's
            await start(join_node(nodes, seed, None), *(join_node(nodes, x, seed) for x in leaves))
            await one_cluster_of_all(nodes)

    asyncio.run(scenario())


def test_a_node_that_meets_a_joining_seed_joins_too(tmp_path: Path) -> None:
    """The lowest id comes last, when the seed has already decided to wait for another node
    to found the cluster but is not a member yet: it must not found a second one."""

    async def scenario() -> None:
        async with nodes_in(tmp_path, NAMES[:3]) as nodes:
            last, first, seed = sorted(NAMES[:3], key=nodes.id_of)
            early = [join_node(nodes, seed, None), join_node(nodes, first, seed)]
            await start(*early)
            await until(lambda: early[0].lan is not None and early[0].lan.awaits == early[1].id)
            await start(join_node(nodes, last, seed))
            await one_cluster_of_all(nodes)

    asyncio.run(scenario())


def test_the_lowest_id_counting_too_few_founds_when_a_peer_awaits_it(tmp_path: Path) -> None:
    """A chain: low and middle --join top, bottom --join middle, expect 4. Top and middle
    count all four and wait for low to found; low and bottom count three. Low must found
    when a peer awaits it (found by a review: everyone waited, nobody founded)."""

    joins = {"top": None, "low": "top", "middle": "top", "bottom": "middle"}
    form_by_rank(tmp_path, ("low", "top", "middle", "bottom"), joins, expect=4)


def test_a_node_that_went_away_before_forming_is_not_waited_for(tmp_path: Path) -> None:
    """Without mDNS nothing says that a node left: the lowest id, gone, was counted by every
    node and awaited for ever (found by a review). A peer whose connection closed is not
    counted."""

    async def scenario() -> None:
        async with nodes_in(tmp_path, NAMES) as nodes:
            gone, first, second, seed = sorted(NAMES, key=nodes.id_of)
            hub = join_node(nodes, seed, None, 3)
            leaving = join_node(nodes, gone, seed, 3)
            starting = [asyncio.ensure_future(n.start()) for n in (hub, leaving)]
            await until(lambda: hub.lan is not None and leaving.id in hub.lan.verified)
            starting[1].cancel()  # its start waits for a verdict it will never see
            await asyncio.gather(starting[1], return_exceptions=True)
            await nodes.stop(leaving)
            await start(join_node(nodes, first, seed, 3), join_node(nodes, second, seed, 3))
            await asyncio.wait_for(starting[0], 30)
            await one_cluster_of_all(nodes)

    asyncio.run(scenario())


def test_seeds_joined_to_each_other_each_with_nodes_of_its_own_form_one_cluster(
    tmp_path: Path,
) -> None:
    """A chain of four: one leaf --join S1, S1 --join S2, the other leaf --join S2, the
    leaves with the two lowest ids. Each leaf counted only three nodes within two hops, so
    with expect 3 both founded (a known limit until 2026-12-02, found by a review). A node
    now dials every node its peers say they see, so every node counts all four."""

    joins = {"seed2": None, "seed1": "seed2", "leaf1": "seed1", "leaf2": "seed2"}
    form_by_rank(tmp_path, ("leaf1", "leaf2", "seed1", "seed2"), joins, expect=3)
