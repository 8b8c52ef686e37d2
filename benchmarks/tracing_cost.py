"""What tracing costs: `quicraft bench --local 3` with tracing off, at 1 % and at 100 %.

    .venv/bin/pip install -e '.[otlp]'
    .venv/bin/python benchmarks/tracing_cost.py --rounds 3 --duration 10 --clients 16

Each round runs the three settings, in an order that rotates from round to round. With
tracing on, the bench client and the three nodes export over OTLP/HTTP to a collector stand-in
in this process, which decodes every export (to count the spans, proving that the sampled
share was recorded) and throws it away. A real collector would cost the machine more; this
one costs little, so the difference measured is quicraft's own. Benchmarks are never run as
timed tests.
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from vs_pysyncobj import bench_parser, run_quicraft

SETTINGS: dict[str, float | None] = {"off": None, "1 %": 0.01, "100 %": 1.0}


class SpanSink(ThreadingHTTPServer):
    """Accepts OTLP/HTTP trace exports on loopback and counts their spans."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ExportHandler)
        self.spans = 0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def take_count(self) -> int:
        with self.lock:
            count, self.spans = self.spans, 0
        return count


class _ExportHandler(BaseHTTPRequestHandler):
    server: SpanSink

    def do_POST(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        request = ExportTraceServiceRequest.FromString(body)
        spans = sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
        with self.server.lock:
            self.server.spans += spans
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per export would swamp the output


def run_bench(args: argparse.Namespace, sample: float | None, sink: SpanSink) -> dict[str, float]:
    traced = ["--otlp-endpoint", sink.url, "--trace-sample", str(sample)]
    result = run_quicraft(args, traced if sample is not None else None)
    result["spans"] = sink.take_count()  # every process flushes its spans before it exits
    return result


def main() -> int:
    args = bench_parser(__doc__.split("\n\n")[0]).parse_args()
    try:
        import opentelemetry.proto  # noqa: F401
    except ImportError:
        raise SystemExit("needs the OTLP exporter: pip install -e '.[otlp]'") from None
    sink = SpanSink()
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in SETTINGS}
    names = list(SETTINGS)
    try:
        for number in range(args.rounds):
            order = names[number % len(names) :] + names[: number % len(names)]
            for name in order:
                run = run_bench(args, SETTINGS[name], sink)
                runs[name].append(run)
                print(
                    f"round {number + 1}, tracing {name}: {run['writes_per_s']:,.0f} writes/s "
                    f"(p50 {run['write_p50_ms']:.1f} ms, p99 {run['write_p99_ms']:.1f} ms), "
                    f"{run['reads_per_s']:,.0f} reads/s, {run['spans']:,.0f} spans exported",
                    flush=True,
                )
    finally:
        sink.shutdown()
    off = statistics.median(r["writes_per_s"] for r in runs["off"])
    print(f"medians of {args.rounds} rounds, {args.clients} writes in flight:")
    for name, results in runs.items():
        writes = statistics.median(r["writes_per_s"] for r in results)
        print(
            f"  tracing {name:>5}: {writes:,.0f} writes/s ({writes / off:.2f} of off), p50 "
            f"{statistics.median(r['write_p50_ms'] for r in results):.1f} ms, p99 "
            f"{statistics.median(r['write_p99_ms'] for r in results):.1f} ms, "
            f"{statistics.median(r['reads_per_s'] for r in results):,.0f} reads/s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
