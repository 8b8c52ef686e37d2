"""Helpers of the management tests: the mgmt CLI against a harness cluster, and extra nodes
started by a test (and stopped by it, by pid)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cluster_harness import Cluster, free_base_port

from quicraft.client import MgmtClient, connect_mgmt


def mgmt(cluster: Cluster, *args: str, endpoints: str | None = None,
         name: str = "admin") -> subprocess.CompletedProcess[str]:  # fmt: skip
    """`quicraft mgmt ARGS` with the harness cluster's endpoints and certs."""
    argv = [
        sys.executable, "-m", "quicraft.cli", "mgmt", *args,
        "--cluster", "t1",
        "--endpoints", endpoints or cluster.local.endpoints(),
        "--certs", str(cluster.local.certs),
        "--name", name,
    ]  # fmt: skip
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )


def mgmt_json(cluster: Cluster, *args: str, endpoints: str | None = None) -> Any:
    done = mgmt(cluster, *args, "--json", endpoints=endpoints)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def admin(cluster: Cluster, *numbers: int, follow: bool = True) -> MgmtClient:
    nodes = [cluster.local.node(n) for n in numbers] if numbers else cluster.nodes
    endpoints = [n.address for n in nodes]
    return connect_mgmt(endpoints, "t1", cluster.local.certs, timeout=20, follow_leader=follow)


class ExtraNode:
    """A node process outside the harness's three: started with --no-bootstrap (or on a data
    directory made by restore), logging to a file, killed by its pid."""

    def __init__(self, cluster: Cluster, name: str, data: Path, *extra: str):
        self.name = name
        self.port = free_base_port(1) + 1
        self.address = f"127.0.0.1:{self.port}"
        self.log_path = data.parent / f"{name}.log"
        argv = [
            sys.executable, "-m", "quicraft.cli", "node",
            "--cluster", "t1", "--name", name,
            "--listen", self.address,
            "--data", str(data),
            "--certs", str(cluster.local.certs),
            "--preset", "test",
            "--log-level", "debug",
            *extra,
        ]  # fmt: skip
        data.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )

    def wait_for_log(self, text: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log_path.read_text(errors="replace"):
                return
            assert self.process.poll() is None, self.log_path.read_text(errors="replace")
            time.sleep(0.05)
        raise AssertionError(f"{self.name} never logged {text!r}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)
