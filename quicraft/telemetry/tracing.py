"""Tracing: a process's tracer, and trace context in and out of the CBOR envelopes.

Rules of this file:
- A node's tracer is its own, never the global one: several nodes may share a process (tests,
  embedded use) and each names itself in its resource (service.instance.id = its node id).
  Clients use the global provider, as OpenTelemetry asks of libraries.
- `Tracing.on` is False when no span would be recorded anywhere. Hot paths test it first, so
  with tracing off a write costs an attribute read per step and builds no span at all.
- Trace context crosses processes as an envelope's "tp" (a W3C traceparent); the propagator
  parses it, so a malformed one only starts a new trace.
- Sampling is decided once, where a trace starts (`trace_sample`), and followed everywhere
  else (parent-based): one write is recorded by every process or by none.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import re
import sys
import threading
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit, urlunsplit

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Link, Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes

from .settings import TelemetrySettings

SERVICE_NAME = "quicraft"
TRACES_PATH = "/v1/traces"

#: A stopping process gives its last spans this long to reach the collector (unless
#: OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT says otherwise), then drops them: with the collector
#: down, a node would otherwise take two export timeouts (20 s) to stop.
STOP_EXPORT_S = 2.0

log = logging.getLogger(__name__)

_propagator = TraceContextTextMapPropagator()

#: Where a span hangs: a span of this process, a context (a remote parent), or nothing (a root).
Parent = Span | Context | None


class TelemetryError(Exception):
    """Telemetry settings that cannot work (a bad URL, a missing optional package)."""


class Tracing:
    def __init__(
        self,
        tracer: trace.Tracer | None = None,
        provider: TracerProvider | None = None,
        exporters: Sequence[StoppableExporter] = (),
        stop_export_s: float = STOP_EXPORT_S,
    ):
        self.on = tracer is not None
        self.tracer: trace.Tracer = tracer or trace.NoOpTracer()
        self.provider = provider
        self._exporters = exporters  # those to a collector, which shutdown() may give up on
        self._stop_export_s = stop_export_s

    def span(
        self,
        name: str,
        parent: Parent = None,
        *,
        kind: SpanKind = SpanKind.INTERNAL,
        links: Iterable[Span] = (),
        attributes: Attributes = None,
        start_time: int | None = None,
    ) -> Span:
        """Start a span under `parent`, linked to `links` (the other work a batch serves)."""
        return self.tracer.start_span(
            name,
            context=_context(parent),
            kind=kind,
            links=[Link(s.get_span_context()) for s in links],
            attributes=attributes,
            start_time=start_time,
        )

    def rpc(self, service: str, method: str, kind: SpanKind, parent: Parent = None) -> Span:
        """The span of one request, on either end (RPC semantic conventions)."""
        return self.span(
            f"{service}/{method}",
            parent,
            kind=kind,
            attributes={"rpc.system": "quicraft", "rpc.service": service, "rpc.method": method},
        )

    def server_span(self, service: str, method: str, traceparent: str | None) -> Span | None:
        """The span of a request received with the caller's trace context `traceparent`, or
        None when the request is not recorded: tracing is off, or its caller did not sample
        its trace. Then the request is served as if tracing were off, at no cost."""
        if not self.on or _unsampled(traceparent):
            return None
        span = self.rpc(service, method, SpanKind.SERVER, remote_parent(traceparent))
        return span if span.is_recording() else None

    def shutdown(self) -> None:
        """Export what is still buffered, then stop, waiting for the collector `stop_export_s`
        at most: then the exports are given up (and said so, once). The flush goes on in a
        thread of its own because an export in flight to a collector that does not answer
        ends only with its own timeout, which nothing can cut short."""
        if self.provider is None:
            return
        flushing = threading.Thread(target=self.provider.shutdown, name="span-flush", daemon=True)
        flushing.start()
        flushing.join(self._stop_export_s)
        if not flushing.is_alive():
            return
        for exporter in self._exporters:
            exporter.stop()  # no more retries: the thread ends with the export in flight
        log.warning(
            "gave up exporting the last spans after %g s: is the collector up?",
            self._stop_export_s,
        )


NO_TRACING = Tracing()


def remote_parent(traceparent: str | None) -> Context | None:
    """The context a received "tp" names, or None when there is none (or it is malformed)."""
    if traceparent is None:
        return None
    context = _propagator.extract({"traceparent": traceparent})
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def traceparent(span: Span | None) -> str | None:
    """The "tp" to send so that the receiver's spans join `span`'s trace."""
    if span is None:
        return None
    ids = span.get_span_context()
    if not ids.is_valid:
        return None
    # W3C trace context, version 00 (what the propagator's inject writes, without its detours).
    return f"00-{ids.trace_id:032x}-{ids.span_id:016x}-{ids.trace_flags:02x}"


def node_tracing(
    settings: TelemetrySettings, instance_id: str, exporters: Sequence[SpanExporter] = ()
) -> Tracing:
    """The tracing of one node (or one client process) named `instance_id`; `exporters` are
    extra destinations, such as a test's in-memory exporter."""
    if not settings.tracing and not exporters:
        return NO_TRACING
    if settings.tracing:
        _check_sdk_enabled()
    provider = TracerProvider(
        resource=resource(instance_id),
        sampler=ParentBased(TraceIdRatioBased(settings.trace_sample)),
    )
    collectors: list[StoppableExporter] = []
    if settings.otlp_endpoint is not None:
        collector = StoppableExporter(
            otlp_exporter(settings.otlp_endpoint, settings.export_timeout_s)
        )
        provider.add_span_processor(batch_processor(collector))
        collectors.append(collector)
    if settings.trace_console:
        # One span a line, like the JSON log lines it is interleaved with on stderr.
        console = ConsoleSpanExporter(out=sys.stderr, formatter=_one_line)
        provider.add_span_processor(SimpleSpanProcessor(console))
    for extra in exporters:
        provider.add_span_processor(SimpleSpanProcessor(extra))
    stop_export_s = _exporter_timeout() or settings.export_timeout_s or STOP_EXPORT_S
    return Tracing(provider.get_tracer("quicraft"), provider, collectors, stop_export_s)


