"""Founding a cluster from static --peers, with real nodes in this process over loopback QUIC:
founders that were given different sets found nothing, and a founder whose data was lost is
refused instead of founding again (found by a review on 2026-12-02)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from inprocess import CLUSTER, leader_of, nodes_in, until, write_everywhere

from quicraft.core import ConfChangeKind
from quicraft.node import FoundingError
from quicraft.storage import LevelDBStorage


def test_founders_started_one_after_another_agree_and_serve(tmp_path: Path) -> None:
    """The last founder to start sees the others' sets at once; it must still say its own
    (a first version did not, and the others waited for it forever)."""

    async def scenario() -> None:
        async with nodes_in(tmp_path, "abc") as nodes:
            starts = []
            for name in "abc":
                starts.append(asyncio.create_task(nodes.node(name, set("abc") - {name}).start()))
                await asyncio.sleep(0.7)
            await asyncio.wait_for(asyncio.gather(*starts), 20)
            await write_everywhere(nodes, "k")

    asyncio.run(scenario())


def test_nodes_found_and_serve_without_the_ca_key(tmp_path: Path) -> None:
    """A running node needs ca.crt and its own key, never ca.key: it may live elsewhere
    once the nodes have their keys (docs/security.md)."""

    async def scenario() -> None:
        async with nodes_in(tmp_path, "ab") as nodes:
            (nodes.certs / CLUSTER / "ca.key").unlink()
            starts = [nodes.node(name, set("ab") - {name}).start() for name in "ab"]
            await asyncio.wait_for(asyncio.gather(*starts), 20)
            await write_everywhere(nodes, "k")

    asyncio.run(scenario())


def test_founders_given_different_sets_found_nothing(tmp_path: Path) -> None:
    """{a, b, c} to a and b, {b, c, d} to c and d: before, each pair founded its own
    membership at the same log positions; now no set is agreed by all its members."""

    async def scenario() -> None:
        async with nodes_in(tmp_path, "abcd") as nodes:
            given = {"a": "bc", "b": "ac", "c": "bd", "d": "bc"}
            founders = [nodes.node(name, peers) for name, peers in given.items()]
            starts = [asyncio.create_task(n.start()) for n in founders]
            done, waiting = await asyncio.wait(starts, timeout=10)
            refused = [t for t in done if isinstance(t.exception(), FoundingError)]
            assert refused, "no founder noticed the other set"
            for task in refused:
                assert "give every founding node the same --peers" in str(task.exception())
            assert all(t in refused for t in done), [t.exception() for t in done]
            for task in waiting:  # waiting for a founder that stopped: it founded nothing
                task.cancel()
            await asyncio.gather(*waiting, return_exceptions=True)
            assert all(n.raft.core is None for n in founders)
            for node in founders:  # a failed or cancelled start has closed its storage
                storage = LevelDBStorage(node.settings.data_dir)
                assert storage.load().entries == []
                storage.close()

    asyncio.run(scenario())


def test_peers_that_reach_only_the_node_itself_found_nothing(tmp_path: Path) -> None:
    """--listen 127.0.0.1:P --peers localhost:P passes the command line's check (another
    spelling) and used to found a cluster of one, as if no --peers had been given (found by
    an audit of the command line). The same list given to every node, itself included, still
    founds (that worked and stays)."""

    async def scenario() -> None:
        async with nodes_in(tmp_path, "abc") as nodes:
            itself = ("localhost", nodes.ports["a"])
            alone = nodes.node("a", [itself])
            with pytest.raises(FoundingError, match=r"--peers localhost:\d+ reached this node"):
                await asyncio.wait_for(alone.start(), 10)
            assert alone.raft.core is None
            await nodes.stop(alone)
            storage = LevelDBStorage(alone.settings.data_dir)
            assert storage.load().entries == []  # nothing founded
            storage.close()

            every = tuple(("localhost", nodes.ports[name]) for name in "abc")
            founders = [nodes.node(name, every) for name in "abc"]
            await asyncio.wait_for(asyncio.gather(*(n.start() for n in founders)), 20)
            await write_everywhere(nodes, "k")
            assert all(n.raft.core and len(n.raft.core.membership.voters) == 3 for n in founders)

    asyncio.run(scenario())


def test_a_founder_whose_data_was_lost_is_refused_then_comes_back_as_a_new_member(
    tmp_path: Path,
) -> None:
    """Before, a founder started again on an empty data directory founded again from its
    --peers, with no memory of the votes it gave. Now the peers that remember it say so in
    their hellos and it stops; removed, it comes back with --no-bootstrap and add-member."""

    async def scenario() -> None:
        async with nodes_in(tmp_path, "abc") as nodes:
            founders = {name: nodes.node(name, set("abc") - {name}) for name in "abc"}
            await asyncio.gather(*(n.start() for n in founders.values()))
            await write_everywhere(nodes, "before")  # every node has voted or stored entries
            await nodes.stop(founders["c"])
            shutil.rmtree(tmp_path / "c")

            again = nodes.node("c", "ab")
            with pytest.raises(FoundingError, match="remembers this node as a member"):
                await again.start()
            await nodes.stop(again)
            assert LevelDBStorage(tmp_path / "c").load().entries == []  # it founded nothing

            # Started as a new node before being removed: refused while it waits to be added.
            waiting = nodes.node("c", "ab", wait_to_be_added=True)
            await waiting.start()
            with pytest.raises(FoundingError, match="remove-member c"):
                await asyncio.wait_for(waiting.wait(), 20)
            await nodes.stop(waiting)
            shutil.rmtree(tmp_path / "c")

            # The way back: remove it, start it as a new node, add it.
            await until(lambda: leader_of(nodes.running) is not None)  # c may have led
            leader = leader_of(nodes.running)
            assert leader is not None
            await leader.mgmt.change(ConfChangeKind.REMOVE, founders["c"].id)
            await until(lambda: all(founders["c"].id not in n._remembered for n in nodes.running))
            new = nodes.node("c", "ab", wait_to_be_added=True)
            await new.start()
            await leader.mgmt.add_member(f"127.0.0.1:{nodes.ports['c']}", learner=False)
            await write_everywhere(nodes, "after")
            assert new.kv.get("before")[0] == b"1"

    asyncio.run(scenario())


def test_a_member_added_back_is_remembered_across_a_restart_of_the_cluster(tmp_path: Path) -> None:
    """A restart replays the log after the snapshot, the old REMOVE of a member added back
    since included; that REMOVE used to make every node forget it, so after the cluster
    restarted that member, its data lost, founded again (found by a review)."""

    async def scenario() -> None:
        async with nodes_in(tmp_path, "abc") as nodes:
            first = {name: nodes.node(name, set("abc") - {name}) for name in "abc"}
            await asyncio.gather(*(n.start() for n in first.values()))
            await write_everywhere(nodes, "k0")
            c_id = first["c"].id
            await until(lambda: leader_of(nodes.running) is not None)
            leader = leader_of([first["a"], first["b"]])
            if leader is None:  # c leads: hand over, then remove it
                await first["c"].mgmt.transfer(first["a"].id)
                await until(lambda: leader_of([first["a"], first["b"]]) is not None)
                leader = leader_of([first["a"], first["b"]])
            assert leader is not None
            await leader.mgmt.change(ConfChangeKind.REMOVE, c_id)
            await nodes.stop(first["c"])
            shutil.rmtree(tmp_path / "c")
            back = nodes.node("c", "ab", wait_to_be_added=True)
            await back.start()
            await leader.mgmt.add_member(f"127.0.0.1:{nodes.ports['c']}", learner=False)
            await write_everywhere(nodes, "k1")
            await until(lambda: c_id in first["a"]._remembered or c_id in first["b"]._remembered)

            for node in list(nodes.running):  # the whole cluster stops; c's disk is lost
                await nodes.stop(node)
            shutil.rmtree(tmp_path / "c")
            again = {name: nodes.node(name, set("abc") - {name}) for name in "ab"}
            await asyncio.gather(*(n.start() for n in again.values()))
            await until(lambda: all(n.kv.get("k1")[0] == b"1" for n in again.values()))
            assert any(c_id in n._remembered for n in again.values())
            with pytest.raises(FoundingError, match="remembers this node as a member"):
                await asyncio.wait_for(nodes.node("c", "ab").start(), 20)

    asyncio.run(scenario())


def test_a_member_removed_in_a_snapshot_it_installed_is_forgotten(tmp_path: Path) -> None:
    """A node that catches up by a snapshot applies no entry it covers, the REMOVE of a
    member included; it used to remember that member and refuse it when it came back
    (found by a review)."""

    async def scenario() -> None:
        async with nodes_in(tmp_path, "abcd") as nodes:
            first = {name: nodes.node(name, set("abcd") - {name}) for name in "abcd"}
            await asyncio.gather(*(n.start() for n in first.values()))
            await write_everywhere(nodes, "k0")
            late = leader_of(nodes.running)  # the leader remembers every voter
            assert late is not None
            await nodes.stop(late)
            rest = list(nodes.running)
            await until(lambda: leader_of(rest) is not None)
            leader = leader_of(rest)
            assert leader is not None
            gone = next(n for n in rest if n is not leader)
            assert gone.id in late._remembered
            await leader.mgmt.change(ConfChangeKind.REMOVE, gone.id)
            await nodes.stop(gone)
            await leader.raft.snapshot()  # covers the REMOVE
            name = late.settings.name
            restarted = nodes.node(name, set("abcd") - {name})
            await restarted.start()
            await until(lambda: restarted.raft.snapshot_index >= 1)  # caught up by the snapshot
            assert gone.id not in restarted._remembered

    asyncio.run(scenario())


def test_a_learner_that_lost_its_data_is_refused_too(tmp_path: Path) -> None:
    """A learner gave no vote, but its leader never sends a member entries below what that
    member acknowledged: started again empty, it would wait forever. It is refused with the
    way back instead (a review proposed letting it in; it then stayed empty)."""

    async def scenario() -> None:
        async with nodes_in(tmp_path, "abcd") as nodes:
            founders = [nodes.node(name, set("abc") - {name}) for name in "abc"]
            await asyncio.gather(*(n.start() for n in founders))
            learner = nodes.node("d", wait_to_be_added=True)
            await learner.start()
            await until(lambda: leader_of(founders) is not None)
            leader = leader_of(founders)
            assert leader is not None
            await leader.mgmt.add_member(f"127.0.0.1:{nodes.ports['d']}", learner=True)
            await write_everywhere(nodes, "k0")
            await nodes.stop(learner)
            shutil.rmtree(tmp_path / "d")
            back = nodes.node("d", "abc", wait_to_be_added=True)
            await back.start()
            with pytest.raises(FoundingError, match="remove-member d"):
                await asyncio.wait_for(back.wait(), 20)

    asyncio.run(scenario())


def test_a_node_on_ipv6_says_where_it_listens_in_brackets(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """'listening on ::1:7401' could be read as host ::1:7401 (found by an audit)."""

    async def scenario() -> None:
        async with nodes_in(tmp_path, "a") as nodes:
            node = nodes.node("a", listen=("::1", nodes.ports["a"]))
            with caplog.at_level("INFO", logger="quicraft.node"):
                await node.start()
            assert f"listening on [::1]:{nodes.ports['a']}" in caplog.text

    asyncio.run(scenario())
