"""Every snapshot handed to a PeerPool ends in one `on_snapshot_sent` report, also when the
pool drops it unsent. The leader's core sends a follower nothing more until that report, so
a snapshot dropped silently left the follower behind for good (found by
test_disk_full.py: a follower that stopped for lack of space never caught up after its
restart, because the snapshot the leader had made for it meanwhile was dropped while it
could not be dialed)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from quicraft.core import Message, MessageType, NodeId, Snapshot
from quicraft.node import peers
from quicraft.node.peers import PeerPool
from quicraft.transport import ALPN_RAFT, Refusal, Role, init_cluster, issue, load_identity, serve

PEER = NodeId("peer0000peer0000")

Reports = list[tuple[NodeId, bool]]


def make_pool(tmp_path: Path, name: str = "a") -> tuple[PeerPool, Reports]:
    if not (tmp_path / "c1").exists():
        init_cluster(tmp_path, "c1")
    issue(tmp_path, "c1", name, Role.NODE)
    reports: Reports = []

    def ignore(*_args: object) -> None:
        pass

    def snapshot_sent(peer: NodeId, ok: bool) -> None:
        reports.append((peer, ok))

    return PeerPool(load_identity(tmp_path, "c1", name), ignore, ignore, snapshot_sent), reports


def message(pool: PeerPool, kind: MessageType) -> Message:
    snapshot = Snapshot(data=b"state") if kind is MessageType.SNAPSHOT else None
    return Message(kind, PEER, pool.id, 1, snapshot=snapshot)


def closed_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def reported(reports: Reports, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not reports:
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)  # time for a second report, which must not come


@pytest.mark.parametrize("where", ["no address", "nothing listening"])
def test_a_snapshot_for_a_peer_that_cannot_be_dialed_is_reported_unsent(
    tmp_path: Path, where: str
) -> None:
    async def scenario() -> Reports:
        pool, reports = make_pool(tmp_path)
        if where == "nothing listening":
            pool.addresses[PEER] = ("127.0.0.1", closed_udp_port())
        try:
            pool.send(message(pool, MessageType.SNAPSHOT))
            await reported(reports)
        finally:
            await pool.close()
        return reports

    assert asyncio.run(scenario()) == [(PEER, False)]


def test_a_snapshot_pushed_out_of_a_full_queue_is_reported_unsent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(peers, "QUEUE_LIMIT", 2)

    async def scenario() -> Reports:
        pool, reports = make_pool(tmp_path)
        try:
            pool.send(message(pool, MessageType.SNAPSHOT))
            pool.send(message(pool, MessageType.HEARTBEAT))
            assert reports == []
            pool.send(message(pool, MessageType.HEARTBEAT))  # the queue is full: out goes the first
            assert reports == [(PEER, False)]
            await asyncio.sleep(0.3)  # the link finds no address and drops the heartbeats
        finally:
            await pool.close()
        return reports

    assert asyncio.run(scenario()) == [(PEER, False)]


def test_a_snapshot_queued_for_a_forgotten_peer_is_reported_unsent(tmp_path: Path) -> None:
    async def scenario() -> Reports:
        pool, reports = make_pool(tmp_path)
        try:
            pool.send(message(pool, MessageType.SNAPSHOT))
            pool.forget(PEER, Refusal("not_admitted", "removed"))
            await asyncio.sleep(0.3)
        finally:
            await pool.close()
        return reports

    assert asyncio.run(scenario()) == [(PEER, False)]


def test_a_snapshot_whose_sending_is_cancelled_before_it_starts_is_reported_unsent(
    tmp_path: Path,
) -> None:
    """Over a live connection the link hands a snapshot to a task of its own; forgetting the
    peer in the turn that task was made cancels it before its first step (found by a review:
    the report was in the coroutine, which then never ran)."""

    async def scenario() -> tuple[Reports, NodeId]:
        pool, reports = make_pool(tmp_path)
        other, _ = make_pool(tmp_path, "b")
        handlers = {ALPN_RAFT: other.handle_stream}
        server = await serve("127.0.0.1", 0, other.identity, handlers, on_connection=other.adopt)
        try:
            peer = await pool.dial(server.address)
            pool.send(Message(MessageType.SNAPSHOT, peer, pool.id, 1, snapshot=Snapshot()))
            link = pool._links[peer]
            while not link._snapshots:
                await asyncio.sleep(0)
            pool.forget(peer, Refusal("not_admitted", "removed"))
            await asyncio.sleep(0.3)
        finally:
            await pool.close()
            await other.close()
            server.close()
        return reports, peer

    reports, peer = asyncio.run(scenario())
    assert reports == [(peer, False)]
