"""A member whose log is behind the entry that added the current leader: it did not know the
leader as a member, so it refused its connections and dropped its messages, and stayed
behind for as long as that node led (found by a review). It now heeds the leader that a
member of its own configuration follows, and dials it if the leader cannot dial it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

from inprocess import Nodes, leader_of, nodes_in, until, write_everywhere

from quicraft.core import Role
from quicraft.node import Node
from quicraft.node.mgmt import MgmtFailed
from quicraft.wire import Hello


async def _a_new_leader_while_c_is_down(nodes: Nodes) -> tuple[Node, Node]:
    """Founders a, b, c; c stops; d is added as a voter and takes over. Returns (d, c to be
    started again on its data)."""
    a, b, c = (nodes.node(name, set("abc") - {name}) for name in "abc")
    await asyncio.gather(a.start(), b.start(), c.start())
    await write_everywhere(nodes, "before")
    # The leader has published where each founder serves: d will know where to dial c.
    await until(lambda: all(n.id in a.kv.addresses for n in (a, b, c)))
    await nodes.stop(c)
    d = nodes.node("d", wait_to_be_added=True)
    await d.start()
    await until(lambda: leader_of([a, b]) is not None)
    leader = leader_of([a, b])
    assert leader is not None
    await leader.mgmt.add_member(f"127.0.0.1:{nodes.ports['d']}", learner=False)
    # The transfer is refused until d has caught up: tried again until it takes, by a deadline
    # rather than a number of tries, which a loaded machine could use up before d catches up.
    deadline = time.monotonic() + 30
    while (current := leader_of([a, b, d])) is not d:
        assert time.monotonic() < deadline, f"d never took over; the leader is {current}"
        if current is not None:
            with contextlib.suppress(MgmtFailed):  # d not caught up yet: tried again
                await current.mgmt.transfer(d.id)
        await asyncio.sleep(0.2)
    await write_everywhere(nodes, "while-c-was-down")
    return d, nodes.node("c", "ab")


def _caught_up(c: Node, d: Node) -> bool:
    core = c.raft.core
    return core is not None and core.leader == d.id and c.kv.get("while-c-was-down")[0] is not None


def test_a_member_that_missed_the_leaders_addition_catches_up_from_it(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with nodes_in(tmp_path, "abcd") as nodes:
            d, c = await _a_new_leader_while_c_is_down(nodes)
            await c.start()
            await until(lambda: _caught_up(c, d), timeout=20)
            assert d.raft.core is not None and d.raft.core.role is Role.LEADER  # no other way
            assert c.raft.core is not None and d.id in c.raft.core.membership.voters

    asyncio.run(scenario())


def test_it_dials_that_leader_when_the_leader_does_not_know_where_it_is(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with nodes_in(tmp_path, "abcd") as nodes:
            d, c = await _a_new_leader_while_c_is_down(nodes)
            # As if the leader had never learned c's address (the book lists the members a
            # leader has reached): only c can open their connection.
            d.pool.addresses.pop(c.id, None)
            await c.start()
            await until(lambda: _caught_up(c, d), timeout=20)
            assert d.raft.core is not None and d.raft.core.role is Role.LEADER

    asyncio.run(scenario())


def test_only_the_word_of_a_connected_member_admits_a_non_member(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with nodes_in(tmp_path, "abcxy") as nodes:
            a, b, c = (nodes.node(name, set("abc") - {name}) for name in "abc")
            await asyncio.gather(a.start(), b.start(), c.start())
            await write_everywhere(nodes, "k")
            x, y = nodes.id_of("x"), nodes.id_of("y")
            await until(lambda: c.pool.connection(a.id) is not None)
            assert not c._heeded(x)  # nobody names it
            names_x = Hello("127.0.0.1:1", True, None, leader="127.0.0.1:2", leader_id=x)
            c._said[y] = names_x  # a non-member's word
            assert not c._heeded(x)
            c._said[a.id] = names_x  # a member's word
            assert c._heeded(x)
            await nodes.stop(a)  # its connection closes: its word no longer counts
            await until(lambda: c.pool.connection(a.id) is None)
            assert not c._heeded(x)

    asyncio.run(scenario())
