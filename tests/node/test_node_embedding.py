"""A node embedded in a program: its settings are checked when made, a Node starts once, and a
start that fails or is cancelled frees the data directory, the port and its tasks."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path
from typing import Any

import pytest
from inprocess import Nodes, nodes_in, until

from quicraft.node import Node, NodeSettings, NodeStopped
from quicraft.storage import StorageError
from quicraft.transport import TransportError


def settings(**changes: Any) -> NodeSettings:
    given: dict[str, Any] = {
        "cluster": "c1",
        "name": "n1",
        "data_dir": "data",
        "certs_dir": "certs",
        "listen": ("127.0.0.1", 7400),
    }
    return NodeSettings(**(given | changes))


def test_paths_given_as_strings_become_paths() -> None:
    made = settings(peers=[("127.0.0.1", 7401)])
    assert made.data_dir == Path("data") and made.certs_dir == Path("certs")
    assert made.peers == (("127.0.0.1", 7401),)


@pytest.mark.parametrize(
    ("changes", "error", "says"),
    [
        ({"listen": "127.0.0.1:7400"}, TypeError, "NodeSettings.listen: '127.0.0.1:7400' is a"),
        ({"peers": ("127.0.0.1:7401",)}, TypeError, "NodeSettings.peers: '127.0.0.1:7401' is a"),
        ({"peers": "127.0.0.1:7401"}, TypeError, "NodeSettings.peers: expected a tuple"),
        ({"listen": ("127.0.0.1", "7400")}, TypeError, "expected a (host, port) tuple"),
        ({"listen": ("127.0.0.1", 70000)}, ValueError, "port 70000 is not in 1-65535"),
        ({"peers": (("127.0.0.1", 0),)}, ValueError, "NodeSettings.peers: port 0 is not in"),
        ({"data_dir": None}, TypeError, "NodeSettings.data_dir: expected a path"),
        ({"certs_dir": b"certs"}, TypeError, "NodeSettings.certs_dir: expected a path"),
        ({"expect": 0}, ValueError, "NodeSettings.expect: expected a whole number"),
        (
            {"max_connections_per_identity": -1},
            ValueError,
            "NodeSettings.max_connections_per_identity: expected a whole number >= 0",
        ),
    ],
)
def test_settings_a_program_got_wrong_are_refused_naming_the_field(
    changes: dict[str, Any], error: type[Exception], says: str
) -> None:
    with pytest.raises(error) as caught:
        settings(**changes)
    assert says in str(caught.value)


def test_an_address_string_suggests_parse_address() -> None:
    with pytest.raises(TypeError, match=r"parse_address\('127.0.0.1:7400'\)"):
        settings(listen="127.0.0.1:7400")


def test_a_failed_start_frees_the_data_directory_for_a_new_node(tmp_path: Path) -> None:
    """Before, the failed node kept its LevelDB open: the next Node on that directory got
    LockedError ("already open in this process") unless the program called stop() first."""

    async def scenario() -> None:
        async with nodes_in(tmp_path, ["n1"]) as nodes:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
                taken.bind(nodes.address("n1"))
                with pytest.raises(TransportError, match="cannot listen"):
                    await nodes.node("n1").start()
            assert asyncio.all_tasks() == {asyncio.current_task()}
            again = nodes.node("n1")
            await again.start()
            assert again.raft.core is not None

    asyncio.run(scenario())


async def _start_waiting_for_a_peer(nodes: Nodes) -> tuple[Node, asyncio.Task[None]]:
    """n1 starting with --peers n2, which never comes: start() waits (serving already)."""
    waiting = nodes.node("n1", peers=["n2"])
    starting = asyncio.create_task(waiting.start())
    while waiting.server is None:
        await asyncio.sleep(0.05)
    return waiting, starting


def test_a_cancelled_start_frees_the_data_directory_and_the_port(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with nodes_in(tmp_path, ["n1", "n2"]) as nodes:
            _, starting = await _start_waiting_for_a_peer(nodes)
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            again = nodes.node("n1")  # same directory, same port
            await again.start()
            assert again.raft.core is not None

    asyncio.run(scenario())


def test_a_node_starts_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with nodes_in(tmp_path, ["n1", "n2"]) as nodes:
            node = nodes.node("n1")
            await node.start()
            with pytest.raises(RuntimeError, match="a Node starts once"):
                await node.start()
            await node.stop()
            await node.stop()  # a second stop does nothing
            with pytest.raises(RuntimeError, match="a Node starts once"):
                await node.start()
            never_started = nodes.node("n2")
            await never_started.stop()
            with pytest.raises(RuntimeError, match="a Node starts once"):
                await never_started.start()

    asyncio.run(scenario())


def test_stop_while_starting_ends_start_and_frees_everything(tmp_path: Path) -> None:
    """Before, start() went on waiting for its founding peers after stop() had closed the
    storage: it never returned, and would have founded on a closed data directory."""

    async def scenario() -> None:
        async with nodes_in(tmp_path, ["n1", "n2"]) as nodes:
            waiting, starting = await _start_waiting_for_a_peer(nodes)
            await nodes.stop(waiting)
            with pytest.raises(NodeStopped, match="stop\\(\\) was called while the node was"):
                await asyncio.wait_for(starting, 5)
            assert asyncio.all_tasks() == {asyncio.current_task()}
            again = nodes.node("n1")  # same directory, same port
            await again.start()
            assert again.raft.core is not None

    asyncio.run(scenario())


def open_sockets() -> set[str]:
    """This process's sockets, as /proc names them."""
    names = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            names.add(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue  # closed meanwhile (the listing's own descriptor)
    return {name for name in names if name.startswith("socket:")}


def test_stopped_nodes_leave_no_socket_open(tmp_path: Path) -> None:
    """Before, the UDP sockets of the connections a node had dialed were freed only at the end
    of their closing period, after stop() had returned: a program that ended its event loop
    then leaked them (ResourceWarning: unclosed transport)."""

    async def scenario() -> None:
        before = open_sockets()
        async with nodes_in(tmp_path, ["n1", "n2"]) as nodes:
            founders = [nodes.node("n1", peers=["n2"]), nodes.node("n2", peers=["n1"])]
            await asyncio.gather(*(node.start() for node in founders))
            for node in founders:
                await nodes.stop(node)
            assert open_sockets() <= before

    asyncio.run(scenario())


def test_leader_says_which_node_leads_as_each_node_sees_it(tmp_path: Path) -> None:
    """A program embedding nodes can tell which one leads without reaching into the Raft
    core (examples/embedded_node.py waits for a leader with it)."""

    async def scenario() -> None:
        async with nodes_in(tmp_path, ["n1", "n2"]) as nodes:
            founders = [nodes.node("n1", peers=["n2"]), nodes.node("n2", peers=["n1"])]
            assert [node.leader for node in founders] == [None, None]  # not started
            await asyncio.gather(*(node.start() for node in founders))
            await until(lambda: any(node.leader == node.id for node in founders))
            leader = next(node for node in founders if node.leader == node.id)
            await until(lambda: all(node.leader == leader.id for node in founders))
            await nodes.stop(leader)
            assert leader.leader is None  # a stopped node knows no leader

    asyncio.run(scenario())


def test_a_metadata_write_that_fails_stops_the_node_with_the_error(tmp_path: Path) -> None:
    """A full disk met by the write of the address book in a hello's handler ended as a
    logged traceback there, and the node went on (found by the nemesis test in CI). Now it
    stops as a failing Raft write stops it, with that error."""

    async def scenario() -> None:
        async with nodes_in(tmp_path, ["n1", "n2"]) as nodes:
            founders = [nodes.node("n1", peers=["n2"]), nodes.node("n2", peers=["n1"])]
            await asyncio.gather(*(node.start() for node in founders))
            full = founders[0]

            def no_space(key: str, value: bytes) -> None:
                raise StorageError(f"{full.settings.data_dir}: write failed: No space left")

            full.storage.put_meta = no_space  # type: ignore[method-assign]
            full._save_addresses()  # as a hello's handler does
            with pytest.raises(StorageError, match="No space left"):
                await asyncio.wait_for(full.wait(), 10)

    asyncio.run(scenario())
