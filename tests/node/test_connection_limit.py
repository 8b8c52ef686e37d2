"""A node bounds the connections one client identity holds open (--max-connections-per-identity):
the one too many is refused, counted in the refusal metric, and its client, the Python one or
`quicraft kv`, says so in one line; other identities are unaffected, and a closed connection
frees its slot."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from cluster_harness import quicraft
from inprocess import CLUSTER, nodes_in, until

from quicraft.cli.bench import _node_connection_flags
from quicraft.cli.command import build_parser
from quicraft.cli.node import settings_from
from quicraft.client import ClientError, connect
from quicraft.telemetry.logs import RepeatFilter
from quicraft.transport import Role, issue, load_identity


def test_an_identity_at_its_limit_is_refused_in_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        async with nodes_in(tmp_path, ["n1"]) as nodes:
            node = nodes.node("n1", max_connections_per_identity=1)
            await node.start()
            issue(nodes.certs, CLUSTER, "app", Role.CLIENT)
            app = load_identity(nodes.certs, CLUSTER, "app")
            where = f"127.0.0.1:{nodes.ports['n1']}"
            async with connect(where, CLUSTER, nodes.certs, "app") as holder:
                await holder.kv.set("k", b"v")  # connected: its one slot is taken
                assert node.server is not None
                assert node.server.connections_of(app.node_id) == 1

                async with connect(where, CLUSTER, nodes.certs, "app", timeout=5) as second:
                    with pytest.raises(ClientError) as caught:
                        await second.kv.get("k")
                assert caught.value.code == "forbidden"
                assert "too_many_connections" in str(caught.value)
                assert (
                    "connections open to this node from 127.0.0.1 as one identity may have "
                    "from one address (1)" in str(caught.value)
                )

                argv = ["kv", "get", "k", "--cluster", CLUSTER, "--endpoints", where]
                argv += ["--certs", str(nodes.certs), "--name", "app"]
                done = await asyncio.to_thread(quicraft, *argv)
                assert done.returncode == 1
                assert done.stdout == ""
                assert done.stderr.count("\n") == 1, done.stderr
                assert "too_many_connections" in done.stderr
                assert "Traceback" not in done.stderr

                async with connect(where, CLUSTER, nodes.certs, "admin") as other:
                    assert await other.kv.get("k") == b"v"
                assert (2, {"reason": "too_many_connections"}) in node._refusals()
                # Logged as a warning each, alike but for the port: a node's log writes it
                # once a minute, however often the identity tries.
                refusals = [r for r in caplog.records if "too_many_connections" in r.getMessage()]
                assert [r.levelno for r in refusals] == [logging.WARNING] * 2
                repeats = RepeatFilter()
                assert [repeats.filter(r) for r in refusals] == [True, False]
            # The holder closed: its slot is free again.
            await until(
                lambda: node.server is not None and not node.server.connections_of(app.node_id)
            )
            async with connect(where, CLUSTER, nodes.certs, "app") as again:
                assert await again.kv.get("k") == b"v"

    asyncio.run(scenario())


def test_a_subscription_at_the_limit_waits_for_a_free_slot(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A refusal for too many connections is not final, as one from another cluster is: the
    slot frees once another connection of the identity closes. A subscription refused so
    ended with `forbidden`; it now waits for the slot, with one warning, and follows the
    events once it has one."""

    async def scenario() -> None:
        async with nodes_in(tmp_path, ["n1"]) as nodes:
            node = nodes.node("n1", max_connections_per_identity=1)
            await node.start()
            issue(nodes.certs, CLUSTER, "app", Role.CLIENT)
            where = f"127.0.0.1:{nodes.ports['n1']}"

            def refused() -> float:
                counts = {labels["reason"]: n for n, labels in node._refusals()}
                return counts.get("too_many_connections", 0)

            async with connect(where, CLUSTER, nodes.certs, "app") as holder:
                await holder.kv.set("k", b"1")  # its one slot is taken
                async with connect(where, CLUSTER, nodes.certs, "app") as watcher:
                    events = watcher.events(kinds=["kv"])
                    first = asyncio.ensure_future(anext(events))
                    await until(lambda: refused() >= 2)  # refused, and tried again
                    assert not first.done()
                    await holder.close()  # frees the slot
                    await until(lambda: node.event_service.subscribers == 1)
                    async with connect(where, CLUSTER, nodes.certs, "admin") as admin:
                        revision = await admin.kv.set("k", b"2")
                    event = await asyncio.wait_for(first, 10)
                    assert (event.kind, event.data["key"], event.data["revision"]) == (
                        "kv",
                        "k",
                        revision,
                    )
                    await events.aclose()
            waits = [r for r in caplog.records if "waiting for a free slot" in r.getMessage()]
            assert [r.levelno for r in waits] == [logging.WARNING]
            assert "too_many_connections" in waits[0].getMessage()

    asyncio.run(scenario())


def test_the_limit_is_a_node_flag_with_a_default() -> None:
    parser = build_parser()
    common = ["node", "--cluster", "c1", "--name", "n1", "--no-mdns"]
    assert settings_from(parser.parse_args(common)).max_connections_per_identity == 100
    flag = [*common, "--max-connections-per-identity", "0"]
    assert settings_from(parser.parse_args(flag)).max_connections_per_identity == 0
    for bad in ("-1", "many"):
        with pytest.raises(SystemExit) as exited:
            parser.parse_args([*common, "--max-connections-per-identity", bad])
        assert exited.value.code == 2


def test_a_local_bench_cluster_takes_every_connection_of_the_bench() -> None:
    parser = build_parser()
    bench = ["bench", "--local", "1"]
    assert _node_connection_flags(parser.parse_args(bench)) == []
    flags = _node_connection_flags(parser.parse_args([*bench, "--connections", "150"]))
    node = parser.parse_args(["node", "--cluster", "c1", *flags])
    assert node.max_connections_per_identity == 150
