"""Drive a cluster with concurrent clients and measure it (used by `quicraft bench`).

Each writer task keeps one request in flight on its client; N writers give N concurrent
requests, which the leader turns into batches (group commit). Writers may share a client
(one connection and one session: `quicraft bench --connections`), as the tasks of one
application would.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from .client import RETRYABLE, Client, ClientError

#: Errors a bench counts and goes on after. Any other is a refusal (a value too large, an
#: identity that may not write) that every retry would meet again: the bench stops with it.
COUNTED = RETRYABLE | {"session_expired"}


@dataclass(frozen=True, slots=True)
class BenchResult:
    clients: int
    value_size: int
    write_seconds: float
    writes: int
    writes_per_s: float
    write_p50_ms: float
    write_p99_ms: float
    read_seconds: float
    reads: int
    reads_per_s: float
    errors: int
    #: CPU time per committed write during the writes, in µs, by process ("bench" is this one)
    cpu_us_per_write: dict[str, float] = field(default_factory=dict)
    #: QUIC connections the clients shared (`quicraft bench --connections`)
    connections: int = 1

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def summary(self) -> str:
        text = (
            f"{self.writes_per_s:,.0f} writes/s (p50 {self.write_p50_ms:.1f} ms, "
            f"p99 {self.write_p99_ms:.1f} ms), {self.reads_per_s:,.0f} linearizable reads/s; "
            f"{self.clients} clients on {_count(self.connections, 'connection')}, "
            f"{self.value_size}-byte values, {self.errors} errors"
        )
        if self.cpu_us_per_write:
            each = ", ".join(f"{k} {v:,.0f}" for k, v in self.cpu_us_per_write.items())
            total = sum(self.cpu_us_per_write.values())
            text += f"\nCPU per write: {total:,.0f} µs ({each})"
        return text


def _count(number: int, thing: str) -> str:
    return f"{number} {thing}" if number == 1 else f"{number} {thing}s"


#: CPU seconds used so far, by process name.
CpuProbe = Callable[[], dict[str, float]]


def cpu_per_write(
    before: dict[str, float], after: dict[str, float], writes: int
) -> dict[str, float]:
    """µs of CPU per write of every process measured at both ends."""
    if not writes:
        return {}
    return {k: (after[k] - before[k]) / writes * 1e6 for k in after if k in before}


def nearest_rank(ordered: list[float], percent: int) -> float:
    """The `percent` percentile of sorted samples: the smallest that at least `percent` % of
    them do not exceed. (Taking sample int(n * 0.99) gave the largest of 100 as their p99.)"""
    rank = -(-len(ordered) * percent // 100)  # ceil(n * percent / 100), in whole numbers
    return ordered[max(rank, 1) - 1]


async def wait_until_serving(client: Client, timeout: float) -> None:
    """Until a write succeeds: a leader is elected and a quorum answers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await client.kv.set("bench/ready", b"1")
            return
        except ClientError as err:
            if err.code not in COUNTED:
                raise
            if time.monotonic() > deadline:
                raise ClientError(
                    err.code, f"no write succeeded within {timeout:g} s: {err.message}"
                ) from None


async def run_bench(
    clients: list[Client],
    duration: float,
    value_size: int,
    read_duration: float | None = None,
    cpu: CpuProbe | None = None,
) -> BenchResult:
    value = b"x" * value_size
    latencies: list[float] = []
    errors = 0

    async def writer(number: int, client: Client, until: float) -> None:
        nonlocal errors
        count = 0
        while time.monotonic() < until:
            started = time.monotonic()
            try:
                await client.kv.set(f"bench/{number}/{count % 1000}", value)
            except ClientError as err:
                if err.code not in COUNTED:
                    raise
                errors += 1
                continue
            latencies.append(time.monotonic() - started)
            count += 1

    reads = 0

    async def reader(number: int, client: Client, until: float) -> None:
        nonlocal reads, errors
        while time.monotonic() < until:
            try:
                await client.kv.get(f"bench/{number}/0")
            except ClientError as err:
                if err.code not in COUNTED:
                    raise
                errors += 1
                continue
            reads += 1

    cpu_before = cpu() if cpu is not None else {}
    start = time.monotonic()
    await asyncio.gather(*(writer(i, c, start + duration) for i, c in enumerate(clients)))
    write_seconds = time.monotonic() - start
    cpu_after = cpu() if cpu is not None else {}
    read_duration = duration / 2 if read_duration is None else read_duration
    start = time.monotonic()
    await asyncio.gather(*(reader(i, c, start + read_duration) for i, c in enumerate(clients)))
    read_seconds = time.monotonic() - start
    ordered = sorted(latencies) or [0.0]
    return BenchResult(
        clients=len(clients),
        value_size=value_size,
        write_seconds=write_seconds,
        writes=len(latencies),
        writes_per_s=len(latencies) / write_seconds,
        write_p50_ms=statistics.median(ordered) * 1000,
        write_p99_ms=nearest_rank(ordered, 99) * 1000,
        read_seconds=read_seconds,
        reads=reads,
        reads_per_s=reads / read_seconds if read_seconds else 0.0,
        errors=errors,
        cpu_us_per_write=cpu_per_write(cpu_before, cpu_after, len(latencies)),
        connections=len({id(client) for client in clients}),  # writers share a client's
    )
