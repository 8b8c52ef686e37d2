"""The telemetry flags: tracing for every command that talks to a cluster, and metrics and
log format for `quicraft node` (docs/observability.md)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
from collections.abc import Iterator

from opentelemetry import trace

from quicraft.telemetry import TelemetrySettings, node_tracing

from .common import address

#: A command waits for its last spans to be exported before it exits: with no collector
#: listening, this long at most (OpenTelemetry's default would be 10 s of retries).
EXPORT_TIMEOUT_S = 2.0


def add_tracing_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("tracing (OpenTelemetry)")
    group.add_argument(
        "--otlp-endpoint",
        metavar="URL",
        help="export spans over OTLP/HTTP to the collector at URL, e.g. http://localhost:4318 "
        "(needs: pip install 'quicraft[otlp]')",
    )
    group.add_argument(
        "--trace-console", action="store_true", help="print every span on stderr (debugging)"
    )
    group.add_argument(
        "--trace-sample",
        type=_ratio,
        default=1.0,
        metavar="RATIO",
        help="share of the traces started here to record, 0 to 1 (default: 1); a traced "
        "request keeps its caller's decision",
    )


def add_node_telemetry_arguments(parser: argparse.ArgumentParser) -> None:
    add_tracing_arguments(parser)
    group = parser.add_argument_group("metrics and logs")
    group.add_argument(
        "--metrics",
        type=address,
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (plain HTTP, no "
        "authentication: use loopback or a private address)",
    )
    group.add_argument(
        "--log-format",
        choices=["text", "json"],
        default="text",
        help="json: one object per line with the node id, term and trace ids (default: text)",
    )


def telemetry_settings(args: argparse.Namespace) -> TelemetrySettings:
    return TelemetrySettings(
        otlp_endpoint=args.otlp_endpoint,
        trace_console=args.trace_console,
        trace_sample=args.trace_sample,
        metrics=getattr(args, "metrics", None),
        log_format=getattr(args, "log_format", "text"),
    )


@contextlib.contextmanager
def client_tracing(args: argparse.Namespace) -> Iterator[None]:
    """Trace this client command as its flags ask, and export every span before it exits."""
    settings = dataclasses.replace(telemetry_settings(args), export_timeout_s=EXPORT_TIMEOUT_S)
    if not settings.tracing:
        yield
        return
    tracing = node_tracing(settings, f"cli-{args.name}-{os.getpid()}")
    assert tracing.provider is not None
    trace.set_tracer_provider(tracing.provider)
    try:
        yield
    finally:
        tracing.shutdown()


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, not {text!r}")
    return value
