"""quicraft/telemetry on its own: URLs, trace context, the JSON log format, bad flags."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from quicraft.telemetry import (
    NO_TELEMETRY,
    NO_TRACING,
    JsonFormatter,
    TelemetryError,
    TelemetrySettings,
    check,
    node_tracing,
    remote_parent,
    set_log_context,
    traceparent,
)
from quicraft.telemetry.logs import RepeatFilter
from quicraft.telemetry.metrics import SNAPSHOT_KINDS, MetricsServer
from quicraft.telemetry.tracing import STOP_EXPORT_S, _exporter_timeout, _unsampled, traces_url


def test_a_base_url_gets_the_otlp_traces_path_and_a_full_one_is_kept() -> None:
    assert traces_url("http://localhost:4318") == "http://localhost:4318/v1/traces"
    assert traces_url("https://c:4318/") == "https://c:4318/v1/traces"
    assert traces_url("http://c:4318/custom/traces") == "http://c:4318/custom/traces"


@pytest.mark.parametrize("url", ["localhost:4318", "ftp://c/x", "http://", "4318", "http://[::1"])
def test_a_bad_endpoint_is_refused_before_anything_starts(url: str) -> None:
    with pytest.raises(TelemetryError, match="bad OTLP endpoint"):
        check(TelemetrySettings(otlp_endpoint=url))


@pytest.mark.parametrize("url", ["http://c:99999", "http://c:abc", "http://c:0", "http://[::1]:x"])
def test_an_endpoint_with_a_bad_port_is_refused(url: str) -> None:
    """Found by an audit: the node started and failed every export, one error a batch."""
    with pytest.raises(TelemetryError, match="the port must be a number from 1 to 65535"):
        check(TelemetrySettings(otlp_endpoint=url))


@pytest.mark.parametrize(
    "url",
    ["http://collector..local:4318", "http://%zz:4318", f"http://{'a' * 64}.b:4318", "http://.c"],
)
def test_an_endpoint_with_a_bad_host_is_refused(url: str) -> None:
    """Found by an audit: the node started and failed every export ("Failed to parse: ...,
    label empty or too long"), one error a batch."""
    with pytest.raises(TelemetryError, match="is neither a host name nor an IP address"):
        check(TelemetrySettings(otlp_endpoint=url))


@pytest.mark.parametrize(
    "url", ["http://a_b:4318", "http://bücher.example:4318", "http://[::1]:4318", "http://c.:1"]
)
def test_an_endpoint_with_a_good_host_is_taken(url: str) -> None:
    check(TelemetrySettings(otlp_endpoint=url))


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        # Found by an audit: the exporter took these and failed every export.
        ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "-5", "bad OTEL_EXPORTER_OTLP_TRACES_TIMEOUT '-5'"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "0", "bad OTEL_EXPORTER_OTLP_TIMEOUT '0'"),
        # ... or ignored this one with a warning (and a command waited 10 s, not 2).
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "abc", "expected seconds, a number above 0"),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem", "no file '/nonexistent/ca.pem'"),
        # Found by an audit: a ValueError from the SDK's batch processor, with a traceback.
        ("OTEL_BSP_MAX_QUEUE_SIZE", "0", "OTEL_BSP_MAX_QUEUE_SIZE=0"),
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "5000", "less than or equal to max_queue_size"),
    ],
)
def test_otel_variables_that_would_fail_every_export_are_refused(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(TelemetryError, match=re.escape(message)):
        check(TelemetrySettings(otlp_endpoint="https://collector:4318"))


@pytest.mark.parametrize("flags", [["--trace-console"], ["--otlp-endpoint", "http://c:4318"]])
def test_tracing_with_the_sdk_disabled_is_misuse(flags: list[str], tmp_path: Path) -> None:
    """Found by an audit: the node ran and exported nothing, without a word."""
    argv = [*_node_on_loopback(tmp_path), *flags]
    _assert_misuse(argv, "OTEL_SDK_DISABLED=true turns off", {"OTEL_SDK_DISABLED": "true"})


def test_a_good_export_timeout_in_the_environment_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "7.5")
    check(TelemetrySettings(otlp_endpoint="http://collector:4318"))
    assert _exporter_timeout() == 7.5


def test_trace_context_round_trips_and_bad_context_starts_a_new_trace() -> None:
    tracing = node_tracing(NO_TELEMETRY, "n1", [InMemorySpanExporter()])
    span = tracing.span("parent")
    tp = traceparent(span)
    assert tp is not None and tp.startswith("00-")
    child = tracing.span("child", remote_parent(tp))
    assert child.get_span_context().trace_id == span.get_span_context().trace_id
    assert remote_parent("00-zz-zz-01") is None
    assert remote_parent(None) is None
    assert traceparent(NO_TRACING.span("off")) is None  # tracing off sends no context


