"""A node whose disk fills up: it stops with a one-line error, loses nothing it acknowledged,
and once given space again it restarts and catches up. Real processes; node 2's data
directory is a small tmpfs of its own (small_disks.py: root only, which CI has)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import small_disks
from cluster_harness import SNAPSHOT_EVERY, Cluster, eventually_write, run

from quicraft.client import ClientError

FULL_NODE = 2
#: Room for a few dozen of the values below: LevelDB's log of node 2 fills it within seconds.
DISK_SIZE = 3 << 20
VALUE = b"v" * 100_000


@pytest.fixture
def small_disk_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A cluster of 3 whose node 2 keeps its data on a tmpfs of DISK_SIZE."""
    if why := small_disks.why_not():
        pytest.skip(why)
    made = Cluster(tmp_path / "cluster")
    disk = _disk(made)
    small_disks.mount(disk, DISK_SIZE)
    try:
        made.start()
        made.leader()
        yield made
    finally:
        try:
            made.stop()
        finally:
            small_disks.unmount(disk)


def _disk(cluster: Cluster) -> Path:
    return cluster.local.folder / f"n{FULL_NODE}" / "data"


def _exit_status(pid: int) -> int | None:
    """The exit status of our child `pid` if it has exited (reaping it), else None."""
    waited, status = os.waitpid(pid, os.WNOHANG)
    return os.waitstatus_to_exitcode(status) if waited == pid else None


def test_a_node_whose_disk_fills_stops_cleanly_and_catches_up_with_space(
    small_disk_cluster: Cluster,
) -> None:
    cluster = small_disk_cluster
    full = cluster.local.node(FULL_NODE)
    acknowledged: dict[str, bytes] = {}
    statuses: list[int] = []

    async def write_until_the_node_stops() -> None:
        # The others keep serving: if node 2 led, the client fails over to the new leader.
        async with cluster.client(timeout=10) as c:
            stopped_at = 0
            for i in range(1000):
                key = f"big/{i % 20}"
                value = VALUE + b"%d" % i
                await eventually_write(c, key, value)
                acknowledged[key] = value
                if not statuses and (status := _exit_status(full.pid)) is not None:
                    statuses.append(status)
                    stopped_at = i
                # Enough writes without it that the leader's snapshot leaves it behind.
                if statuses and i >= stopped_at + 3 * SNAPSHOT_EVERY:
                    return

    run(write_until_the_node_stops())
    log = cluster.log(FULL_NODE)
    assert statuses, f"node {FULL_NODE} never stopped:\n{log[-2000:]}"
    [status] = statuses
    assert status == 1, log[-2000:]
    assert "No space left on device" in log, log[-2000:]
    assert "quicraft: error: " in log and "Traceback" not in log, log[-2000:]

    async def every_acknowledged_write_is_served() -> None:
        async with cluster.client() as c:
            for key, value in acknowledged.items():
                assert await c.kv.get(key) == value, key

    run(every_acknowledged_write_is_served())

    # Space again: the node starts on what it had stored and catches up.
    small_disks.resize(_disk(cluster), 256 << 20)
    cluster.start(FULL_NODE)

    async def caught_up() -> None:
        async with cluster.client(FULL_NODE) as c:
            deadline = time.monotonic() + 30
            for key, value in acknowledged.items():
                while True:
                    try:
                        if await c.kv.get(key, stale=True) == value:
                            break
                    except ClientError as err:
                        assert err.code == "timeout", err
                    assert time.monotonic() < deadline, f"node {FULL_NODE} lacks {key}"
                    await asyncio.sleep(0.1)

    run(caught_up())
    assert cluster.local.running(full)
    assert "installed a snapshot" in cluster.log(FULL_NODE)
