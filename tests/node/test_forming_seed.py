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


def join_node(nodes: Nodes, name: str, seed: str | None) -> Node:
    join = () if seed is None else (nodes.address(seed),)
    quiet = DiscoverySettings(enabled=False, join=join)
    return nodes.node(name, discovery=quiet, expect=2, lan=True)


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


def test_nodes_that_meet_only_through_a_seed_form_one_cluster(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with nodes_in(tmp_path, NAMES) as nodes:
            *leaves, seed = by_id(nodes)  # every leaf's id is below the seed's
            started = [join_node(nodes, seed, None)]
            started += [join_node(nodes, leaf, seed) for leaf in leaves]
            await asyncio.gather(*(n.start() for n in started))
            await one_cluster_of_all(nodes)

    asyncio.run(scenario())


def test_a_node_that_meets_a_joining_seed_joins_too(tmp_path: Path) -> None:
    """The lowest id comes last, when the seed has already decided to join another node's
    cluster but is not a member yet: it must not found a second one."""

    async def scenario() -> None:
        async with nodes_in(tmp_path, NAMES[:3]) as nodes:
            last, first, seed = sorted(NAMES[:3], key=nodes.id_of)
            early = [join_node(nodes, seed, None), join_node(nodes, first, seed)]
            await asyncio.gather(*(n.start() for n in early))
            await until(lambda: early[0].lan is not None and early[0].lan.joining)
            await join_node(nodes, last, seed).start()
            await one_cluster_of_all(nodes)

    asyncio.run(scenario())
