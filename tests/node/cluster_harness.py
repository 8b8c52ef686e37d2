"""Real node processes over real QUIC on loopback, started and stopped by each test."""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from quicraft.client import Client, ClientError, connect
from quicraft.node.local import LocalCluster, LocalNode

NODES = 3
#: Small enough that a test writing a few hundred keys makes the leader snapshot.
SNAPSHOT_EVERY = 50


def free_base_port(count: int) -> int:
    """A base port B such that UDP ports B+1 .. B+count are free on 127.0.0.1 right now.

    B is drawn below Linux's ephemeral range (32768 and up by default): a port in that range
    can be taken, between this check and the node's bind, by any socket that binds port 0 or
    connects, such as every dialer's."""
    for _ in range(200):
        base = random.randrange(20000, 32000 - count)
        sockets = []
        try:
            for port in range(base + 1, base + count + 1):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no free UDP ports")


class Cluster:
    """A LocalCluster of real processes plus helpers; every process is stopped by its pid."""

    def __init__(self, folder: Path, size: int = NODES):
        self.local = LocalCluster.create(folder, size, "t1", "test", free_base_port(size))
        self.extra = ["--snapshot-every", str(SNAPSHOT_EVERY), "--log-level", "debug"]

    @property
    def nodes(self) -> list[LocalNode]:
        return self.local.nodes

    def start(self, *numbers: int) -> None:
        for number in numbers or range(1, len(self.nodes) + 1):
            self.local.start(self.local.node(number), self.extra)

    def kill(self, number: int) -> None:
        node = self.local.node(number)
        self.local.kill(node)
        _wait_dead(node.pid)

    def stop(self) -> None:
        self.local.stop_all(grace_s=5)

    def client(self, *numbers: int, name: str = "admin", timeout: float = 20) -> Client:
        nodes = [self.local.node(n) for n in numbers] if numbers else self.nodes
        endpoints = [n.address for n in nodes]
        return connect(endpoints, "t1", self.local.certs, name, timeout=timeout)

    def log(self, number: int) -> str:
        return self.local.log_file(self.local.node(number)).read_text(errors="replace")

    def cli(self, *args: str, endpoints: str | None = None) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "quicraft.cli", *args]
        if args and args[0] == "kv":
            argv += [
                "--cluster", "t1",
                "--endpoints", endpoints or self.local.endpoints(),
                "--certs", str(self.local.certs),
            ]  # fmt: skip
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
        )

    def leader(self) -> int:
        """The number of the node a client ends up writing to: the leader."""
        return run(self._leader())

    async def _leader(self) -> int:
        async with self.client() as c:
            await c.kv.set("probe/leader", b"1")
            address = c.current_endpoint
        for number, node in enumerate(self.nodes, start=1):
            if node.address == address:
                return number
        raise AssertionError(f"{address} is not a node of the cluster")

    def wait_all_have(self, key: str, timeout: float = 30) -> None:
        """Until every node's own state machine holds `key`. A leader and its first writes
        need only a majority: a founder still dialling its peers has no log yet."""
        run(self._wait_all_have(key, timeout))

    async def _wait_all_have(self, key: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for number in range(1, len(self.nodes) + 1):
            async with self.client(number) as c:
                while await c.kv.get(key, stale=True) is None:
                    assert time.monotonic() < deadline, f"node {number} never applied {key!r}"
                    await asyncio.sleep(0.05)


def _wait_dead(pid: int) -> None:
    for _ in range(200):
        try:
            waited, _ = os.waitpid(pid, os.WNOHANG)
            if waited == pid:
                return
        except ChildProcessError:
            return
        time.sleep(0.02)


T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


async def eventually_write(client: Client, key: str, value: bytes) -> int:
    """Write, retrying through an election; returns the revision."""
    for _ in range(5):
        try:
            return await client.kv.set(key, value)
        except ClientError as err:
            if err.code != "timeout":
                raise
    raise AssertionError(f"could not write {key}")


def processes_naming(folder: Path) -> list[int]:
    """Pids of the processes whose command line names `folder` (a node's --data in it)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if proc.name.isdigit() and str(folder) in argv:
            found.append(int(proc.name))
    return found


def quicraft(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the `quicraft` command as a user would, with no standard input."""
    return subprocess.run(
        [sys.executable, "-m", "quicraft.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
    )


def quicraft_into_closed_pipe(*args: str, cwd: Path | None = None) -> tuple[int, str]:
    """Run `quicraft ARGS` with its stdout a pipe whose reader went away (`... | head -n 1`):
    every write fails with EPIPE. Its exit status and stderr."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "quicraft.cli", *args],
            cwd=cwd,
            stdout=write_end,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)
    return done.returncode, done.stderr


def one_node_cluster(folder: Path) -> Iterator[Cluster]:
    """A serving cluster of one node, for a module's tests to share (a module fixture)."""
    made = Cluster(folder, size=1)
    made.start()
    try:
        made.leader()  # serving
        yield made
    finally:
        made.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    made = Cluster(tmp_path / "cluster")
    made.start()
    try:
        try:
            made.leader()  # serving: a leader is elected and a majority has the log
        except ClientError as err:  # keep the evidence: the logs go with tmp_path
            tails = "\n".join(f"--- n{n} ---\n{made.log(n)[-3000:]}" for n in range(1, NODES + 1))
            raise AssertionError(f"the cluster never served: {err}\n{tails}") from None
        made.wait_all_have("probe/leader")  # every founder is in the cluster
        yield made
    finally:
        made.stop()


def parse_json(text: str) -> Any:
    return json.loads(text)