@pytest.mark.parametrize("sample", [1.0, 0.0])
def test_trace_context_is_written_as_the_w3c_propagator_writes_it(sample: float) -> None:
    tracing = node_tracing(TelemetrySettings(trace_sample=sample), "n1", [InMemorySpanExporter()])
    span = tracing.span("parent")
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier, trace.set_span_in_context(span))
    assert traceparent(span) == carrier["traceparent"]
    assert span.is_recording() is (sample == 1.0)
    child = tracing.span("child", remote_parent(traceparent(span)))
    assert child.is_recording() is span.is_recording()  # the receiver follows the decision
    assert not NO_TRACING.on


def test_json_logs_carry_the_node_the_term_and_the_current_span() -> None:
    tracing = node_tracing(NO_TELEMETRY, "n1", [InMemorySpanExporter()])
    span = tracing.span("work")
    record = logging.LogRecord("quicraft.node", logging.INFO, __file__, 1, "hi %s", ("x",), None)
    record.span = span
    set_log_context(lambda: {"node": "n1", "term": 7})
    try:
        line = json.loads(JsonFormatter().format(record))
    finally:
        set_log_context(None)
    ids = span.get_span_context()
    assert line["message"] == "hi x" and line["node"] == "n1" and line["term"] == 7
    assert line["trace_id"] == f"{ids.trace_id:032x}"
    assert line["span_id"] == f"{ids.span_id:016x}"
    assert line["time"].endswith("Z") and line["level"] == "info"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--otlp-endpoint", "nowhere"], "bad OTLP endpoint"),
        (["--otlp-endpoint", "http://[::1"], "bad OTLP endpoint"),
        (["--otlp-endpoint", "http://c:99999"], "the port must be a number from 1 to 65535"),
        (["--trace-sample", "2"], "expected a number from 0 to 1"),
        (["--metrics", "nohost"], "--metrics"),
        (["--log-format", "xml"], "--log-format"),
    ],
)
def test_bad_telemetry_flags_are_misuse_with_one_line(flags: list[str], message: str) -> None:
    _assert_misuse(["node", "--cluster", "c", *flags], message)


@pytest.mark.parametrize(
    "command",
    [
        ["kv", "get", "k", "--cluster", "c", "--endpoints", "127.0.0.1:9"],
        ["mgmt", "status", "--cluster", "c", "--endpoints", "127.0.0.1:9"],
        ["bench", "--endpoints", "127.0.0.1:9", "--cluster", "c"],
    ],
)
def test_a_client_command_with_a_bad_collector_url_is_misuse(command: list[str]) -> None:
    _assert_misuse([*command, "--otlp-endpoint", "ftp://collector"], "bad OTLP endpoint")


@pytest.mark.parametrize("command", ["node", "kv"])
def test_bad_batch_variables_are_misuse_not_a_traceback(command: str, tmp_path: Path) -> None:
    client = ["kv", "get", "k", "--cluster", "c", "--endpoints", "127.0.0.1:9"]
    argv = [*(_node_on_loopback(tmp_path) if command == "node" else client)]
    argv += ["--otlp-endpoint", "http://127.0.0.1:9"]
    _assert_misuse(argv, "OTEL_BSP_MAX_QUEUE_SIZE=0", {"OTEL_BSP_MAX_QUEUE_SIZE": "0"})


def _node_on_loopback(tmp_path: Path) -> list[str]:
    """A node that, should the flags be taken, fails for want of certificates (exit 1) rather
    than serving on every interface."""
    return ["node", "--cluster", "c", "--listen", "127.0.0.1:9", "--no-mdns",
            "--data", str(tmp_path / "data"), "--certs", str(tmp_path / "certs")]  # fmt: skip


def _assert_misuse(argv: list[str], message: str, env: dict[str, str] | None = None) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "quicraft.cli", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_a_request_span_exists_only_when_the_request_is_recorded() -> None:
    tracing = node_tracing(NO_TELEMETRY, "n1", [InMemorySpanExporter()])
    unsampled = f"00-{'ab' * 16}-{'cd' * 8}-00"
    random_id = f"00-{'ab' * 16}-{'cd' * 8}-02"  # W3C level 2: a random trace id, not sampled
    sampled = f"00-{'ab' * 16}-{'cd' * 8}-03"
    assert tracing.server_span("quicraft.kv", "set", unsampled) is None
    assert tracing.server_span("quicraft.kv", "set", random_id) is None
    assert _unsampled(unsampled) and _unsampled(random_id)  # no span made to find out
    assert not _unsampled(sampled) and not _unsampled("00-not-a-context-00")
    assert NO_TRACING.server_span("quicraft.kv", "set", sampled) is None
    span = tracing.server_span("quicraft.kv", "set", sampled)
    assert span is not None and span.is_recording()
    assert span.get_span_context().trace_id == int("ab" * 16, 16)
    root = tracing.server_span("quicraft.kv", "set", "00-not-a-context-00")  # a new trace
    assert root is not None and root.get_span_context().trace_id != int("ab" * 16, 16)


