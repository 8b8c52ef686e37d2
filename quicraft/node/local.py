"""A development cluster of N node processes on loopback, kept under one folder.

    FOLDER/cluster.json   cluster name, preset, whether `create` made FOLDER, and per node:
                          name, port, pid and the process's start time
    FOLDER/certs/         the cluster's CA and every node's key
    FOLDER/nI/            node I's data directory and its log (node.log)

`quicraft local` and `quicraft bench --local` both use this. Processes are started in their
own session, so they outlive the command that started them until `stop`.

A pid in cluster.json may be stale (the node exited, the machine rebooted) and reused by any
process, and a copied folder names the original's processes: a pid counts as a node of this
folder only if /proc shows a process that started when that node did and whose command line
names the node's data directory in this folder. Nothing else is ever signalled.

Messages here say what is wrong; the command that calls this adds how to go on.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from quicraft.node.settings import PRESETS
from quicraft.transport import IdentityError, Role, check_name, init_cluster, issue
from quicraft.transport.address import format_address

STATE_FILE = "cluster.json"
#: The largest pid_t.
MAX_PID = 2**31 - 1

#: How long `start_nodes` waits for a node to listen: a node takes a second or two (mostly
#: imports), more on a busy machine.
LISTEN_WAIT_S = 30.0

#: How long a node must keep running after it listens for `start_nodes` to call it started:
#: a node listens before it meets its peers, and one they refuse (its data was lost, say) exits
#: a moment later (on loopback, tens of milliseconds after).
SETTLE_S = 1.0

#: How long `stop` waits for a node to exit after SIGTERM (a leader hands over first).
STOP_GRACE_S = 10.0

#: How much of a log `log_tail` reads at a time, from its end.
LOG_BLOCK = 64 * 1024


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
    #: 0 when stopped.
    pid: int = 0
    #: When the process started: field 22 of /proc/PID/stat, in clock ticks after boot; 0 when
    #: stopped, or unknown (a cluster.json written before this was recorded).
    start_time: int = 0

    @property
    def address(self) -> str:
        return format_address(("127.0.0.1", self.port))


@dataclass(slots=True)
class LocalCluster:
    folder: Path
    cluster: str
    preset: str
    nodes: list[LocalNode]
    #: Whether `create` made the folder, so that `delete` may remove it.
    made_folder: bool = False
    #: Where each node's log stood when `start` last started it (not saved).
    _log_starts: dict[str, int] = field(default_factory=dict, repr=False, compare=False)
    #: Pids of the processes this object started and has not reaped (not saved).
    _children: set[int] = field(default_factory=set, repr=False, compare=False)

    # -- the folder ------------------------------------------------------------------------

    @classmethod
    def create(
        cls, folder: Path, size: int, cluster: str, preset: str, base_port: int
    ) -> LocalCluster:
        """Make the folder (or take an empty one), the cluster's CA and a key per node. If this
        fails, what it made is removed again."""
        _check_folder(folder)
        if (folder / STATE_FILE).exists():
            raise LocalClusterError(f"{folder} already holds a local cluster")
        if folder.exists() and any(folder.iterdir()):
            raise LocalClusterError(f"{folder} holds other files; give an empty or new folder")
        if not 1 <= size <= 9:
            raise LocalClusterError("a local cluster has 1 to 9 nodes")
        made_folder = not folder.exists()
        folder.mkdir(parents=True, exist_ok=True)
        nodes = [LocalNode(f"n{i}", base_port + i) for i in range(1, size + 1)]
        made = cls(folder, cluster, preset, nodes, made_folder)
        certs = made.certs
        try:
            init_cluster(certs, cluster)
            for node in nodes:
                issue(certs, cluster, node.name, Role.NODE)
            made.save()
        except BaseException:
            # The folder was new or empty: all of certs/ is ours (the cluster name may be bad,
            # so build no path from it).
            shutil.rmtree(certs, ignore_errors=True)
            for name in (STATE_FILE, STATE_FILE + ".tmp"):
                (folder / name).unlink(missing_ok=True)
            if made_folder:
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise
        return made

    @classmethod
    def load(cls, folder: Path) -> LocalCluster:
        _check_folder(folder)
        try:
            raw = json.loads((folder / STATE_FILE).read_text())
            return _parse(folder, raw)
        except FileNotFoundError:
            raise NoLocalCluster(f"no local cluster in {folder}") from None
        except ValueError as err:
            raise LocalClusterError(f"{folder / STATE_FILE} is unreadable: {err}") from None
        except OSError as err:  # a directory there, say: it said "[Errno 21] Is a directory"
            why = err.strerror or str(err)
            raise LocalClusterError(f"{folder / STATE_FILE} is unreadable: {why}") from None

    def save(self) -> None:
        raw = {
            "cluster": self.cluster,
            "preset": self.preset,
            "made_folder": self.made_folder,
            "nodes": [asdict(n) for n in self.nodes],
        }
        tmp = self.folder / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(raw, indent=2))
        tmp.replace(self.folder / STATE_FILE)

    def delete(self) -> None:
        """Delete the cluster's keys, its nodes' data and logs and its state, then certs/ if
        nothing else is in it, and the folder if `create` made it and nothing else is in it:
        whatever else a user keeps there stays."""
        shutil.rmtree(self.certs / self.cluster, ignore_errors=True)
        for node in self.nodes:
            shutil.rmtree(self.folder / node.name, ignore_errors=True)
        for name in (STATE_FILE, STATE_FILE + ".tmp"):
            (self.folder / name).unlink(missing_ok=True)
        empty = [self.certs, self.folder] if self.made_folder else [self.certs]
        for folder in empty:
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

    def log_tail(self, node: LocalNode, count: int) -> list[str]:
        """The last `count` lines of the node's log, none if it has no log. Read from the end:
        a log grows over every start of its node, and may be larger than memory."""
        try:
            log = self.log_file(node).open("rb")
        except FileNotFoundError:
            return []
        with log:
            start = log.seek(0, os.SEEK_END)
            blocks: list[bytes] = []
            newlines = 0
            # One newline more than `count`: the line before the first kept may be cut.
            while start > 0 and newlines <= count:
                size = min(start, LOG_BLOCK)
                start -= size
                log.seek(start)
                blocks.append(log.read(size))
                newlines += blocks[-1].count(b"\n")
        text = b"".join(reversed(blocks)).decode(errors="replace")
        return text.splitlines()[-count:]

    def data_dir(self, node: LocalNode) -> Path:
        """Absolute, so that a node's command line names this folder wherever it is run."""
        return self.folder.resolve() / node.name / "data"

    # -- processes -------------------------------------------------------------------------

    def command(self, node: LocalNode, extra: list[str] | None = None) -> list[str]:
        peers = ",".join(n.address for n in self.nodes if n is not node)
        argv = [
            sys.executable, "-m", "quicraft.cli", "node",
            "--cluster", self.cluster,
            "--name", node.name,
            "--listen", node.address,
            "--data", str(self.data_dir(node)),
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
        with self.log_file(node).open("ab") as log, _ctrl_c_after():
            self._log_starts[node.name] = log.tell()
            process = subprocess.Popen(
                self.command(node, extra),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self._children.add(process.pid)
            node.pid = process.pid
            node.start_time = _start_time(process.pid) or 0
            self.save()
            # The Popen object is finalized here, not on return: a KeyboardInterrupt raised
            # inside a finalizer (its "still running" warning) is printed and dropped, and
            # the Ctrl-C with it; held here, it is raised when the block ends.
            del process

    def running(self, node: LocalNode) -> bool:
        """Whether node.pid is that node's process and has not exited (see the module's
        docstring); a process /proc does not show is not."""
        if node.pid <= 0:
            return False
        if node.pid in self._children:
            # Started here and not reaped, so the pid is not recycled; /proc would not do here:
            # while the child is still exec-ing the node, its command line reads as empty.
            try:
                waited, _ = os.waitpid(node.pid, os.WNOHANG)  # reap it if it exited
            except ChildProcessError:
                self._children.discard(node.pid)  # reaped elsewhere: ask /proc below
            else:
                if waited != node.pid:
                    return True
                self._children.discard(node.pid)
                return False
        argv = _command_line(node.pid)
        started = _start_time(node.pid)  # read second: a pid reused in between fails this
        if argv is None or started is None:
            return False
        if node.start_time and started != node.start_time:
            return False
        data = ["--data", str(self.data_dir(node))]
        return any(argv[i : i + 2] == data for i in range(len(argv) - 1))

    def kill(self, node: LocalNode, sig: int = signal.SIGKILL) -> None:
        if self.running(node):
            os.kill(node.pid, sig)

    def start_nodes(
        self,
        nodes: Sequence[LocalNode],
        extra: list[str] | None = None,
        timeout_s: float = LISTEN_WAIT_S,
    ) -> None:
        """Start `nodes` and wait until each listens and then still runs `SETTLE_S` later.
        If one exits first (its port is taken, or its peers refuse it), or does not listen
        within `timeout_s`, stop those this call started and raise LocalClusterError with
        what that node said last."""
        before = {node.name: node.pid for node in nodes}
        try:
            for node in nodes:
                self.start(node, extra)
            deadline = time.monotonic() + timeout_s
            for node in nodes:
                self._wait_listening(node, deadline, timeout_s)
            self._check_still_running(nodes, SETTLE_S)
        except BaseException:
            # By pid, not by start() having returned: a Ctrl-C while start() saved its state
            # left a node running that nothing stopped.
            self.stop([node for node in nodes if node.pid != before[node.name]])
            raise

    def _wait_listening(self, node: LocalNode, deadline: float, timeout_s: float) -> None:
        """Until the node logs that it listens (its INFO line), exits, or `deadline` passes."""
        listening = f" listening on {node.address}"
        while listening not in self._log_since_start(node):
            if not self.running(node):
                raise self._exited(node)
            if time.monotonic() > deadline:
                raise LocalClusterError(
                    f"{node.name} was not listening on {node.address} after {timeout_s:g} s"
                )
            time.sleep(0.05)

    def _check_still_running(self, nodes: Sequence[LocalNode], settle_s: float) -> None:
        """Raise for the first of `nodes` to exit within `settle_s`."""
        until = time.monotonic() + settle_s
        while True:
            for node in nodes:
                if not self.running(node):
                    raise self._exited(node)
            if time.monotonic() >= until:
                return
            time.sleep(0.05)

    def _exited(self, node: LocalNode) -> LocalClusterError:
        # Read the log once it has exited: what it wrote just before may not have been there.
        return LocalClusterError(f"{node.name} exited: {_last_line(self._log_since_start(node))}")

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

    def stop(self, nodes: Sequence[LocalNode], grace_s: float = STOP_GRACE_S) -> list[LocalNode]:
        """SIGTERM `nodes` (a leader hands over), then SIGKILL what is left after `grace_s`;
        returns those it had to SIGKILL."""
        for node in nodes:
            self.kill(node, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(self.running(n) for n in nodes):
            time.sleep(0.05)
        killed = [node for node in nodes if self.running(node)]
        for node in nodes:
            self.kill(node, signal.SIGKILL)
            self.wait_stopped(node)
            node.pid = node.start_time = 0
        self.save()
        return killed

    def stop_all(self, grace_s: float = STOP_GRACE_S) -> list[LocalNode]:
        return self.stop(self.nodes, grace_s)


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time a running process has used (all its threads), from /proc;
    None where there is no /proc or no such process."""
    fields = _stat(pid)
    if fields is None:
        return None
    # utime and stime, counted in clock ticks
    return (int(fields[14]) + int(fields[15])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds_of(pids: Mapping[str, int]) -> dict[str, float]:
    """cpu_seconds of each named process, leaving out those it cannot read."""
    found = {name: cpu_seconds(pid) for name, pid in pids.items()}
    return {name: seconds for name, seconds in found.items() if seconds is not None}


@contextlib.contextmanager
def _ctrl_c_after() -> Iterator[None]:
    """Hold a Ctrl-C (KeyboardInterrupt) that comes inside until the block is done: a process
    started there is then recorded, so that whoever catches the interrupt can stop it (one
    interrupted inside Popen, or before its pid was saved, was left running). Only where
    Python's own handler is in place, in the main thread."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    held: list[int] = []
    signal.signal(signal.SIGINT, lambda number, _: held.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if held:
        raise KeyboardInterrupt


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


def _stat(pid: int) -> dict[int, str] | None:
    """The fields of /proc/PID/stat from field 3 on, by their numbers in proc(5); None where
    there is no /proc or no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces or parentheses itself.
    return dict(enumerate(stat.rpartition(")")[2].split(), start=3))


def _start_time(pid: int) -> int | None:
    fields = _stat(pid)
    return None if fields is None else int(fields[22])


def _command_line(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [os.fsdecode(arg) for arg in raw.split(b"\0")]  # as our own paths hold bytes


# -- cluster.json ------------------------------------------------------------------------------


def _parse(folder: Path, raw: object) -> LocalCluster:
    """A LocalCluster from cluster.json's content; ValueError says what is wrong with it.
    Names become paths that `delete` removes: they must be what `create` makes."""
    top = _fields(raw, "", {"cluster", "preset", "nodes"}, {"made_folder"})
    cluster, preset, made_folder = top["cluster"], top["preset"], top.get("made_folder", False)
    if not isinstance(cluster, str):
        raise ValueError(f"cluster must be a name, not {_shown(cluster)}")
    try:
        check_name(cluster, "cluster name")
    except IdentityError as err:
        raise ValueError(str(err)) from None
    if not isinstance(preset, str) or preset not in PRESETS:
        raise ValueError(
            f"preset must be one of {', '.join(sorted(PRESETS))}, not {_shown(preset)}"
        )
    if not isinstance(made_folder, bool):
        raise ValueError(f"made_folder must be true or false, not {_shown(made_folder)}")
    listed = top["nodes"]
    if not isinstance(listed, list) or not 1 <= len(listed) <= 9:
        raise ValueError("nodes must be a list of 1 to 9 nodes")
    nodes = []
    for number, entry in enumerate(listed, start=1):
        name = f"n{number}"
        fields = _fields(entry, f"node {name}: ", {"name", "port", "pid"}, {"start_time"})
        if fields["name"] != name:
            raise ValueError(f'node {name}: name must be "{name}", not {_shown(fields["name"])}')
        port = _whole(fields["port"], f"node {name}: port", 1, 65535)
        pid = _whole(fields["pid"], f"node {name}: pid", 0, MAX_PID)
        start_time = _whole(fields.get("start_time", 0), f"node {name}: start_time", 0, 2**64 - 1)
        nodes.append(LocalNode(name, port, pid, start_time))
    return LocalCluster(folder, cluster, preset, nodes, made_folder)


def _fields(raw: object, where: str, required: set[str], optional: set[str]) -> dict[str, object]:
    """`raw` as a JSON object with the `required` keys, and others only from `optional`."""
    if not isinstance(raw, dict):
        raise ValueError(f"{where}not a JSON object")
    missing, unknown = sorted(required - raw.keys()), sorted(raw.keys() - required - optional)
    if missing:
        raise ValueError(f"{where}{missing[0]} is missing")
    if unknown:
        raise ValueError(f"{where}unknown field {_shown(unknown[0])}")
    return raw


def _whole(value: object, what: str, low: int, high: int) -> int:
    # bool is an int in Python, but true is not a pid.
    if type(value) is not int or not low <= value <= high:
        raise ValueError(f"{what} must be a whole number from {low} to {high}, not {_shown(value)}")
    return value


def _shown(value: object) -> str:
    """A value as cluster.json has it, cut short."""
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."
