"""Where a nemesis run's three nodes live, and what it can do to them (nemesis.py).

- LoopbackNodes: processes on 127.0.0.1 (the harness's LocalCluster). Crashes and pauses only:
  on one loopback interface two nodes cannot be parted.
- LanNodes: each node in a host namespace of a Lan that the caller made (tests/netns), so the
  run can also cut the network between two of them, one way or both, with a routing rule in
  the receiver's namespace. The run itself must be inside the same Lan (another host), since
  the Lan is not reachable from the machine's own namespace.

Every process is stopped by its pid (stop()), whatever happened.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from cluster_harness import Cluster

from quicraft.client import Client, MgmtClient, connect, connect_mgmt
from quicraft.transport import Role, init_cluster, issue

CLUSTER = "t1"
SIZE = 3


class Nodes:
    """Three node processes, numbered 1 to 3, and how to reach them."""

    certs: Path
    partitionable = False

    def address(self, number: int) -> str:
        raise NotImplementedError

    def start(self, number: int) -> None:
        raise NotImplementedError

    def signal(self, number: int, sig: int) -> None:
        raise NotImplementedError

    def running(self, number: int) -> bool:
        raise NotImplementedError

    def log(self, number: int) -> str:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def cut(self, source: int, target: int) -> None:
        """Drop every datagram `source` sends to `target`."""
        raise NotImplementedError

    def mend(self) -> None:
        """Undo every cut."""

    def numbers(self) -> list[int]:
        return list(range(1, SIZE + 1))

    def client(self, *numbers: int, timeout: float) -> Client:
        addresses = [self.address(n) for n in numbers or self.numbers()]
        return connect(addresses, CLUSTER, self.certs, "admin", timeout=timeout)

    def mgmt(self, *numbers: int, timeout: float) -> MgmtClient:
        addresses = [self.address(n) for n in numbers or self.numbers()]
        return connect_mgmt(addresses, CLUSTER, self.certs, timeout=timeout, follow_leader=False)


class LoopbackNodes(Nodes):
    def __init__(self, folder: Path, extra: list[str]):
        self.cluster = Cluster(folder)
        self.cluster.extra = extra
        self.local = self.cluster.local
        self.certs = self.local.certs

    def address(self, number: int) -> str:
        return self.local.node(number).address

    def start(self, number: int) -> None:
        self.cluster.start(number)

    def signal(self, number: int, sig: int) -> None:
        self.local.kill(self.local.node(number), sig)

    def running(self, number: int) -> bool:
        return self.local.running(self.local.node(number))

    def log(self, number: int) -> str:
        return self.cluster.log(number)

    def stop(self) -> None:
        self.cluster.stop()


class LanNodes(Nodes):
    """Node I in namespace `{tag}h{I}` at 10.77.0.I (the Lan's layout, tests/netns)."""

    PORT = 7400
    partitionable = True

    def __init__(self, folder: Path, tag: str, extra: list[str]):
        self.folder = folder
        self.tag = tag
        self.extra = extra
        self.certs = folder / "certs"
        init_cluster(self.certs, CLUSTER)
        for number in self.numbers():
            issue(self.certs, CLUSTER, f"n{number}", Role.NODE)
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self.cuts: set[tuple[int, int]] = set()

    def address(self, number: int) -> str:
        return f"10.77.0.{number}:{self.PORT}"

    def _netns(self, number: int) -> str:
        return f"{self.tag}h{number}"

    def start(self, number: int) -> None:
        peers = ",".join(self.address(n) for n in self.numbers() if n != number)
        data = self.folder / f"n{number}"
        data.mkdir(parents=True, exist_ok=True)
        argv = [
            "ip", "netns", "exec", self._netns(number),  # it execs: the pid is the node's
            sys.executable, "-m", "quicraft.cli", "node",
            "--cluster", CLUSTER, "--name", f"n{number}",
            "--listen", self.address(number), "--peers", peers, "--no-mdns",
            "--data", str(data / "data"), "--certs", str(self.certs), "--preset", "test",
            *self.extra,
        ]  # fmt: skip
        with (data / "node.log").open("ab") as log:
            self.processes[number] = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )

    def signal(self, number: int, sig: int) -> None:
        if self.running(number):
            self.processes[number].send_signal(sig)

    def running(self, number: int) -> bool:
        process = self.processes.get(number)
        return process is not None and process.poll() is None

    def log(self, number: int) -> str:
        return (self.folder / f"n{number}" / "node.log").read_text(errors="replace")

    def stop(self) -> None:
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

    def _host(self, number: int) -> str:
        return self.address(number).rpartition(":")[0]

    def _ip(self, number: int, *args: str) -> None:
        argv = ["ip", "-n", self._netns(number), *args]
        subprocess.run(argv, check=True, capture_output=True, timeout=30)
