"""Spans of the Raft runtime (node/raft_trace.py): three RaftNodes in one loop, each with its
own in-memory exporter, as three processes would have."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from test_runtime import IDS, Cluster, command

from quicraft.node import RaftNode
from quicraft.node.service import ClientService, RequestFailed
from quicraft.statemachine import KVStore
from quicraft.telemetry import NO_TELEMETRY, Telemetry, Tracing, node_tracing
from quicraft.transport import Role
from quicraft.wire.client import decode_request, encode_request


class Recorder(SpanProcessor):
    """Every span started and every span ended, to check that none is left open."""

    def __init__(self) -> None:
        self.started: set[int] = set()
        self.ended: set[int] = set()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.started.add(span.context.span_id)

    def on_end(self, span: ReadableSpan) -> None:
        assert span.context is not None
        self.ended.add(span.context.span_id)


class Traced:
    def __init__(self) -> None:
        self.exporters = {node: InMemorySpanExporter() for node in [*IDS, "client"]}
        self.recorder = Recorder()
        self.tracings = {}
        for node, exporter in self.exporters.items():
            tracing = node_tracing(NO_TELEMETRY, node, [exporter])
            assert tracing.provider is not None
            tracing.provider.add_span_processor(self.recorder)
            self.tracings[node] = tracing

    def telemetry(self, node: str) -> Telemetry:
        return Telemetry(self.tracings[node])

    def spans(self, node: str, name: str | None = None) -> list[ReadableSpan]:
        found = self.exporters[node].get_finished_spans()
        return [s for s in found if name is None or s.name == name]

    async def until(self, check: Callable[[], object], what: str) -> None:
        for _ in range(500):
            if check():
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"never happened: {what}")


def _id(span: ReadableSpan) -> int:
    context = span.get_span_context()  # typed, unlike span.context
    assert context is not None
    return context.span_id


def _parent(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def _run(scenario: Callable[[Cluster, Traced], object]) -> Traced:
    traced = Traced()
    cluster = Cluster(traced.telemetry)
    try:
        await asyncio.wait_for(scenario(cluster, traced), 30)  # type: ignore[arg-type]
    finally:
        await cluster.stop()
    return traced


async def _noop_everywhere(leader: RaftNode, traced: Traced) -> None:
    """Both followers hold the leader's no-op. A follower still without it gets the next entry
    only after its answer, which may come after that entry was applied and its trace closed;
    and the no-op would ride in the same appends as the entry."""
    core = leader.core
    assert core is not None
    last = core.log.last_index()
    await traced.until(
        lambda: all(pr.match >= last for pr in core.progress.values()), "the no-op everywhere"
    )


def _client(traced: Traced, name: str = "request") -> Tracing:
    return traced.tracings["client"]


def test_one_write_is_one_trace_across_the_leader_and_both_followers() -> None:
    leader_id: list[str] = []

    async def scenario(cluster: Cluster, traced: Traced) -> None:
        leader = await cluster.leader()
        leader_id.append(leader.id)
        await _noop_everywhere(leader, traced)
        request = _client(traced).span("request", kind=SpanKind.SERVER)
        await leader.start_proposal(command("set", key="k", value=b"v"), 5, request)
        request.end()
        followers = [n for n in IDS if n != leader.id]
        await traced.until(
            lambda: (
                all(traced.spans(f, "raft.persist") for f in followers)
                and len(traced.spans(leader.id, "raft.replicate")) == 2
            ),
            "both followers persisted and answered",
        )

    traced = asyncio.run(_run(scenario))
    leader = leader_id[0]
    followers = [n for n in IDS if n != leader]
    (request,) = traced.spans("client", "request")
    (commit,) = traced.spans(leader, "raft.commit")
    (apply,) = traced.spans(leader, "raft.apply")
    persists = traced.spans(leader, "raft.persist")
    replicates = traced.spans(leader, "raft.replicate")
    assert _parent(commit) == _parent(apply) == _id(request)
    assert [_parent(p) for p in persists] == [_id(commit)]
    assert {_parent(r) for r in replicates} == {_id(commit)}
    assert {r.attributes["raft.peer"] for r in replicates if r.attributes} == set(followers)
    assert commit.end_time is not None and apply.start_time is not None
    assert commit.end_time <= apply.start_time
    for follower in followers:
        (append,) = traced.spans(follower, "raft.append")
        (persist,) = traced.spans(follower, "raft.persist")
        assert _parent(append) in {_id(r) for r in replicates}
        assert _parent(persist) == _id(append)
        assert append.kind is SpanKind.SERVER
        assert append.resource.attributes["service.instance.id"] == follower
    every = [s for node in traced.exporters for s in traced.spans(node)]
    in_trace = [s for s in every if s.context and s.context.trace_id == request.context.trace_id]
    names = sorted(s.name for s in in_trace)
    assert names == sorted(
        ["request", "raft.commit", "raft.apply", "raft.persist", "raft.persist", "raft.persist"]
        + ["raft.replicate"] * 2 + ["raft.append"] * 2
    )  # fmt: skip


def test_a_batch_is_the_child_of_its_first_request_and_links_the_others() -> None:
    async def scenario(cluster: Cluster, traced: Traced) -> None:
        leader = await cluster.leader()
        await _noop_everywhere(leader, traced)
        first, second = (_client(traced).span(n) for n in ("first", "second"))
        # Proposed in the same loop turn: one Ready, one write, one append per follower.
        writes = [
            leader.start_proposal(command("incr", key="n", by=1), 5, request)
            for request in (first, second)
        ]
        await asyncio.gather(*writes)
        first.end()
        second.end()
        await traced.until(lambda: len(traced.spans(leader.id, "raft.replicate")) == 2, "acks")
        commits = {_parent(c): c for c in traced.spans(leader.id, "raft.commit")}
        (persist,) = traced.spans(leader.id, "raft.persist")
        assert _parent(persist) == _id(commits[_id(_finished(traced, "first"))])
        linked = [link.context.span_id for link in persist.links]
        assert linked == [_id(commits[_id(_finished(traced, "second"))])]
        for replicate in traced.spans(leader.id, "raft.replicate"):
            assert replicate.attributes and replicate.attributes["raft.entries"] == 2
            assert [link.context.span_id for link in replicate.links] == linked

    asyncio.run(_run(scenario))


def _finished(traced: Traced, name: str) -> ReadableSpan:
    (span,) = traced.spans("client", name)
    return span


def test_the_first_election_is_traced_on_the_candidate_and_its_voters() -> None:
    async def scenario(cluster: Cluster, traced: Traced) -> None:
        leader = await cluster.leader()
        await traced.until(lambda: traced.spans(leader.id, "raft.election"), "election span")
        elections = traced.spans(leader.id, "raft.election")
        won = [e for e in elections if e.attributes and e.attributes["raft.outcome"] == "won"]
        assert len(won) == 1
        phases = {s.name: s for s in traced.spans(leader.id) if _parent(s) == _id(won[0])}
        assert set(phases) == {"raft.prevote", "raft.vote"}
        answers = [
            a for n in IDS if n != leader.id for a in traced.spans(n, "raft.vote.answer")
            if _parent(a) == _id(phases["raft.vote"])
        ]  # fmt: skip
        # Under load a voter may have voted for another candidate of the same term first; the
        # vote was still won, so at least one answer to it granted it.
        granted = [a.attributes["raft.granted"] for a in answers if a.attributes]
        assert len(granted) == len(answers) and True in granted, granted

    asyncio.run(_run(scenario))


def test_no_span_is_left_open_when_a_follower_never_answers_and_the_nodes_stop() -> None:
    async def scenario(cluster: Cluster, traced: Traced) -> None:
        leader = await cluster.leader()
        cut = next(n for n in IDS if n != leader.id)
        cluster.cut.add(cut)
        request = _client(traced).span("request")
        await leader.start_proposal(command("set", key="k", value=b"v"), 5, request)
        request.end()

    traced = asyncio.run(_run(scenario))
    assert traced.recorder.started
    assert traced.recorder.started == traced.recorder.ended


class Replies:
    """What a client stream would send back, kept."""

    def __init__(self) -> None:
        self.failed: list[RequestFailed] = []

    def ok(self, request_id: int, result: dict[str, object]) -> None:
        raise AssertionError(f"a follower took the write: {result}")

    def fail(self, request_id: int, err: RequestFailed) -> None:
        self.failed.append(err)


def test_a_write_refused_by_a_follower_ends_its_propose_span_with_an_error() -> None:
    async def scenario(cluster: Cluster, traced: Traced) -> None:
        leader = await cluster.leader()
        follower = next(n for n in cluster.nodes.values() if n is not leader)
        await traced.until(lambda: follower.core is not None and follower.core.leader == leader.id,
                           "the follower knows its leader")  # fmt: skip
        service = ClientService(follower, KVStore(), lambda _: None, 5)
        service.tracing = traced.tracings[follower.id]
        replies = Replies()
        set_k = decode_request(encode_request("set", {"key": "k", "value": b"v"}, id=1))
        service.start(Role.CLIENT, set_k, replies)  # type: ignore[arg-type]
        assert [err.code for err in replies.failed] == ["not_leader"]
        (propose,) = traced.spans(follower.id, "raft.propose")
        (request,) = traced.spans(follower.id, "quicraft.kv/set")
        assert _parent(propose) == _id(request)
        for span in (propose, request):
            assert span.status.status_code is StatusCode.ERROR
            assert span.status.description and span.status.description.startswith("not_leader")

    asyncio.run(_run(scenario))


def test_an_uninstrumented_node_records_nothing() -> None:
    async def scenario(cluster: Cluster) -> None:
        leader = await cluster.leader()
        await leader.propose(command("set", key="k", value=b"v"), 5)
        assert all(n.trace is None for n in cluster.nodes.values())

    async def run() -> None:
        cluster = Cluster()
        try:
            await scenario(cluster)
        finally:
            await cluster.stop()

    asyncio.run(run())
