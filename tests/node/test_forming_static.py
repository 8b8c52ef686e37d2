"""Founding from static --peers when the --peers do not fit the nodes they name, with real
nodes in this process over loopback QUIC (found by an audit of cluster forming, 2026-12-05)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from inprocess import nodes_in, until, write_everywhere

from quicraft.node import FoundingError, NodeStopped
from quicraft.storage import LevelDBStorage
from quicraft.transport import TransportError


def test_a_new_node_whose_peer_is_a_member_of_another_cluster_stops_and_says_how_to_join(
    tmp_path: Path,
) -> None:
    """a and b founded {a, b}; c, new, is started with --peers a. a refuses it (not a
    member); c used to log "waiting for founding peer" once a minute and wait for ever."""

    async def scenario() -> None:
        async with nodes_in(tmp_path, "abc") as nodes:
            founders = [nodes.node("a", "b"), nodes.node("b", "a")]
            await asyncio.gather(*(n.start() for n in founders))
            await write_everywhere(nodes, "k")
            late = nodes.node("c", "a")
            with pytest.raises(FoundingError, match="--no-bootstrap") as refused:
                await asyncio.wait_for(late.start(), 10)
            assert f"127.0.0.1:{nodes.ports['a']}" in str(refused.value)
            assert late.raft.core is None
            await nodes.stop(late)
            storage = LevelDBStorage(late.settings.data_dir)
            assert storage.load().entries == []  # it founded nothing
            storage.close()

    asyncio.run(scenario())


def test_a_founder_stopped_after_saying_its_set_does_not_found_another(tmp_path: Path) -> None:
    """x said it founds {p, q, x}; p agreed; q could not reach p yet (a network fault). x was
    stopped and started with --peers y. It used to found {x, y} with y, while p and q, holding
    what x had said, founded {p, q, x} once q reached p: two clusters, x a voter of both."""

    async def scenario() -> None:
        async with nodes_in(tmp_path, "pqxy") as nodes:
            p, q, x = nodes.node("p", "qx"), nodes.node("q", "px"), nodes.node("x", "pq")
            healed = asyncio.Event()
            dial = q.pool.dial

            async def faulty_dial(address: tuple[str, int], expect: str | None = None) -> str:
                if address == nodes.address("p") and not healed.is_set():
                    raise TransportError("the network drops q's packets to p")
                return await dial(address, expect)

            q.pool.dial = faulty_dial  # type: ignore[method-assign]
            starts = [asyncio.create_task(n.start()) for n in (p, q, x)]
            await until(lambda: x._founders is not None and p._founders is not None)
            await nodes.stop(x)
            moved, y = nodes.node("x", "y"), nodes.node("y", "x")
            y_start = asyncio.create_task(y.start())
            with pytest.raises(FoundingError, match=r"told its founding peers") as refused:
                await asyncio.wait_for(moved.start(), 10)
            assert "empty its data directory" in str(refused.value)
            # Its peers of before, not met since, are named by where they were reached.
            assert f"at 127.0.0.1:{nodes.ports['p']}" in str(refused.value)
            await nodes.stop(moved)
            await nodes.stop(y)  # it waits for x's set: it founded nothing
            await asyncio.gather(y_start, return_exceptions=True)
            assert y.raft.core is None

            # Started again with its set, x founds it with p and q.
            healed.set()
            again = nodes.node("x", "pq")
            await asyncio.wait_for(asyncio.gather(again.start(), *starts[:2]), 20)
            await write_everywhere(nodes, "k")
            assert all(len(n.raft.core.membership.voters) == 3 for n in nodes.running)  # type: ignore[union-attr]
            await asyncio.gather(starts[2], return_exceptions=True)

    asyncio.run(scenario())


def test_founders_given_different_sets_keep_them_until_the_wrong_one_is_emptied(
    tmp_path: Path,
) -> None:
    """b was given the wrong --peers: a and b refuse each other's set. Each keeps its own (a
    founder that only says another set may still say ours some day); b, started again with
    the right --peers, says what to do, and once its data directory is emptied all found."""

    async def scenario() -> None:
        async with nodes_in(tmp_path, "abc") as nodes:
            wrong = [nodes.node("a", "bc"), nodes.node("b", "a"), nodes.node("c", "ab")]
            starts = [asyncio.create_task(n.start()) for n in wrong]
            done, _ = await asyncio.wait(starts[:2], timeout=10)
            assert len(done) == 2
            assert all(isinstance(t.exception(), FoundingError) for t in done)
            for node in wrong:
                await nodes.stop(node)
            await asyncio.gather(*starts, return_exceptions=True)
            right = [nodes.node(name, set("abc") - {name}) for name in "ac"]
            waiting = [asyncio.create_task(n.start()) for n in right]
            b = nodes.node("b", "ac")
            with pytest.raises(FoundingError, match="told its founding peers"):
                await asyncio.wait_for(b.start(), 10)
            await nodes.stop(b)
            shutil.rmtree(b.settings.data_dir)
            b = nodes.node("b", "ac")
            await asyncio.wait_for(asyncio.gather(b.start(), *waiting), 20)
            await write_everywhere(nodes, "k")

    asyncio.run(scenario())


def test_founders_refused_by_each_other_keep_their_sets(tmp_path: Path) -> None:
    """x founds {p, q, x}, q founds {q, r, x}: each refuses the other's set, and neither may
    say another when started again. Had both forgotten, q could be started to say {p, q, x}
    and x to say {x, y}: p, still holding what x said, would found {p, q, x} with q while x
    founded {x, y}, x a voter of both."""

    async def scenario() -> None:
        async with nodes_in(tmp_path, "pqrxy") as nodes:
            x, q = nodes.node("x", "pq"), nodes.node("q", "rx")
            others = [nodes.node("p", "qx"), nodes.node("r", "q")]
            starts = [asyncio.create_task(n.start()) for n in (x, q, *others)]
            done, _ = await asyncio.wait(starts[:2], timeout=10)
            assert len(done) == 2
            assert all(isinstance(t.exception(), FoundingError) for t in done)
            for node in (x, q, *others):
                await nodes.stop(node)
            await asyncio.gather(*starts, return_exceptions=True)
            # Each meets a node its new --peers name and refuses to say another set.
            met = [nodes.node("p", "qx"), nodes.node("y", "x")]
            waiting = [asyncio.create_task(n.start()) for n in met]
            for name, peers in (("q", "px"), ("x", "y")):
                again = nodes.node(name, peers)
                with pytest.raises(FoundingError, match="told its founding peers"):
                    await asyncio.wait_for(again.start(), 10)
                await nodes.stop(again)
            for node in met:
                await nodes.stop(node)
            await asyncio.gather(*waiting, return_exceptions=True)
            assert all(n.raft.core is None for n in met)  # nobody founded anything

    asyncio.run(scenario())


def test_a_founder_that_said_its_set_may_not_join_another_cluster(tmp_path: Path) -> None:
    """x said {p, x} (p waits for q, down): started again to be added to a cluster
    (--no-bootstrap), or to form one on a LAN, it would be a member of another cluster than
    the one p may still found with it."""

    async def scenario() -> None:
        async with nodes_in(tmp_path, "pqx") as nodes:
            x, p = nodes.node("x", "p"), nodes.node("p", "qx")
            starts = [asyncio.create_task(n.start()) for n in (x, p)]
            await until(lambda: x._founders is not None)  # x has said {p, x}
            await nodes.stop(x)
            joining = nodes.node("x", (), wait_to_be_added=True)
            with pytest.raises(FoundingError, match="may not join or form another cluster"):
                await asyncio.wait_for(joining.start(), 10)
            await nodes.stop(joining)
            await nodes.stop(p)
            await asyncio.gather(*starts, return_exceptions=True)

    asyncio.run(scenario())


def test_a_founder_waiting_for_its_peers_sets_stops_when_a_hello_comes_as_it_stops(
    tmp_path: Path,
) -> None:
    """a waits for b's set (b waits for c, which is down). A hello that woke a's wait in the
    same turn of the loop as stop() used to swallow the cancel (asyncio.wait_for of Python
    3.11): a went on waiting, and stop(), SIGTERM included, never returned."""

    async def scenario() -> None:
        async with nodes_in(tmp_path, "abc") as nodes:
            a, b = nodes.node("a", "b"), nodes.node("b", "ac")
            starts = [asyncio.create_task(n.start()) for n in (a, b)]
            await until(lambda: a._founders is not None)  # a waits for b's set
            a._news.set()  # as when a hello arrives
            await asyncio.wait_for(nodes.stop(a), 5)
            await nodes.stop(b)
            results = await asyncio.gather(*starts, return_exceptions=True)
            assert all(isinstance(r, NodeStopped) for r in results), results

    asyncio.run(scenario())
