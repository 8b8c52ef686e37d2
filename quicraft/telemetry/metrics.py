"""A node's metrics: OpenTelemetry instruments, served to Prometheus at `--metrics HOST:PORT`.

Rules of this file:
- Names follow Prometheus conventions once exported: `quicraft.fsync.duration` with unit "s"
  becomes `quicraft_fsync_duration_seconds`, a counter gets `_total`. docs/observability.md
  lists every one; keep it in step.
- Every node has its own meter provider and registry (several nodes may share a process).
- Gauges are read when Prometheus scrapes, on the HTTP server's thread: their callbacks only
  read plain values, or copy a dict in one C call (list(d.items())), never iterate a live one.
- With metrics off the instruments are no-ops; recording costs a call and nothing more.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Meter, NoOpMeter, Observation
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry

from .metrics_http import MAX_CONNECTIONS, TIMEOUT_S, MetricsHTTPServer
from .tracing import resource

#: Readings of one gauge: (value, labels) pairs.
Readings = Iterable[tuple[float, dict[str, str]]]

#: Bucket bounds for durations of a step on a local disk or loop: 50 µs to 2.5 s.
_DURATION_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0, 2.5,
)  # fmt: skip
SNAPSHOT_KINDS = ("taken", "sent", "received", "installed")
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class NodeMetrics:
    """The instruments one node records into."""

    def __init__(self, meter: Meter | None = None):
        self._meter = meter = meter or NoOpMeter("quicraft")
        self.leader_changes = meter.create_counter(
            "quicraft.leader_changes", "1", "times this node saw the leader change"
        )
        self.proposals_committed = meter.create_counter(
            "quicraft.proposals.committed", "1", "entries proposed here and applied"
        )
        self.proposals_failed = meter.create_counter(
            "quicraft.proposals.failed", "1", "entries proposed here that were lost or timed out"
        )
        self.apply_duration = meter.create_histogram(
            "quicraft.apply.duration",
            "s",
            "time to apply one batch of committed entries to the state machine",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self.fsync_duration = meter.create_histogram(
            "quicraft.fsync.duration",
            "s",
            "time to write one batch to storage and sync it",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self.append_batch_size = meter.create_histogram(
            "quicraft.append_entries.batch_size",
            "",
            "entries in one AppendEntries this node sent",
            explicit_bucket_boundaries_advisory=_BATCH_BUCKETS,
        )
        self.snapshots = meter.create_counter(
            "quicraft.snapshots", "1", "snapshots by kind: taken, sent, received, installed"
        )
        self.snapshot_bytes = meter.create_counter(
            "quicraft.snapshot.bytes", "By", "bytes of snapshots by kind: sent, received"
        )
        # Every counter whose labels are known is exported from 0: a series that appears only
        # with its first count hides that count from increase() and rate() (and so from
        # the alerts built on them).
        for counter in (self.leader_changes, self.proposals_committed, self.proposals_failed):
            counter.add(0)
        for kind in SNAPSHOT_KINDS:
            self.snapshots.add(0, {"kind": kind})
        for kind in ("sent", "received"):
            self.snapshot_bytes.add(0, {"kind": kind})

    def gauge(
        self, name: str, description: str, read: Callable[[], Readings], unit: str = ""
    ) -> None:
        """A gauge whose readings `read` returns when scraped."""
        self._meter.create_observable_gauge(name, [_observe(read)], unit, description)

    def counter(self, name: str, description: str, read: Callable[[], Readings]) -> None:
        """A counter kept elsewhere (a monotonic total per label set), read when scraped."""
        self._meter.create_observable_counter(name, [_observe(read)], "1", description)


NO_METRICS = NodeMetrics()


class MetricsServer:
    """Serves one node's metrics at http://HOST:PORT/metrics (a thread of its own)."""

    def __init__(
        self,
        host: str,
        port: int,
        instance_id: str,
        timeout_s: float = TIMEOUT_S,
        max_connections: int = MAX_CONNECTIONS,
    ):
        self.registry = CollectorRegistry()
        reader = PrometheusMetricReader(
            registry=self.registry, disable_target_info=False, scope_info_enabled=False
        )
        self._provider = MeterProvider(metric_readers=[reader], resource=resource(instance_id))
        self.metrics = NodeMetrics(self._provider.get_meter("quicraft"))
        try:
            self._server = MetricsHTTPServer(host, port, self.registry, timeout_s, max_connections)
        except OSError as err:  # the port is taken, or the address is not this host's
            self._provider.shutdown()
            raise OSError(f"cannot serve metrics on {host}:{port}: {err.strerror}") from None
        threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True).start()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._provider.shutdown()


def _observe(
    read: Callable[[], Readings],
) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def callback(_: CallbackOptions) -> Iterable[Observation]:
        return [Observation(value, labels) for value, labels in read()]

    return callback
