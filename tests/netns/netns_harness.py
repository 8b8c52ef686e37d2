"""A LAN made of Linux network namespaces, for tests: hosts on one bridge, and nothing of it on
the machine's real network.

Layout, for a LAN of N hosts (TAG is "qr" + this process's pid in base 36 + "-" + a counter in
base 36, e.g. "qr2n9c-0", so names are unique per test run and per xdist worker, and the pid that
made a namespace can be read back from its name):

    TAG-b     a namespace holding the bridge br0 (multicast snooping off: it floods mDNS) and,
              for each host i, the port vh<i>
    TAG-h<i>  host i: lo up, and eth0 (the other end of vh<i>) with 10.77.0.<i>/24 and a route
              for 224.0.0.0/4, so multicast such as mDNS (224.0.0.251:5353) goes out on eth0

Rules:

- Nothing is created in the root namespace, not even for a moment: each veth pair is created
  with its two ends already in their namespaces (`ip link add vh1 netns TAG-b type veth peer
  name eth0 netns TAG-h1`), so interface names (at most 15 characters) only need to be unique
  inside one namespace; they do not contain TAG.
- A Lan removes all it made in close(): first the processes it started (by pid: SIGTERM, then
  SIGKILL), then any process left in its namespaces (they can only be ours), then the
  namespaces. close() never raises, and the fixtures call it even when the test failed.
- What a test process that died without teardown (SIGKILL, a crash) left is removed when the
  next Lan is made: a namespace whose whole name is ours (`qr<pid>-<counter>-<role>`, see
  owner_pid) and whose pid no longer runs (no /proc/<pid>) is stale: its processes are killed,
  then it is deleted. No other namespace is ever touched; one whose pid was since reused by a
  running process is left until that process ends. (Pids are those of this pid namespace: test
  runs in containers sharing /run/netns with separate pid namespaces are not supported.)
- A SIGTERM to pytest unwinds it as Ctrl-C does (tests/conftest.py), so the fixtures' teardown
  runs then too.
- Where namespaces cannot be made (not root, no iproute2, a kernel or container that refuses),
  the test is skipped with the reason.
- Waits poll with deadlines; nothing sleeps for a fixed long time.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

SUBNET = "10.77.0"
PREFIX = 24
MDNS_GROUP = "224.0.0.251"
MDNS_PORT = 5353
_counter = itertools.count()
_probe: str | None = None  # "" once namespaces are known to work, else why they do not


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if not n:
            return out


def new_tag() -> str:
    return f"qr{_base36(os.getpid())}-{_base36(next(_counter))}"


#: Every namespace name we make: TAG, then "-" and the role: b (bridge), h<i> (host), p or q
#: (the probe of _why_not). Base 36 without leading zeros, as _base36 writes it.
_OUR_NAME = re.compile(r"qr([1-9a-z][0-9a-z]*)-(?:0|[1-9a-z][0-9a-z]*)-(?:b|h[1-9][0-9]*|p|q)")


def owner_pid(name: str) -> int | None:
    """The pid of the test process that made namespace `name`, or None if it is not ours."""
    match = _OUR_NAME.fullmatch(name)
    return int(match[1], 36) if match else None


def stale_namespaces(names: Iterable[str], running: Callable[[int], bool]) -> list[str]:
    """Those of `names` that are ours and whose maker no longer runs."""
    return [name for name in names if (pid := owner_pid(name)) is not None and not running(pid)]


def _running(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def list_namespaces() -> list[str]:
    # Lines are "NAME" or "NAME (id: N)".
    return [line.split()[0] for line in ip("netns", "list").stdout.splitlines() if line.strip()]


def remove_stale_namespaces() -> list[str]:
    """Remove what test processes that died without teardown left; returns the names removed."""
    stale = stale_namespaces(list_namespaces(), _running)
    for name in stale:
        remove_namespace(name)
    return stale


def remove_namespace(name: str) -> None:
    """Kill every process left in namespace `name` (by pid), then delete it; failures of `ip`
    (e.g. the namespace is already gone) are ignored."""
    for pid in ip("netns", "pids", name, check=False).stdout.split():
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    ip("netns", "del", name, check=False)


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


def require_netns() -> None:
    """Skip the calling test unless this process can make namespaces, bridges and veths."""
    global _probe
    if _probe is None:
        _probe = _why_not()
    if _probe:
        pytest.skip(_probe)


def _why_not() -> str:
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "making network namespaces needs root (CI runs the tests as root)"
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    tag = new_tag()
    p, q = f"{tag}-p", f"{tag}-q"
    # Both are deleted whatever happens, even an interrupt while `ip netns add` runs (the
    # namespace may exist by then); deleting one that was never made does nothing.
    try:
        try:
            ip("netns", "add", p)
        except RuntimeError as err:
            return f"cannot make a network namespace: {err}"
        ip("netns", "add", q)
        ip("-n", p, "link", "add", "br0", "type", "bridge")
        ip("link", "add", "v0", "netns", p, "type", "veth", "peer", "name", "v1", "netns", q)
    except RuntimeError as err:
        return f"cannot make a bridge or veth pair in a namespace: {err}"
    finally:
        ip("netns", "del", p, check=False)
        ip("netns", "del", q, check=False)
    return ""


@dataclass(eq=False)  # hashable by identity: tests key their processes by host
class Host:
    index: int
    netns: str
    address: str
    interface: str = "eth0"
    #: The bridge port of this host's cable, in the bridge namespace.
    port: str = ""


@dataclass
class HostProcess:
    """A long-running process inside a host's namespace; stdout is collected line by line
    (JSON lines are parsed), stderr goes to a file."""

    host: Host
    argv: list[str]
    popen: subprocess.Popen[str]
    stderr_path: Path
    lines: list[Any] = field(default_factory=list)
    _changed: threading.Condition = field(default_factory=threading.Condition)
    _eof: bool = False

    def __post_init__(self) -> None:
        threading.Thread(target=self._read, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            try:
                item: Any = json.loads(line)
            except ValueError:
                item = {"raw": line.rstrip("\n")}
            with self._changed:
                self.lines.append(item)
                self._changed.notify_all()
        with self._changed:
            self._eof = True
            self._changed.notify_all()

    def output(self) -> list[Any]:
        with self._changed:
            return list(self.lines)

    def wait_for(self, predicate: Callable[[Any], bool], timeout: float = 20) -> Any:
        """The first output line (parsed) that satisfies `predicate`; waits up to `timeout`."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for item in self.lines:
                    if predicate(item):
                        return item
                left = deadline - time.monotonic()
                if left <= 0 or self._eof:
                    break
                self._changed.wait(min(left, 0.2))
        raise AssertionError(
            f"host {self.host.index} ({' '.join(self.argv[:2])}…): no matching line within "
            f"{timeout} s; exit code {self.popen.poll()}\n{self.describe()}"
        )

    def wait_for_stderr(self, text: str, timeout: float = 20) -> None:
        """Until `text` appears in what the process wrote to stderr (its log)."""
        deadline = time.monotonic() + timeout
        while text not in self.stderr_path.read_text(errors="replace"):
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not logged within {timeout} s\n{self.describe()}")
            time.sleep(0.1)

    def describe(self) -> str:
        err = self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""
        out = "\n".join(json.dumps(line) for line in self.output()[-40:])
        return f"--- stdout (last 40) ---\n{out}\n--- stderr (last 4000 chars) ---\n{err[-4000:]}"

    def send_signal(self, sig: int) -> None:
        """Send `sig` to it by its pid (if it still runs)."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, sig)

    def stop(self, grace_s: float = 5.0, sig: int = signal.SIGTERM) -> int:
        """Stop it by its pid: `sig`, then SIGKILL after `grace_s`; returns the exit code."""
        self.send_signal(sig)
        try:
            self.popen.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.send_signal(signal.SIGKILL)
            self.popen.wait(timeout=10)
        return self.popen.returncode


class Lan:
    """N hosts on one bridge; see the module docstring. Make it with Lan.create (or the
    `lan_factory` fixture), and close() it."""

    def __init__(self, size: int, folder: Path):
        self.tag = new_tag()
        self.folder = folder
        self.bridge_ns = f"{self.tag}-b"
        self.hosts = [
            Host(i, f"{self.tag}-h{i}", f"{SUBNET}.{i}", port=f"vh{i}") for i in range(1, size + 1)
        ]
        self.processes: list[HostProcess] = []
        self._made: list[str] = []

    @classmethod
    def create(cls, size: int, folder: Path) -> Lan:
        require_netns()
        if not 1 <= size <= 200:
            raise ValueError("a Lan has 1 to 200 hosts")
        folder.mkdir(parents=True, exist_ok=True)
        remove_stale_namespaces()
        lan = cls(size, folder)
        try:
            lan._build()
        except BaseException:
            lan.close()
            raise
        return lan

    def _build(self) -> None:
        self._add_netns(self.bridge_ns)
        ip("-n", self.bridge_ns, "link", "set", "lo", "up")
        ip("-n", self.bridge_ns, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
        ip("-n", self.bridge_ns, "link", "set", "br0", "up")
        for host in self.hosts:
            self._add_netns(host.netns)
            ip("link", "add", host.port, "netns", self.bridge_ns, "type", "veth",
               "peer", "name", host.interface, "netns", host.netns)  # fmt: skip
            ip("-n", self.bridge_ns, "link", "set", host.port, "master", "br0", "up")
            ip("-n", host.netns, "link", "set", "lo", "up")
            ip("-n", host.netns, "addr", "add", f"{host.address}/{PREFIX}", "dev", host.interface)
            ip("-n", host.netns, "link", "set", host.interface, "up")
            # No default route in a host: without this one, multicast would have nowhere to go.
            ip("-n", host.netns, "route", "replace", "224.0.0.0/4", "dev", host.interface)

    def _add_netns(self, name: str) -> None:
        # Noted first: an interrupt while `ip netns add` runs may come after it made the
        # namespace, and close() must remove it then too. (Removing one never made does
        # nothing; the name is ours alone, see owner_pid.)
        self._made.append(name)
        ip("netns", "add", name)

    # -- commands and processes ------------------------------------------------------------

    def host(self, index: int) -> Host:
        return self.hosts[index - 1]

    def run(
        self, host: Host, *argv: str, timeout: float = 30, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in `host`'s namespace to completion."""
        result = subprocess.run(
            ["ip", "netns", "exec", host.netns, *argv],
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(
                f"host {host.index}: {' '.join(argv)} exited {result.returncode}\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result

    def start(self, host: Host, *argv: str) -> HostProcess:
        """Start a long-running command in `host`'s namespace (`ip netns exec` execs it, so the
        pid is the command's own). close() stops it if the test did not."""
        stderr_path = self.folder / f"h{host.index}-{len(self.processes)}.stderr"
        with stderr_path.open("w") as stderr:
            popen = subprocess.Popen(
                ["ip", "netns", "exec", host.netns, *argv],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr, text=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
        process = HostProcess(host, list(argv), popen, stderr_path)
        self.processes.append(process)
        return process

    def python(self, host: Host, *args: str) -> HostProcess:
        """Start this test run's Python in `host`'s namespace."""
        return self.start(host, sys.executable, *args)

    # -- the network -----------------------------------------------------------------------

    def link_down(self, host: Host) -> None:
        """Unplug the host's cable: its bridge port goes down, its eth0 loses carrier, and its
        addresses and routes stay as they were."""
        ip("-n", self.bridge_ns, "link", "set", host.port, "down")

    def link_up(self, host: Host) -> None:
        ip("-n", self.bridge_ns, "link", "set", host.port, "up")

    def set_address(self, host: Host, address: str) -> None:
        """Give the host a new address (its only one) on the LAN."""
        ip("-n", host.netns, "addr", "flush", "dev", host.interface)
        ip("-n", host.netns, "addr", "add", f"{address}/{PREFIX}", "dev", host.interface)
        ip("-n", host.netns, "route", "replace", "224.0.0.0/4", "dev", host.interface)
        host.address = address

    def ping(self, src: Host, dst: str, timeout: float = 3.0) -> bool:
        """Whether `src` gets an ICMP echo reply from `dst` within `timeout` (Python's raw
        sockets: the machine need not have ping installed)."""
        argv = [sys.executable, "-c", _PING, dst, str(timeout)]
        return self.run(src, *argv, timeout=timeout + 30, check=False).returncode == 0

    def multicast_reaches(self, src: Host, dst: Host, timeout: float = 5.0) -> bool:
        """Whether a datagram `src` sends to the mDNS group reaches a listener on `dst`."""
        return self._datagram_reaches(src, dst, MDNS_GROUP, timeout)

    def unicast_reaches(self, src: Host, dst: Host, timeout: float = 5.0) -> bool:
        """Whether a UDP datagram `src` sends to `dst`'s address reaches it (one way only,
        unlike ping, which needs the reply back too)."""
        return self._datagram_reaches(src, dst, dst.address, timeout)

    def _datagram_reaches(self, src: Host, dst: Host, target: str, timeout: float) -> bool:
        listener = self.python(dst, "-c", _MCAST_LISTEN, dst.address, str(timeout))
        try:
            listener.wait_for(lambda line: line == "ready", timeout=timeout + 10)
            self.run(src, sys.executable, "-c", _MCAST_SEND, src.address, target)
            got = listener.wait_for(lambda line: isinstance(line, dict), timeout=timeout + 10)
            return bool(got.get("from") == src.address)
        except AssertionError:
            return False
        finally:
            listener.stop()

    # -- teardown --------------------------------------------------------------------------

    def close(self) -> None:
        """Stop every process, then remove every namespace; never raises."""
        for process in self.processes:  # all at once: each may take a moment to say goodbye
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                process.stop(grace_s=5)
        for name in reversed(self._made):
            # Only processes of this test can be in these namespaces; stragglers (children of
            # the processes above) are killed by pid before the namespace goes.
            remove_namespace(name)
        self._made.clear()


@pytest.fixture
def lan_factory(tmp_path: Path) -> Iterator[Callable[[int], Lan]]:
    """make(n) -> a Lan of n hosts; every Lan made is closed after the test, pass or fail."""
    made: list[Lan] = []

    def make(size: int) -> Lan:
        lan = Lan.create(size, tmp_path / f"lan{len(made)}")
        made.append(lan)
        return lan

    try:
        yield make
    finally:
        for lan in made:
            lan.close()


_PING = r"""
import os, socket, struct, sys, time
dst, timeout = sys.argv[1], float(sys.argv[2])
def checksum(data):
    data += b"\0" * (len(data) % 2)
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF
ident = os.getpid() & 0xFFFF
sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
deadline = time.monotonic() + timeout
seq = 0
while time.monotonic() < deadline:
    seq += 1
    body = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"quicraft"
    packet = struct.pack("!BBHHH", 8, 0, checksum(body), ident, seq) + b"quicraft"
    try:
        sock.sendto(packet, (dst, 0))
    except OSError:
        pass
    until = min(deadline, time.monotonic() + 0.2)
    while (left := until - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data, (sender, _) = sock.recvfrom(2048)
        except socket.timeout:
            break
        header = (data[0] & 0x0F) * 4
        kind, _, _, rid, _ = struct.unpack("!BBHHH", data[header : header + 8])
        if kind == 0 and rid == ident and sender == dst:
            sys.exit(0)
sys.exit(1)
"""

_MCAST_LISTEN = rf"""
import json, socket, sys
address, timeout = sys.argv[1], float(sys.argv[2])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("", {MDNS_PORT}))
membership = socket.inet_aton("{MDNS_GROUP}") + socket.inet_aton(address)
sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
sock.settimeout(timeout)
print("\"ready\"", flush=True)
while True:
    data, (sender, _) = sock.recvfrom(2048)
    if data == b"quicraft-netns-probe":
        print(json.dumps({{"from": sender}}), flush=True)
        break
"""

# To the mDNS group or to one host's address (the listener above hears both).
_MCAST_SEND = rf"""
import socket, sys, time
address, target = sys.argv[1], sys.argv[2]
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(address))
sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
for _ in range(5):
    sock.sendto(b"quicraft-netns-probe", (target, {MDNS_PORT}))
    time.sleep(0.05)
"""
