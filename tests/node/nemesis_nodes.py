"""Where a nemesis run's three nodes live, and what it can do to them (nemesis.py).

- LoopbackNodes: processes on 127.0.0.1 (the harness's LocalCluster). Crashes and pauses only:
  on one loopback interface two nodes cannot be parted.
- LanNodes: each node in a host namespace of a Lan that the caller made (tests/netns), so the
  run can also cut the network between two of them, one way or both, with a routing rule in
  the receiver's namespace. The run itself must be inside the same Lan (another host), since
  the Lan is not reachable from the machine's own namespace.

With `disks`, every data directory is a tmpfs of its own (small_disks.py, root only) that
fill() leaves without room, for a node to find its disk full.

Every process is stopped by its pid (stop()), whatever happened, and every tmpfs unmounted.
"""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
from pathlib import Path

import small_disks
from cluster_harness import Cluster

from quicraft.client import Client, MgmtClient, connect, connect_mgmt
from quicraft.transport import Role, init_cluster, issue, load_identity

CLUSTER = "t1"
SIZE = 3
#: A data directory's room while not filled: more than any run writes (tmpfs takes memory
#: only for what is written).
DISK_ROOM = 1 << 30


class Nodes:
    """Three node processes, numbered 1 to 3, and how to reach them. A number keeps its
    address for the whole run; renew() gives it a new identity. Node NAME logs to
    `folder/NAME/node.log`."""

    partitionable = False

    def __init__(self, folder: Path, certs: Path, extra: list[str], disks: bool):
        self.folder = folder
        self.certs = certs
        self.extra = extra  #: flags for every node
        self.disks = disks
        self.renewed: set[int] = set()  #: started with --no-bootstrap
        self._renewals = itertools.count(1)
        self._mounted: list[Path] = []

    def numbers(self) -> list[int]:
        return list(range(1, SIZE + 1))

    def address(self, number: int) -> str:
        raise NotImplementedError

    def name(self, number: int) -> str:
        raise NotImplementedError

    def node_id(self, number: int) -> str:
        """The Raft id of the node's current identity (a fingerprint of its key)."""
        return load_identity(self.certs, CLUSTER, self.name(number)).node_id

    def renew(self, number: int) -> None:
        """Node `number` is next started as a new member: a new name and key, no data, and
        --no-bootstrap (it waits to be added)."""
        raise NotImplementedError

    def start(self, number: int) -> None:
        raise NotImplementedError

    def signal(self, number: int, sig: int) -> None:
        raise NotImplementedError

    def running(self, number: int) -> bool:
        raise NotImplementedError

    def stop(self) -> None:
        try:
            self._stop_processes()
        finally:
            for path in self._mounted:
                small_disks.unmount(path)
            self._mounted.clear()

    def _stop_processes(self) -> None:
        raise NotImplementedError

    def data(self, number: int) -> Path:
        """The data directory of the node's current identity."""
        return self.folder / self.name(number) / "data"

    def fill(self, number: int) -> None:
        """Leave the node's disk no room: its next write fails (needs `disks`)."""
        small_disks.fill(self.data(number))

    def unfill(self, number: int) -> None:
        small_disks.resize(self.data(number), DISK_ROOM)

    def _prepare(self, number: int) -> None:
        """Before a start: the data directory of a new identity gets its tmpfs."""
        path = self.data(number)
        if self.disks and path not in self._mounted:
            small_disks.mount(path, DISK_ROOM)
            self._mounted.append(path)

    def cut(self, source: int, target: int) -> None:
        """Drop every datagram `source` sends to `target`."""
        raise NotImplementedError

    def mend(self) -> None:
        """Undo every cut."""

    def log(self, number: int) -> str:
        """The log of the node's current identity."""
        return (self.folder / self.name(number) / "node.log").read_text(errors="replace")

    def logs(self) -> dict[str, str]:
        """Every log, by node name, of every identity the run gave a node."""
        found = sorted(self.folder.glob("*/node.log"))
        return {path.parent.name: path.read_text(errors="replace") for path in found}

    def client(self, *numbers: int, timeout: float) -> Client:
        addresses = [self.address(n) for n in numbers or self.numbers()]
        return connect(addresses, CLUSTER, self.certs, "admin", timeout=timeout)

    def mgmt(self, *numbers: int, timeout: float, follow: bool = False) -> MgmtClient:
        addresses = [self.address(n) for n in numbers or self.numbers()]
        return connect_mgmt(addresses, CLUSTER, self.certs, timeout=timeout, follow_leader=follow)

    def _flags(self, number: int) -> list[str]:
        return self.extra + (["--no-bootstrap"] if number in self.renewed else [])

    def _new_identity(self, number: int) -> str:
        name = f"n{number}r{next(self._renewals)}"
        issue(self.certs, CLUSTER, name, Role.NODE)
        self.renewed.add(number)
        return name


