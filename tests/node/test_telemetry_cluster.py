"""Telemetry of real processes: three nodes and a CLI client export spans over OTLP/HTTP to a
receiver this test runs on loopback (decoded with opentelemetry-proto); every node serves
Prometheus metrics (parsed with prometheus-client) and logs JSON."""

from __future__ import annotations

import gzip
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cluster_harness import Cluster
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan
from prometheus_client.parser import text_string_to_metric_families

from quicraft.transport import init_cluster


@dataclass(frozen=True)
class Received:
    instance: str  # service.instance.id of the process that sent it
    service: str
    name: str
    kind: int
    trace_id: bytes
    span_id: bytes
    parent_id: bytes


class Receiver(ThreadingHTTPServer):
    """An OTLP/HTTP (protobuf) trace receiver keeping every span it is sent."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.spans: list[Received] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def take(self, body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource_spans in request.resource_spans:
            attrs = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    with self.lock:
                        self.spans.append(
                            Received(
                                attrs["service.instance.id"],
                                attrs["service.name"],
                                span.name,
                                span.kind,
                                span.trace_id,
                                span.span_id,
                                span.parent_span_id,
                            )
                        )

    def named(self, name: str) -> list[Received]:
        with self.lock:
            return [s for s in self.spans if s.name == name]


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        assert self.path == "/v1/traces", self.path
        self.server.take(body)
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _free_tcp_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _until(check: object, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.1)


def _scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def test_a_cli_write_is_one_trace_across_three_node_processes_with_metrics_and_json_logs(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "200")  # export within 0.2 s, not 5
    made = Cluster(tmp_path / "cluster")
    ports = [_free_tcp_port() for _ in made.nodes]
    telemetry = ["--otlp-endpoint", receiver.url, "--log-format", "json"]
    try:
        for number, port in enumerate(ports, start=1):
            extra = [*made.extra, *telemetry, "--metrics", f"127.0.0.1:{port}"]
            made.local.start(made.local.node(number), extra)
        leader = made.leader()
        made.wait_all_have("probe/leader")

        # A write whose trace the client does not sample: the nodes follow its decision.
        unsampled = ["--otlp-endpoint", receiver.url, "--trace-sample", "0"]
        assert made.cli("kv", "set", "unsampled", "yes", *unsampled).returncode == 0
        done = made.cli("kv", "set", "traced", "yes", "--otlp-endpoint", receiver.url, "--json")
        assert done.returncode == 0, done.stderr
        revision = json.loads(done.stdout)["revision"]

        # The CLI exports before it exits: its client span is there at once.
        (client,) = [
            s for s in receiver.named("quicraft.kv/set") if s.kind == ProtoSpan.SPAN_KIND_CLIENT
        ]
        assert client.instance.startswith("cli-") and client.service == "quicraft"

        def in_trace() -> list[Received]:
            with receiver.lock:
                return [s for s in receiver.spans if s.trace_id == client.trace_id]

        _until(
            lambda: (
                sum(s.name == "raft.persist" for s in in_trace()) == 3
                and sum(s.name == "raft.replicate" for s in in_trace()) == 2
            ),
            "the leader's and both followers' spans of the write arrive",
        )
        spans = in_trace()
        by_id = {s.span_id: s for s in spans}
        (server,) = [s for s in spans if s.name == "quicraft.kv/set"
                     and s.kind == ProtoSpan.SPAN_KIND_SERVER]  # fmt: skip
        assert server.parent_id == client.span_id
        # The leader ended the unsampled write's spans, had it made any, before this one's:
        # every other set it recorded is a root (the harness's untraced probes).
        others = [s for s in receiver.named("quicraft.kv/set") if s.kind == server.kind]
        assert all(s.parent_id == b"" for s in others if s != server)
        (commit,) = [s for s in spans if s.name == "raft.commit"]
        assert commit.parent_id == server.span_id and commit.instance == server.instance
        for name in ("raft.propose", "raft.apply", "raft.respond"):
            (span,) = [s for s in spans if s.name == name]
            assert span.parent_id == server.span_id, name
        replicates = [s for s in spans if s.name == "raft.replicate"]
        assert {r.parent_id for r in replicates} == {commit.span_id}
        appends = [s for s in spans if s.name == "raft.append"]
        assert len(appends) == 2
        assert {a.parent_id for a in appends} == {r.span_id for r in replicates}
        followers = {a.instance for a in appends}
        assert len(followers) == 2 and server.instance not in followers
        for persist in [s for s in spans if s.name == "raft.persist"]:
            parent = by_id[persist.parent_id]
            assert parent.name in ("raft.commit", "raft.append")
            assert persist.instance == parent.instance
        assert {s.service for s in spans} == {"quicraft"}

        scraped = {number: _scrape(port) for number, port in enumerate(ports, start=1)}
        for number, samples in scraped.items():
            assert samples["quicraft_has_leader"] == [({}, 1.0)], number
            assert samples["quicraft_term"][0][1] >= 1
            assert samples["quicraft_commit_index"][0][1] >= revision
            assert samples["quicraft_fsync_duration_seconds_count"][0][1] > 0
            assert samples["quicraft_leader_changes_total"][0][1] >= 1
            peers = {labels["peer"] for labels, _ in samples["quicraft_peer_rtt_seconds"]}
            assert len(peers) == 2, number
            assert samples["quicraft_event_subscribers"] == [({}, 0.0)]
        _until(
            lambda: _scrape(ports[leader - 1])["quicraft_applied_index"][0][1] >= revision,
            "the leader reports the write applied",
        )
        on_leader = scraped[leader]
        lags = on_leader["quicraft_follower_lag"]
        assert {labels["peer"] for labels, _ in lags} == followers
        _until(
            lambda: {v for _, v in _scrape(ports[leader - 1])["quicraft_follower_lag"]} == {0},
            "the leader reports both followers holding its whole log",
        )
        for number, samples in scraped.items():  # only the leader knows: nothing elsewhere
            assert number == leader or "quicraft_follower_lag" not in samples, number
        assert on_leader["quicraft_proposals_committed_total"][0][1] >= 2  # probe and ours
        assert on_leader["quicraft_append_entries_batch_size_count"][0][1] > 0
        assert on_leader["quicraft_apply_duration_seconds_count"][0][1] > 0

        # The events protocol: a subscriber's subscribe is one span on each side.
        watcher = subprocess.Popen(
            [sys.executable, "-m", "quicraft.cli", "events", "--kinds", "leader_changed",
             "--cluster", "t1", "--endpoints", made.local.endpoints(),
             "--certs", str(made.local.certs), "--otlp-endpoint", receiver.url],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:

            def subscribed() -> list[Received]:
                sent = [s for s in receiver.named("quicraft.events/subscribe")
                        if s.kind == ProtoSpan.SPAN_KIND_CLIENT]  # fmt: skip
                return [s for s in receiver.named("quicraft.events/subscribe")
                        if sent and s.parent_id == sent[0].span_id]  # fmt: skip

            _until(subscribed, "the node's span of the subscribe, child of the client's")
            (served,) = subscribed()
            assert served.kind == ProtoSpan.SPAN_KIND_SERVER and not served.instance.startswith(
                "cli-"
            )
        finally:
            watcher.send_signal(signal.SIGINT)
            assert watcher.wait(timeout=30) == 130, watcher.stderr and watcher.stderr.read()

        lines = [json.loads(line) for line in made.log(leader).splitlines() if line.startswith("{")]
        assert lines, "no JSON log line"
        served_at = f"serving metrics at http://127.0.0.1:{ports[leader - 1]}/metrics"
        assert any(line["message"] == served_at for line in lines)
        assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
        # Once the node exists (the command line logs a little before), every line names it.
        of_node = [line for line in lines if line["logger"].startswith("quicraft.node")]
        assert of_node and all("node" in line for line in of_node)
        assert any(line.get("term", 0) >= 1 for line in of_node)
    finally:
        made.stop()


class _Unavailable(BaseHTTPRequestHandler):
    """A collector that is down: every export gets 503, which OTLP retries with backoff."""

    server: ThreadingHTTPServer

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.server.attempts += 1  # type: ignore[attr-defined]
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_command_gives_up_on_a_collector_that_is_down_after_a_short_try(
    tmp_path: Path,
) -> None:
    """A command exports its spans before it exits; with the collector down, OpenTelemetry's
    default (10 s of retries: 4 attempts at 0, 1, 3 and 7 s) held `quicraft kv` for about 7 s
    after its work was done. It tries for 2 s: 2 attempts."""
    init_cluster(tmp_path / "certs", "t1")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Unavailable)
    server.attempts = 0  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "quicraft.cli", "kv", "get", "k", "--cluster", "t1",
             "--certs", str(tmp_path / "certs"), "--endpoints", "127.0.0.1:1", "--timeout", "1",
             "--otlp-endpoint", f"http://127.0.0.1:{server.server_address[1]}"],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 1, done.stderr
    assert server.attempts == 2, (server.attempts, done.stderr)  # type: ignore[attr-defined]
