"""Spans of discovery and joining (node/lan.py): two in-process nodes on loopback, mDNS off.
n1 forms a cluster of its own; n2, given --join n1, verifies it, waits, and is added by n1.
Each node exports to its own in-memory exporter, as two processes would."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from quicraft.discovery import DiscoverySettings
from quicraft.node import PRESETS, Node, NodeSettings
from quicraft.transport import Role, init_cluster, issue


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _settings(tmp_path: Path, name: str, port: int, join: int | None) -> NodeSettings:
    hints = (("127.0.0.1", join),) if join is not None else ()
    return NodeSettings(
        cluster="c1",
        name=name,
        data_dir=tmp_path / name,
        certs_dir=tmp_path / "certs",
        listen=("127.0.0.1", port),
        timings=PRESETS["test"],
        discovery=DiscoverySettings(enabled=False, join=hints),
        lan=True,
        voters=2,
    )


def _one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, (name, [s.name for s in spans])
    return found[0]


def _children(spans: list[ReadableSpan], parent: ReadableSpan, name: str) -> list[ReadableSpan]:
    assert parent.context is not None
    return [s for s in spans if s.name == name and s.parent is not None
            and s.parent.span_id == parent.context.span_id]  # fmt: skip


def test_forming_joining_and_adding_are_traced_on_both_nodes(tmp_path: Path) -> None:
    init_cluster(tmp_path / "certs", "c1")
    for name in ("n1", "n2"):
        issue(tmp_path / "certs", "c1", name, Role.NODE)
    exporters = {"n1": InMemorySpanExporter(), "n2": InMemorySpanExporter()}
    port = _free_udp_port()
    n1 = Node(_settings(tmp_path, "n1", port, None), [exporters["n1"]])
    n2 = Node(_settings(tmp_path, "n2", _free_udp_port(), port), [exporters["n2"]])

    async def scenario() -> None:
        await n1.start()
        try:
            await n2.start()
            try:
                async with asyncio.timeout(30):
                    while not (n1.raft.core and n2.id in n1.raft.core.membership.voters):
                        await asyncio.sleep(0.05)
                    while not any(
                        s.name == "forming.join" for s in exporters["n2"].get_finished_spans()
                    ):
                        await asyncio.sleep(0.05)
            finally:
                await n2.stop()
        finally:
            await n1.stop()

    asyncio.run(scenario())
    leader = list(exporters["n1"].get_finished_spans())
    joiner = list(exporters["n2"].get_finished_spans())

    decide = _one(leader, "forming.decide")
    assert decide.attributes is not None and decide.attributes["forming.verdict"] == "found"
    found = _one(leader, "forming.found")
    assert found.status.status_code is not StatusCode.ERROR
    assert found.attributes is not None and len(str(found.attributes["quicraft.cluster_id"])) == 32
    assert _children(leader, found, "raft.commit"), "the id's entry is traced under it"
    add = _one(leader, "forming.add_learner")
    assert add.attributes is not None and add.attributes["quicraft.peer"] == n2.id
    assert _children(leader, add, "raft.commit"), "the membership change is traced under it"
    promote = _one(leader, "forming.promote")
    assert promote.attributes is not None and promote.attributes["quicraft.peer"] == n2.id

    verify = [s for s in joiner if s.name == "discovery.verify"]
    assert verify and all(s.attributes and s.attributes["discovery.source"] == "join"
                          for s in verify)  # fmt: skip
    first = verify[0]
    assert first.attributes is not None and first.attributes["server.port"] == port
    assert first.attributes["discovery.outcome"] in ("verified", "not_admitted")
    decided = _one(joiner, "forming.decide")
    assert decided.attributes is not None and decided.attributes["forming.verdict"] == "join"
    join = _one(joiner, "forming.join")
    assert join.status.status_code is not StatusCode.ERROR  # ended by being added, not stopped
    assert join.end_time is not None and add.start_time is not None
    assert join.end_time >= add.start_time  # it ends once the leader has added it
