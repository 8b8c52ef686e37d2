"""`quicraft bench`: committed writes/s, write latency and linearizable reads/s of a cluster."""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import time
from pathlib import Path

from quicraft.client import ClientError, connect
from quicraft.client.bench import BenchResult, CpuProbe, run_bench, wait_until_serving
from quicraft.node.local import LocalCluster, LocalClusterError, cpu_seconds_of
from quicraft.node.settings import MAX_CONNECTIONS_PER_IDENTITY, PRESETS
from quicraft.statemachine import MAX_VALUE_BYTES
from quicraft.telemetry import check
from quicraft.transport import IdentityError

from .common import (
    OK,
    add_certs,
    base_port,
    cluster_name,
    ended_as_by_ctrl_c,
    endpoint_list,
    fail,
    freeze_what_is_loaded,
    identity_name,
    int_in,
    seconds,
)
from .telemetry import add_tracing_arguments, client_tracing, telemetry_settings

#: Most writers (and connections) one bench process drives; far past where it saturates.
MAX_IN_FLIGHT = 10_000
#: How long one request may take, retries included, before it counts as an error.
CLIENT_TIMEOUT_S = 10.0


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = commands.add_parser(
        "bench",
        help="measure a throwaway local cluster or an existing one",
        description="With --local N: start N nodes on loopback in a temporary folder (as "
        "'quicraft local'), drive them, print the results and clean up. With --endpoints: "
        "drive an existing cluster (it writes keys under bench/). Besides rates and latencies "
        "it reports the CPU time per write of itself and, with --local, of each node "
        "(where /proc exists). The tracing flags trace "
        "the bench's requests and, with --local, set up the nodes' tracing the same way "
        "(docs/performance.md measures what tracing costs).",
    )
    target = bench.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--local", type=int_in(1, 9), metavar="N", help="start a throwaway cluster of N (1-9)"
    )
    target.add_argument(
        "--endpoints", type=endpoint_list, metavar="HOST:PORT,...", help="an existing cluster"
    )
    bench.add_argument(
        "--cluster", default="bench", type=cluster_name, help="cluster name (default: bench)"
    )
    add_certs(bench)
    bench.add_argument(
        "--name", default="admin", type=identity_name, help="identity to use (default: admin)"
    )
    bench.add_argument(
        "--clients",
        type=int_in(1, MAX_IN_FLIGHT),
        default=16,
        help="concurrent requests in flight (default 16)",
    )
    bench.add_argument(
        "--connections",
        type=int_in(1, MAX_IN_FLIGHT),
        default=1,
        help="QUIC connections they share (default 1); a node takes at most its "
        f"--max-connections-per-identity ({MAX_CONNECTIONS_PER_IDENTITY} by default) of one "
        "identity, which a --local cluster raises to fit",
    )
    bench.add_argument(
        "--duration",
        type=seconds,
        default=10.0,
        help="seconds of writes (default 10), then half as long of reads",
    )
    bench.add_argument(
        "--value-size",
        type=int_in(0, MAX_VALUE_BYTES),
        default=100,
        help=f"bytes per value, up to {MAX_VALUE_BYTES:,} (default 100)",
    )
    bench.add_argument(
        "--preset", choices=sorted(PRESETS), default="dev", help="timings of a --local cluster"
    )
    bench.add_argument(
        "--base-port", type=base_port, default=7500, help="ports of a --local cluster"
    )
    bench.add_argument("--json", action="store_true", help="print the result as JSON")
    add_tracing_arguments(bench)


def run(args: argparse.Namespace) -> int:
    check(telemetry_settings(args))  # before any node starts
    try:
        with client_tracing(args):
            if args.local is not None:
                result = _bench_local(args)
            else:
                result = asyncio.run(
                    _drive(args.endpoints, args.cluster, args.certs, args, _own_cpu)
                )
    except (ClientError, IdentityError, LocalClusterError, ValueError, OSError) as err:
        return fail(str(err))
    if not result.writes:  # the cluster served the first write, then none
        return fail(f"no write succeeded in {args.duration:g} s ({result.errors:,} errors)")
    print(json.dumps(result.as_dict()) if args.json else result.summary())
    return OK


def _bench_local(args: argparse.Namespace) -> BenchResult:
    # The nodes run in their own sessions and the folder is a temporary one nobody knows:
    # whatever ends the bench (Ctrl-C, `timeout`, a closed terminal) must stop and delete them.
    with ended_as_by_ctrl_c():
        folder = Path(tempfile.mkdtemp(prefix="quicraft-bench-"))
        cluster: LocalCluster | None = None
        try:
            cluster = LocalCluster.create(
                folder, args.local, args.cluster, args.preset, args.base_port
            )
            flags = _node_tracing_flags(args) + _node_connection_flags(args)
            cluster.start_nodes(cluster.nodes, flags)
            pids = {node.name: node.pid for node in cluster.nodes}

            def cpu() -> dict[str, float]:
                return _own_cpu() | cpu_seconds_of(pids)

            endpoints, certs = cluster.endpoints(), cluster.certs
            return asyncio.run(_drive(endpoints, cluster.cluster, certs, args, cpu))
        finally:
            if cluster is not None:
                cluster.stop_all()
            shutil.rmtree(folder, ignore_errors=True)


def _own_cpu() -> dict[str, float]:
    return {"bench": time.process_time()}


def _node_connection_flags(args: argparse.Namespace) -> list[str]:
    """A --local cluster's nodes take every connection the bench opens with its one identity."""
    if args.connections <= MAX_CONNECTIONS_PER_IDENTITY:
        return []
    return ["--max-connections-per-identity", str(args.connections)]


def _node_tracing_flags(args: argparse.Namespace) -> list[str]:
    """The bench's own tracing flags, for the nodes of its --local cluster."""
    flags = ["--trace-sample", str(args.trace_sample)]
    if args.otlp_endpoint is not None:
        flags += ["--otlp-endpoint", args.otlp_endpoint]
    if args.trace_console:
        flags.append("--trace-console")  # into each node's log file
    return flags


async def _drive(
    endpoints: str, cluster: str, certs: Path, args: argparse.Namespace, cpu: CpuProbe
) -> BenchResult:
    # QUIC multiplexes: the concurrent clients share `--connections` connections, so requests
    # sent together share packets, as they would in one application with many tasks.
    connections = [
        connect(endpoints, cluster, certs, args.name, timeout=CLIENT_TIMEOUT_S)
        for _ in range(min(args.connections, args.clients))
    ]
    clients = [connections[i % len(connections)] for i in range(args.clients)]
    try:
        # A --local cluster is electing its first leader; an existing one should serve now.
        await wait_until_serving(clients[0], timeout=30 if args.local else CLIENT_TIMEOUT_S)
        freeze_what_is_loaded()
        return await run_bench(clients, args.duration, args.value_size, cpu=cpu)
    finally:
        for connection in connections:
            await connection.close()