def global_tracing(scope: str) -> Tracing:
    """Tracing through the global provider, if the application has set one up (OpenTelemetry's
    default is a proxy that records nothing: then tracing stays off, at no cost)."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return NO_TRACING
    return Tracing(provider.get_tracer(scope))


def resource(instance_id: str) -> Resource:
    """Semantic conventions: every quicraft process is service `quicraft`, told apart by id."""
    return Resource.create({"service.name": SERVICE_NAME, "service.instance.id": instance_id})


def check(settings: TelemetrySettings) -> None:
    """Raise TelemetryError now, rather than when the node starts, if `settings` cannot work.
    What the exporter would only find out at each export (a bad port, a timeout of 0) is
    refused here too: a node that starts and never exports a span is worse than one that
    does not start."""
    if settings.tracing:
        _check_sdk_enabled()
    if settings.otlp_endpoint is not None:
        batch_processor(otlp_exporter(settings.otlp_endpoint)).shutdown()  # type: ignore[no-untyped-call]


def _check_sdk_enabled() -> None:
    """With OTEL_SDK_DISABLED=true the SDK records nothing: the flags' tracing would be a node
    that runs and never exports a span."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        raise TelemetryError("OTEL_SDK_DISABLED=true turns off the tracing the flags ask for")


def otlp_exporter(endpoint: str, timeout_s: float | None = None) -> SpanExporter:
    """An OTLP/HTTP exporter to `endpoint`; `timeout_s` unless the environment sets one."""
    url = traces_url(endpoint)
    if _exporter_timeout() is not None:
        timeout_s = None
    if url.startswith("https:"):
        _check_tls_files()
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        raise TelemetryError(
            "--otlp-endpoint needs the OTLP exporter: pip install 'quicraft[otlp]'"
        ) from None
    return OTLPSpanExporter(endpoint=url, timeout=timeout_s)


def batch_processor(exporter: SpanExporter) -> BatchSpanProcessor:
    """The processor that batches spans for `exporter`, as the OTEL_BSP_* variables say."""
    try:
        return BatchSpanProcessor(exporter)
    except ValueError as err:  # the SDK checks the sizes and delay it read
        exporter.shutdown()
        given = [f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("OTEL_BSP_")]
        raise TelemetryError(f"bad span batch settings ({', '.join(given)}): {err}") from None


