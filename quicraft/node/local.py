"""A development cluster of N node processes on loopback, kept under one folder.

    FOLDER/cluster.json   cluster name, preset, and per node: name, port, pid
    FOLDER/certs/         the cluster's CA and every node's key
    FOLDER/nI/            node I's data directory and its log (node.log)

`quicraft local` and `quicraft bench --local` both use this. Processes are started in their
own session, so they outlive the command that started them until `stop`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from quicraft.transport import Role, init_cluster, issue
from quicraft.transport.address import format_address

STATE_FILE = "cluster.json"


class LocalClusterError(Exception):
    pass


@dataclass(slots=True)
class LocalNode:
    name: str
    port: int
    pid: int = 0

    @property
    def address(self) -> str:
        return format_address(("127.0.0.1", self.port))


@dataclass(slots=True)
class LocalCluster:
    folder: Path
    cluster: str
    preset: str
    nodes: list[LocalNode]

    # -- the folder ------------------------------------------------------------------------

    @classmethod
    def create(
        cls, folder: Path, size: int, cluster: str, preset: str, base_port: int
    ) -> LocalCluster:
        if (folder / STATE_FILE).exists():
            raise LocalClusterError(
                f"{folder} already holds a local cluster: 'quicraft local stop' it, or pass "
                f"another --dir"
            )
        if not 1 <= size <= 9:
            raise LocalClusterError("a local cluster has 1 to 9 nodes")
        folder.mkdir(parents=True, exist_ok=True)
        certs = folder / "certs"
        if not (certs / cluster / "ca.crt").exists():
            init_cluster(certs, cluster)
        nodes = [LocalNode(f"n{i}", base_port + i) for i in range(1, size + 1)]
        for node in nodes:
            if not (certs / cluster / f"{node.name}.crt").exists():
                issue(certs, cluster, node.name, Role.NODE)
        made = cls(folder, cluster, preset, nodes)
        made.save()
        return made

    @classmethod
    def load(cls, folder: Path) -> LocalCluster:
        try:
            raw = json.loads((folder / STATE_FILE).read_text())
            nodes = [LocalNode(**n) for n in raw["nodes"]]
            return cls(folder, str(raw["cluster"]), str(raw["preset"]), nodes)
        except FileNotFoundError:
            raise LocalClusterError(
                f"no local cluster in {folder}: start one with 'quicraft local start 3'"
            ) from None
        except (ValueError, KeyError, TypeError) as err:
            raise LocalClusterError(f"{folder / STATE_FILE} is unreadable: {err}") from None

    def save(self) -> None:
        raw = {
            "cluster": self.cluster,
            "preset": self.preset,
            "nodes": [asdict(n) for n in self.nodes],
        }
        tmp = self.folder / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(raw, indent=2))
        tmp.replace(self.folder / STATE_FILE)

    @property
    def certs(self) -> Path:
        return self.folder / "certs"

    def endpoints(self) -> str:
        return ",".join(n.address for n in self.nodes)

    def node(self, number: int) -> LocalNode:
        if not 1 <= number <= len(self.nodes):
            raise LocalClusterError(f"there is no node {number}; nodes are 1 to {len(self.nodes)}")
        return self.nodes[number - 1]

    def log_file(self, node: LocalNode) -> Path:
        return self.folder / node.name / "node.log"

    # -- processes -------------------------------------------------------------------------

    def command(self, node: LocalNode, extra: list[str] | None = None) -> list[str]:
        peers = ",".join(n.address for n in self.nodes if n is not node)
        argv = [
            sys.executable, "-m", "quicraft.cli", "node",
            "--cluster", self.cluster,
            "--name", node.name,
            "--listen", node.address,
            "--data", str(self.folder / node.name / "data"),
            "--certs", str(self.certs),
            "--preset", self.preset,
        ]  # fmt: skip
        if peers:
            argv += ["--peers", peers]
        return argv + (extra or [])

    def start(self, node: LocalNode, extra: list[str] | None = None) -> None:
        if self.running(node):
            raise LocalClusterError(f"{node.name} is already running (pid {node.pid})")
        (self.folder / node.name).mkdir(parents=True, exist_ok=True)
        with self.log_file(node).open("ab") as log:
            process = subprocess.Popen(
                self.command(node, extra),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        node.pid = process.pid
        self.save()

    def running(self, node: LocalNode) -> bool:
        if node.pid <= 0:
            return False
        try:
            waited, _ = os.waitpid(node.pid, os.WNOHANG)  # reap it if it is our child
            if waited == node.pid:
                return False
        except ChildProcessError:
            pass
        try:
            os.kill(node.pid, 0)
        except ProcessLookupError:
            return False
        return _is_quicraft(node.pid)

    def kill(self, node: LocalNode, sig: int = signal.SIGKILL) -> None:
        if self.running(node):
            os.kill(node.pid, sig)

    def wait_stopped(self, node: LocalNode, timeout_s: float = 10.0) -> None:
        """Signals take effect asynchronously: wait until the process is really gone."""
        deadline = time.monotonic() + timeout_s
        while self.running(node):
            if time.monotonic() > deadline:
                raise LocalClusterError(f"{node.name} (pid {node.pid}) did not stop")
            time.sleep(0.02)

    def stop_all(self, grace_s: float = 10.0) -> None:
        """SIGTERM every node (leaders hand over), then SIGKILL what is left after `grace_s`."""
        for node in self.nodes:
            self.kill(node, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(self.running(n) for n in self.nodes):
            time.sleep(0.05)
        for node in self.nodes:
            self.kill(node, signal.SIGKILL)
            node.pid = 0
        self.save()


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time a running process has used (all its threads), from /proc;
    None where there is no /proc or no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces or parentheses itself;
    # utime and stime are fields 14 and 15, counted in clock ticks.
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds_of(pids: Mapping[str, int]) -> dict[str, float]:
    """cpu_seconds of each named process, leaving out those it cannot read."""
    found = {name: cpu_seconds(pid) for name, pid in pids.items()}
    return {name: seconds for name, seconds in found.items() if seconds is not None}


def _is_quicraft(pid: int) -> bool:
    """Guards against a recycled pid: only signal a process that runs a quicraft node."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc here: trust the pid
    return b"quicraft" in cmdline