class LoopbackNodes(Nodes):
    def __init__(self, folder: Path, extra: list[str], disks: bool = False):
        self.cluster = Cluster(folder)
        self.local = self.cluster.local
        super().__init__(self.local.folder, self.local.certs, extra, disks)

    def address(self, number: int) -> str:
        return self.local.node(number).address

    def name(self, number: int) -> str:
        return self.local.node(number).name

    def renew(self, number: int) -> None:
        self.local.node(number).name = self._new_identity(number)

    def start(self, number: int) -> None:
        self._prepare(number)
        self.local.start(self.local.node(number), self._flags(number))

    def signal(self, number: int, sig: int) -> None:
        self.local.kill(self.local.node(number), sig)

    def running(self, number: int) -> bool:
        return self.local.running(self.local.node(number))

    def _stop_processes(self) -> None:
        self.cluster.stop()


class LanNodes(Nodes):
    """Node I in namespace `{tag}-h{I}` at 10.77.0.I (the Lan's layout, tests/netns)."""

    PORT = 7400
    partitionable = True

    def __init__(self, folder: Path, tag: str, extra: list[str], disks: bool = False):
        super().__init__(folder, folder / "certs", extra, disks)
        self.tag = tag
        init_cluster(self.certs, CLUSTER)
        for number in self.numbers():
            issue(self.certs, CLUSTER, f"n{number}", Role.NODE)
        self.names = {number: f"n{number}" for number in self.numbers()}
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self.cuts: set[tuple[int, int]] = set()

    def address(self, number: int) -> str:
        return f"{self._host(number)}:{self.PORT}"

    def _host(self, number: int) -> str:
        return f"10.77.0.{number}"

    def _netns(self, number: int) -> str:
        return f"{self.tag}-h{number}"

    def name(self, number: int) -> str:
        return self.names[number]

    def renew(self, number: int) -> None:
        self.names[number] = self._new_identity(number)

    def start(self, number: int) -> None:
        peers = ",".join(self.address(n) for n in self.numbers() if n != number)
        folder = self.folder / self.name(number)
        folder.mkdir(parents=True, exist_ok=True)
        self._prepare(number)
        argv = [
            "ip", "netns", "exec", self._netns(number),  # it execs: the pid is the node's
            sys.executable, "-m", "quicraft.cli", "node",
            "--cluster", CLUSTER, "--name", self.name(number),
            "--listen", self.address(number), "--peers", peers, "--no-mdns",
            "--data", str(self.data(number)), "--certs", str(self.certs), "--preset", "test",
            *self._flags(number),
        ]  # fmt: skip
        with (folder / "node.log").open("ab") as log:
            self.processes[number] = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )

    def signal(self, number: int, sig: int) -> None:
        if self.running(number):
            self.processes[number].send_signal(sig)

    def running(self, number: int) -> bool:
        process = self.processes.get(number)
        return process is not None and process.poll() is None

    def _stop_processes(self) -> None:
        for number in self.processes:
            self.signal(number, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.mend()

    def cut(self, source: int, target: int) -> None:
        """The target drops, silently as a lost link does, every datagram from the source:
        a policy rule ahead of the local table's (moved back for it on first use)."""
        if target not in {t for _, t in self.cuts}:
            self._ip(target, "rule", "add", "pref", "100", "lookup", "local")
            self._ip(target, "rule", "del", "pref", "0")
        self._ip(target, "rule", "add", "pref", "50", "from", self._host(source), "blackhole")
        self.cuts.add((source, target))

    def mend(self) -> None:
        for source, target in sorted(self.cuts):
            self._ip(target, "rule", "del", "pref", "50", "from", self._host(source), "blackhole")
        for target in sorted({t for _, t in self.cuts}):
            self._ip(target, "rule", "add", "pref", "0", "lookup", "local")
            self._ip(target, "rule", "del", "pref", "100")
        self.cuts.clear()

    def _ip(self, number: int, *args: str) -> None:
        argv = ["ip", "-n", self._netns(number), *args]
        subprocess.run(argv, check=True, capture_output=True, timeout=30)
