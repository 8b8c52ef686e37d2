"""OpenTelemetry for quicraft: tracing, metrics and structured logs (docs/observability.md)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from opentelemetry.sdk.trace.export import SpanExporter

from .logs import JsonFormatter, configure_logging, set_log_context
from .metrics import NO_METRICS, MetricsServer, NodeMetrics, Readings
from .settings import NO_TELEMETRY, LogFormat, TelemetrySettings
from .tracing import (
    NO_TRACING,
    TelemetryError,
    Tracing,
    check,
    global_tracing,
    node_tracing,
    remote_parent,
    traceparent,
)


@dataclass
class Telemetry:
    """What one node records into, and what exports it."""

    tracing: Tracing = NO_TRACING
    metrics: NodeMetrics = NO_METRICS
    metrics_server: MetricsServer | None = field(default=None)

    def close(self) -> None:
        """Flush the spans still buffered and stop serving metrics."""
        self.tracing.shutdown()
        if self.metrics_server is not None:
            self.metrics_server.close()


def start_telemetry(
    settings: TelemetrySettings, instance_id: str, exporters: Sequence[SpanExporter] = ()
) -> Telemetry:
    """Tracing and metrics for the node `instance_id` as `settings` ask (`exporters`: extra
    span destinations, such as a test's in-memory exporter)."""
    tracing = node_tracing(settings, instance_id, exporters)
    if settings.metrics is None:
        return Telemetry(tracing)
    server = MetricsServer(*settings.metrics, instance_id)
    return Telemetry(tracing, server.metrics, server)


__all__ = [
    "NO_METRICS",
    "NO_TELEMETRY",
    "NO_TRACING",
    "JsonFormatter",
    "LogFormat",
    "MetricsServer",
    "NodeMetrics",
    "Readings",
    "Telemetry",
    "TelemetryError",
    "TelemetrySettings",
    "Tracing",
    "check",
    "configure_logging",
    "global_tracing",
    "node_tracing",
    "remote_parent",
    "set_log_context",
    "start_telemetry",
    "traceparent",
]
