"""What a process exports: traces (OTLP/HTTP, console), metrics (Prometheus) and log format."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

LogFormat = Literal["text", "json"]


@dataclass(frozen=True, slots=True)
class TelemetrySettings:
    #: Base URL of an OTLP/HTTP collector, e.g. http://localhost:4318 (spans go to /v1/traces).
    otlp_endpoint: str | None = None
    #: Print every finished span on standard error (for debugging).
    trace_console: bool = False
    #: Share of the traces that start here to record; a trace that arrives keeps its
    #: caller's decision (parent-based sampling).
    trace_sample: float = 1.0
    #: Serve Prometheus metrics at http://HOST:PORT/metrics.
    metrics: tuple[str, int] | None = None
    log_format: LogFormat = "text"
    #: How long one export to the collector may take, retries included (None: OpenTelemetry's
    #: default, 10 s, or OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT). A short-lived command sets less:
    #: it waits for its last export before it exits.
    export_timeout_s: float | None = None

    @property
    def tracing(self) -> bool:
        """Whether any span has somewhere to go."""
        return self.otlp_endpoint is not None or self.trace_console


NO_TELEMETRY = TelemetrySettings()
