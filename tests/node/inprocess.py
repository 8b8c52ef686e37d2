"""Real nodes in the test's own process, over loopback QUIC: faster than processes, and their
state is there to look at. Every node a test makes is stopped when its `nodes_in` ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from cluster_harness import free_base_port

from quicraft.client import connect
from quicraft.core import Role
from quicraft.node import PRESETS, Node, NodeSettings
from quicraft.transport import Role as CertificateRole
from quicraft.transport import init_cluster, issue, load_identity

CLUSTER = "c1"


class Nodes:
    """Named nodes of one cluster, each with its own port and data directory."""

    def __init__(self, folder: Path, names: Iterable[str]):
        self.folder = folder
        self.certs = folder / "certs"
        init_cluster(self.certs, CLUSTER)
        names = list(names)
        base = free_base_port(len(names))
        self.ports = {name: base + i for i, name in enumerate(names, start=1)}
        for name in self.ports:
            issue(self.certs, CLUSTER, name, CertificateRole.NODE)
        self.running: list[Node] = []

    def node(self, name: str, peers: Iterable[str | tuple[str, int]] = (), **settings: Any) -> Node:
        """Node `name` (not started) with --peers `peers` (names, or addresses as they are);
        `settings`: other NodeSettings."""
        node = Node(
            NodeSettings(
                CLUSTER,
                name,
                self.folder / name,
                self.certs,
                settings.pop("listen", self.address(name)),
                peers=tuple(p if isinstance(p, tuple) else self.address(p) for p in peers),
                timings=PRESETS["test"],
                **settings,
            )
        )
        self.running.append(node)
        return node

    def address(self, name: str) -> tuple[str, int]:
        return ("127.0.0.1", self.ports[name])

    def id_of(self, name: str) -> str:
        return load_identity(self.certs, CLUSTER, name).node_id

    async def stop(self, node: Node) -> None:
        self.running.remove(node)
        await node.stop(hand_over=False)


@asynccontextmanager
async def nodes_in(folder: Path, names: Iterable[str]) -> AsyncIterator[Nodes]:
    nodes = Nodes(folder, names)
    try:
        yield nodes
    finally:
        for node in list(nodes.running):
            await nodes.stop(node)


async def until(condition: object, timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.05)


def leader_of(nodes: Iterable[Node]) -> Node | None:
    return next((n for n in nodes if n.raft.core and n.raft.core.role is Role.LEADER), None)


async def write_everywhere(nodes: Nodes, key: str) -> None:
    """Write through a client and wait until every running node has applied it."""
    endpoints = [f"127.0.0.1:{nodes.ports[n.settings.name]}" for n in nodes.running]
    async with connect(endpoints, CLUSTER, nodes.certs, "admin", timeout=20) as client:
        await client.kv.set(key, b"1")
    await until(lambda: all(n.kv.get(key)[0] is not None for n in nodes.running))
