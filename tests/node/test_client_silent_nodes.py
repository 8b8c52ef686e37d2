"""A node that answers nothing at all (frozen, its host gone, its packets dropped) listed
before a live one: the clients try the next node after a second (client/channel.py
ConnectPace), not after the handshake's 5 s or a request's 3 s attempt. Before, a call with
a timeout under those never reached the live node (found by an audit: `status()` of a
management client with timeout=5 failed whenever its first endpoint was frozen)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_harness import Cluster, one_node_cluster

from quicraft.client import MgmtError, connect, connect_mgmt

CLUSTER = "t1"


@pytest.fixture(scope="module")
def one_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from one_node_cluster(tmp_path_factory.mktemp("silent") / "cluster")


@pytest.fixture
def silent() -> Iterator[str]:
    """A loopback UDP port that takes every datagram and answers none."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield f"127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


def test_requests_pass_a_silent_node_by(one_node: Cluster, silent: str) -> None:
    endpoints = [silent, one_node.nodes[0].address]
    certs = one_node.local.certs

    async def scenario() -> None:
        async with connect(endpoints, CLUSTER, certs, timeout=2.5) as c:
            assert await c.kv.set("silent/a", b"1") > 0  # before: gave up, after 2.5 s
            assert c.current_endpoint == endpoints[1]
        async with connect_mgmt(endpoints, CLUSTER, certs, timeout=2.5) as m:
            assert (await m.status())["leader"]  # before: gave up, never past the first

    asyncio.run(scenario())


def test_a_subscription_passes_a_silent_node_by(one_node: Cluster, silent: str) -> None:
    endpoints = [silent, one_node.nodes[0].address]

    async def scenario() -> None:
        async with connect(endpoints, CLUSTER, one_node.local.certs) as c:
            first = await asyncio.wait_for(anext(c.events(since=0)), 4.0)  # before: after 5 s
            assert first.pos > 0

    asyncio.run(scenario())


def test_a_backup_is_taken_from_the_next_node(
    one_node: Cluster, silent: str, tmp_path: Path
) -> None:
    """A backup did not move on at all: it failed with the first endpoint."""
    endpoints = [silent, one_node.nodes[0].address]
    backup = tmp_path / "b.qrbackup"

    async def scenario() -> None:
        async with connect_mgmt(endpoints, CLUSTER, one_node.local.certs, timeout=2.5) as m:
            info = await m.backup(backup)
        assert info.index > 0 and backup.exists()

    asyncio.run(scenario())


def test_a_backup_no_node_answers_says_which_and_why(one_node: Cluster, silent: str) -> None:
    """Before, its message ended at "failed: ", with nothing after it."""

    async def scenario() -> None:
        async with connect_mgmt(silent, CLUSTER, one_node.local.certs, timeout=1.5) as m:
            with pytest.raises(MgmtError) as raised:
                await m.backup(Path("never-written.qrbackup"))
        assert raised.value.code == "timeout"
        assert str(raised.value).startswith(f"gave up after 1.5s: {silent}")
        assert raised.value.hint == "is the cluster running?"

    asyncio.run(scenario())
