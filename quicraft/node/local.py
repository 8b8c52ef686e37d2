"""A development cluster of N node processes on loopback, kept under one folder.

    FOLDER/cluster.json   cluster name, preset, and per node: name, port, pid
    FOLDER/certs/         the cluster's CA and every node's key
    FOLDER/nI/            node I's data directory and its log (node.log)

`quicraft local` and `quicraft bench --local` both use this. Processes are started in their
own session, so they outlive the command that started them until `stop`.

Messages here say what is wrong; the command that calls this adds how to go on.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from quicraft.transport import Role, init_cluster, issue
from quicraft.transport.address import format_address

STATE_FILE = "cluster.json"

#: How long `start_nodes` waits for a node to listen: a node takes a second or two (mostly
#: imports), more on a busy machine.
LISTEN_WAIT_S = 30.0

#: How long `stop` waits for a node to exit after SIGTERM (a leader hands over first).
STOP_GRACE_S = 10.0


class LocalClusterError(Exception):
    """One line that says what went wrong."""


class NoLocalCluster(LocalClusterError):
    """The folder holds no local cluster."""


class NoSuchNode(LocalClusterError):
    """A node number outside 1..N."""


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
    #: Where each node's log stood when `start` last started it (not saved).
    _log_starts: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    # -- the folder ------------------------------------------------------------------------

    @classmethod
    def create(
        cls, folder: Path, size: int, cluster: str, preset: str, base_port: int
    ) -> LocalCluster:
        """Make the folder (unless it exists), the cluster's CA and a key per node, keeping
        those already there. A folder it made is removed again if this fails."""
        _check_folder(folder)
        if (folder / STATE_FILE).exists():
            raise LocalClusterError(f"{folder} already holds a local cluster")
        if not 1 <= size <= 9:
            raise LocalClusterError("a local cluster has 1 to 9 nodes")
        made_folder = not folder.exists()
        folder.mkdir(parents=True, exist_ok=True)
        try:
            certs = folder / "certs"
            if not (certs / cluster / "ca.crt").exists():
                init_cluster(certs, cluster)
            nodes = [LocalNode(f"n{i}", base_port + i) for i in range(1, size + 1)]
            for node in nodes:
                if not (certs / cluster / f"{node.name}.crt").exists():
                    issue(certs, cluster, node.name, Role.NODE)
            made = cls(folder, cluster, preset, nodes)
            made.save()
        except BaseException:
            if made_folder:
                shutil.rmtree(folder, ignore_errors=True)
            raise
        return made

    @classmethod
    def load(cls, folder: Path) -> LocalCluster:
        _check_folder(folder)
        try:
            raw = json.loads((folder / STATE_FILE).read_text())
            nodes = [LocalNode(**n) for n in raw["nodes"]]
            return cls(folder, str(raw["cluster"]), str(raw["preset"]), nodes)
        except FileNotFoundError:
            raise NoLocalCluster(f"no local cluster in {folder}") from None
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

    def delete(self) -> None:
        """Delete the cluster's keys, its nodes' data and logs and its state, then the folder
        if nothing else is in it: whatever else a user keeps there stays."""
        shutil.rmtree(self.certs / self.cluster, ignore_errors=True)
        for node in self.nodes:
            shutil.rmtree(self.folder / node.name, ignore_errors=True)
        for name in (STATE_FILE, STATE_FILE + ".tmp"):
            (self.folder / name).unlink(missing_ok=True)
        for folder in (self.certs, self.folder):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()

    @property
    def base_port(self) -> int:
        return self.nodes[0].port - 1

    @property
    def certs(self) -> Path:
        return self.folder / "certs"

    def endpoints(self) -> str:
        return ",".join(n.address for n in self.nodes)

    def node(self, number: int) -> LocalNode:
        if not 1 <= number <= len(self.nodes):
            raise NoSuchNode(f"there is no node {number}; nodes are 1 to {len(self.nodes)}")
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
            self._log_starts[node.name] = log.tell()
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
        except ChildProcessError:
            pass  # not our child: ask /proc below
        else:
            # Our child, so the pid is not recycled; /proc would not do here: while the
            # child is still exec-ing the node, its command line reads as empty.
            return waited != node.pid
        try:
            os.kill(node.pid, 0)
        except ProcessLookupError:
            return False
        return _is_quicraft(node.pid)

    def kill(self, node: LocalNode, sig: int = signal.SIGKILL) -> None:
        if self.running(node):
            os.kill(node.pid, sig)

    def start_nodes(
        self,
        nodes: Sequence[LocalNode],
        extra: list[str] | None = None,
        timeout_s: float = LISTEN_WAIT_S,
    ) -> None:
        """Start `nodes` and wait until each listens. If one exits first (its port is taken,
        say), or does not listen within `timeout_s`, stop those this call started and raise
        LocalClusterError with what that node said last."""
        started: list[LocalNode] = []
        try:
            for node in nodes:
                self.start(node, extra)
                started.append(node)
            deadline = time.monotonic() + timeout_s
            for node in nodes:
                self._wait_listening(node, deadline, timeout_s)
        except BaseException:
            self.stop(started)
            raise

    def _wait_listening(self, node: LocalNode, deadline: float, timeout_s: float) -> None:
        """Until the node logs that it listens (its INFO line), exits, or `deadline` passes."""
        listening = f" listening on {node.address}"
        while listening not in self._log_since_start(node):
            if not self.running(node):
                # Read again: what it wrote just before exiting may not have been there.
                said = _last_line(self._log_since_start(node))
                raise LocalClusterError(f"{node.name} exited: {said}")
            if time.monotonic() > deadline:
                raise LocalClusterError(
                    f"{node.name} was not listening on {node.address} after {timeout_s:g} s"
                )
            time.sleep(0.05)

    def _log_since_start(self, node: LocalNode) -> str:
        with self.log_file(node).open("rb") as log:
            log.seek(self._log_starts.get(node.name, 0))
            return log.read().decode(errors="replace")

    def wait_stopped(self, node: LocalNode, timeout_s: float = 10.0) -> None:
        """Signals take effect asynchronously: wait until the process is really gone."""
        deadline = time.monotonic() + timeout_s
        while self.running(node):
            if time.monotonic() > deadline:
                raise LocalClusterError(f"{node.name} (pid {node.pid}) did not stop")
            time.sleep(0.02)

    def stop(self, nodes: Sequence[LocalNode], grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM `nodes` (a leader hands over), then SIGKILL what is left after `grace_s`."""
        for node in nodes:
            self.kill(node, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(self.running(n) for n in nodes):
            time.sleep(0.05)
        for node in nodes:
            self.kill(node, signal.SIGKILL)
            self.wait_stopped(node)
            node.pid = 0
        self.save()

    def stop_all(self, grace_s: float = STOP_GRACE_S) -> None:
        self.stop(self.nodes, grace_s)


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


def _check_folder(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise LocalClusterError(f"{folder} is a file, not a folder")


def _last_line(log: str) -> str:
    """What a node said last: `quicraft node` ends with its error, or a traceback with the
    exception."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    if not lines:
        return "it said nothing"
    return lines[-1].removeprefix("quicraft: error: ")


def _is_quicraft(pid: int) -> bool:
    """Guards against a recycled pid: only signal a process that runs a quicraft node."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc here: trust the pid
    return b"quicraft" in cmdline