def test_a_repeated_line_is_let_through_once_a_window_with_its_count() -> None:
    now = [0.0]
    repeats = RepeatFilter(window_s=60, clock=lambda: now[0])

    def shown(text: str, *args: object, level: int = logging.WARNING) -> str | None:
        record = logging.LogRecord("quicraft.transport", level, __file__, 1, text, args, None)
        return record.getMessage() if repeats.filter(record) else None

    refused = "refused a connection from %s on quicraft-raft/1: not_admitted"
    assert shown(refused, "127.0.0.1:41000") == (
        "refused a connection from 127.0.0.1:41000 on quicraft-raft/1: not_admitted"
    )
    for second, port in enumerate(range(41001, 41031), start=1):  # a new port each dial
        now[0] = second
        assert shown(refused, f"127.0.0.1:{port}") is None
    assert shown(refused, "[::1]:41040") is not None  # another host is another line
    assert shown(refused, "127.0.0.2:41000") is not None
    assert shown("lost connection to n2", level=logging.INFO) is not None  # others go on
    assert shown("x", level=logging.DEBUG) == shown("x", level=logging.DEBUG) == "x"
    now[0] = 61.0
    assert shown(refused, "127.0.0.1:42000") == (
        "refused a connection from 127.0.0.1:42000 on quicraft-raft/1: not_admitted "
        "(and 30 more like it in the last 61 s)"
    )
    assert shown(refused, "127.0.0.1:42001") is None  # a new window


def test_the_exporters_retries_while_a_collector_is_down_are_one_line() -> None:
    """Found by an audit: each retry said a new delay, so none was held back."""
    repeats = RepeatFilter(window_s=60, clock=lambda: 0.0)
    retry = "Transient error %s encountered while exporting spans batch, retrying in %.2fs."
    lines = [
        logging.LogRecord(_EXPORTER, logging.WARNING, __file__, 1, retry, ("refused", delay), None)
        for delay in (0.95, 1.87, 3.61)
    ]
    assert [repeats.filter(r) for r in lines] == [True, False, False]
    ours = [
        logging.LogRecord("quicraft.node", logging.INFO, __file__, 1, "term %d: leader", (t,), None)
        for t in (4, 5)
    ]
    assert all(repeats.filter(r) for r in ours)  # quicraft's own numbers still tell lines apart


_EXPORTER = "opentelemetry.exporter.otlp.proto.http.trace_exporter"


def test_console_spans_are_one_line_each(capsys: pytest.CaptureFixture[str]) -> None:
    """Found by an audit: each span took 30 lines, among the JSON log lines on stderr."""
    tracing = node_tracing(TelemetrySettings(trace_console=True), "n1")
    tracing.span("one").end()
    tracing.span("two").end()
    tracing.shutdown()
    lines = capsys.readouterr().err.splitlines()
    assert [json.loads(line)["name"] for line in lines] == ["one", "two"]


def test_counters_with_known_labels_are_served_from_zero() -> None:
    """Found by an audit: quicraft_proposals_failed_total and quicraft_snapshots_total were
    missing until their first count, which increase() then does not see."""
    server = MetricsServer("127.0.0.1", 0, "n1")
    try:
        host, port = server.address
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as answer:
            text = answer.read().decode()
    finally:
        server.close()
    for series in [
        "quicraft_leader_changes_total",
        "quicraft_proposals_committed_total",
        "quicraft_proposals_failed_total",
        *(f'quicraft_snapshots_total{{kind="{k}"}}' for k in SNAPSHOT_KINDS),
        'quicraft_snapshot_bytes_total{kind="sent"}',
        'quicraft_snapshot_bytes_total{kind="received"}',
    ]:
        assert f"\n{series} 0.0\n" in text, series


def test_metrics_on_a_taken_port_name_the_address() -> None:
    """Found by an audit: the node said only "[Errno 98] Address already in use"."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError) as caught:
            MetricsServer("127.0.0.1", port, "n1")
    assert str(caught.value) == f"cannot serve metrics on 127.0.0.1:{port}: Address already in use"


class _Down(BaseHTTPRequestHandler):
    """A collector that is down: every export gets 503, which OTLP retries with backoff."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.mark.parametrize("collector", ["refusing", "silent"])
def test_a_stopping_node_gives_its_last_spans_a_bounded_time(
    collector: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by an audit: with the collector down, a node took 14 s to stop after SIGINT
    (the export in progress retried for 10 s, then the last batch again); with a collector
    that accepts and never answers, 10 s (the export's own timeout)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Down)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    silent = socket.socket()  # a backlog that takes connections, and nothing reading them
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    try:
        port = (server.server_address if collector == "refusing" else silent.getsockname())[1]
        settings = TelemetrySettings(otlp_endpoint=f"http://127.0.0.1:{port}")  # a node's
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")  # milliseconds
        tracing = node_tracing(settings, "n1")
        tracing.span("write").end()
        time.sleep(0.5)  # its export is in flight (or between retries) when the node stops
        tracing.span("last").end()
        started = time.monotonic()
        tracing.shutdown()
        took = time.monotonic() - started
    finally:
        server.shutdown()
        server.server_close()
        silent.close()
    assert took < STOP_EXPORT_S + 0.5
    assert "gave up exporting the last spans after 2 s" in caplog.text