class StoppableExporter(SpanExporter):
    """An exporter that a stopping process can stop mid-export: the exporter's retries end,
    and what is left is dropped (the SDK would wait for them, and the last batch after)."""

    def __init__(self, exporter: SpanExporter):
        self._exporter = exporter
        self._stopped = False
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._stopped:
            return SpanExportResult.FAILURE
        return self._exporter.export(spans)

    def stop(self) -> None:
        with self._lock:  # the timer's thread and the processor's may both ask
            stopping, self._stopped = not self._stopped, True
        if stopping:
            self._exporter.shutdown()

    def shutdown(self) -> None:
        self.stop()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._exporter.force_flush(timeout_millis)


def _exporter_variable(setting: str) -> tuple[str, str] | None:
    """The variable the exporter reads `setting` from, and its value: the traces one, else
    the general one (OTEL_EXPORTER_OTLP_TRACES_TIMEOUT, else OTEL_EXPORTER_OTLP_TIMEOUT)."""
    for variable in (f"OTEL_EXPORTER_OTLP_TRACES_{setting}", f"OTEL_EXPORTER_OTLP_{setting}"):
        value = os.environ.get(variable)
        if value:
            return variable, value
    return None


def _exporter_timeout() -> float | None:
    """The export timeout the environment sets, in seconds (the SDK's unit), if any. The
    exporter would take a negative one and fail every export, or ignore a word."""
    given = _exporter_variable("TIMEOUT")
    if given is None:
        return None
    variable, value = given
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise TelemetryError(f"bad {variable} {value!r}: expected seconds, a number above 0")
    return seconds


def _check_tls_files() -> None:
    """The CA and client certificate files the environment names exist (an HTTPS export
    to a collector would otherwise fail every time, one log line a batch)."""
    for setting in ("CERTIFICATE", "CLIENT_KEY", "CLIENT_CERTIFICATE"):
        given = _exporter_variable(setting)
        if given is not None and not os.path.isfile(given[1]):
            raise TelemetryError(f"bad {given[0]}: no file {given[1]!r}")


def traces_url(endpoint: str) -> str:
    """The collector's traces URL: a base URL gets OTLP's /v1/traces, a full one is kept."""
    try:
        parts = urlsplit(endpoint)
    except ValueError:  # an unclosed [IPv6 address
        parts = urlsplit("")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TelemetryError(
            f"bad OTLP endpoint {endpoint!r}: expected an http(s) URL (http://localhost:4318)"
        )
    try:
        port = parts.port
    except ValueError:  # not a number, or above 65535
        port = 0
    if port == 0:
        raise TelemetryError(
            f"bad OTLP endpoint {endpoint!r}: the port must be a number from 1 to 65535"
        )
    if not _host_name_or_address(parts.hostname):
        raise TelemetryError(
            f"bad OTLP endpoint {endpoint!r}: {parts.hostname!r} is neither a host name nor "
            "an IP address"
        )
    if parts.path in ("", "/"):
        parts = parts._replace(path=TRACES_PATH)
    return urlunsplit(parts)


def _host_name_or_address(host: str) -> bool:
    """Whether the exporter can look `host` up: an IP address, or a name of labels of 1 to
    63 letters, digits, hyphens and underscores (non-ASCII letters too: it asks for their
    IDNA form). Anything else, a typo such as "collector..local" or "%zz", failed every
    export, one error a batch, in a node that ran as if all was well."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    try:
        ascii_name = host.encode("idna").decode()  # UnicodeError: an empty or long label
    except UnicodeError:
        return False
    return _HOST_NAME.fullmatch(ascii_name) is not None


_HOST_NAME = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?")


def _one_line(span: ReadableSpan) -> str:
    return f"{span.to_json(indent=None)}\n"


def _unsampled(traceparent: str | None) -> bool:
    """A well-formed version-00 traceparent whose sampled flag (bit 0) is clear: the caller
    records none of this trace. Other flags may be set (W3C level 2 marks random trace ids
    with 0x02). Anything else goes to the propagator (the sampler then decides the same)."""
    if traceparent is None or len(traceparent) != 55 or not traceparent.startswith("00-"):
        return False
    try:
        return not int(traceparent[-2:], 16) & 0x01
    except ValueError:
        return False


def _context(parent: Parent) -> Context:
    if parent is None:
        return Context()  # a root, whatever happens to be current
    if isinstance(parent, Context):
        return parent
    return trace.set_span_in_context(parent)
