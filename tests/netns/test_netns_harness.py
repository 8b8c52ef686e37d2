"""The netns LAN harness itself: hosts reach each other (unicast and mDNS multicast), an
unplugged cable cuts a host off, a new address is reachable, and nothing is left behind, not even
by a test process that died without teardown."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import netns_harness
import pytest
from netns_harness import Lan, ip, list_namespaces, new_tag, owner_pid, stale_namespaces


def test_hosts_ping_each_other_and_an_unplugged_host_is_cut_off(
    lan_factory: Callable[[int], Lan],
) -> None:
    lan = lan_factory(3)
    h1, h2, h3 = lan.hosts
    assert lan.ping(h1, h2.address)
    assert lan.ping(h3, h1.address)

    lan.link_down(h2)
    assert not lan.ping(h1, h2.address, timeout=1.0)
    assert lan.ping(h1, h3.address)  # the rest of the LAN is unaffected

    lan.link_up(h2)
    assert lan.ping(h1, h2.address, timeout=5.0)


def test_mdns_multicast_flows_between_hosts(lan_factory: Callable[[int], Lan]) -> None:
    lan = lan_factory(2)
    h1, h2 = lan.hosts
    assert lan.multicast_reaches(h1, h2)
    assert lan.multicast_reaches(h2, h1)


def test_a_host_can_change_its_address(lan_factory: Callable[[int], Lan]) -> None:
    lan = lan_factory(2)
    h1, h2 = lan.hosts
    old = h2.address
    lan.set_address(h2, "10.77.0.200")
    assert h2.address == "10.77.0.200"
    assert lan.ping(h1, "10.77.0.200")
    assert not lan.ping(h1, old, timeout=1.0)
    assert lan.multicast_reaches(h2, h1)


def test_close_removes_every_namespace_and_process(lan_factory: Callable[[int], Lan]) -> None:
    lan = lan_factory(2)
    sleeper = lan.start(lan.host(1), "sleep", "600")
    names = [lan.bridge_ns, *(h.netns for h in lan.hosts)]
    assert set(names) <= set(list_namespaces())
    assert {owner_pid(name) for name in names} == {os.getpid()}

    lan.close()
    assert sleeper.popen.poll() is not None
    assert not set(names) & set(list_namespaces())
    lan.close()  # twice is harmless


def test_the_pid_that_made_a_namespace_is_read_back_from_its_name() -> None:
    """Runs everywhere: only names of the exact form we make are ours."""
    tag = new_tag()
    for role in ("b", "h1", "h12", "p", "q"):
        assert owner_pid(f"{tag}-{role}") == os.getpid()
    # Without the "-", these three were one name, "qrzzzzb".
    assert owner_pid("qrzzz-z-b") == 46655
    assert owner_pid("qrzz-zz-b") == 1295
    assert owner_pid("qrz-zzz-b") == 35
    assert owner_pid("qr10-0-h3") == 36
    not_ours = ["qr", "qrzzz-0", "qrzzz-0-x", "qrzzz-0-h", "qrzzz-0-h0", "qrZZ-0-b", "qr0-0-b"]
    not_ours += ["qr1-00-b", "qrzzz-0-b-1", "xqrzzz-0-b", "qrzzzzb", "docker0", "cni-1234"]
    for name in not_ours:
        assert owner_pid(name) is None, name


def test_only_ours_of_a_process_that_no_longer_runs_are_stale() -> None:
    alive = {7, 8}
    names = ["qr7-0-b", "qr7-0-h1", "qr9-0-b", "qr9-3-h2", "qr9-0-p", "qr9-x", "other", "qr8-1-b"]
    assert stale_namespaces(names, alive.__contains__) == ["qr9-0-b", "qr9-3-h2", "qr9-0-p"]


def test_a_new_lan_removes_what_a_dead_test_process_left_and_nothing_else(
    lan_factory: Callable[[int], Lan],
) -> None:
    """A test process killed without teardown left a namespace with a process in it; the next
    Lan kills that process and deletes the namespace. A namespace of a running process, or
    with a name not quite ours, stays."""
    netns_harness.require_netns()
    finished = subprocess.Popen(["true"])
    finished.wait()  # reaped: its pid no longer runs
    assert not Path(f"/proc/{finished.pid}").exists()
    dead, ours = netns_harness._base36(finished.pid), netns_harness._base36(os.getpid())
    stale = f"qr{dead}-0-h1"
    live = f"qr{ours}-zzzz-b"  # this process runs (its Lans never count that far)
    odd = f"qr{dead}-0-x"
    for name in (stale, live, odd):
        ip("netns", "del", name, check=False)
        ip("netns", "add", name)
    left = subprocess.Popen(["ip", "netns", "exec", stale, "sleep", "600"])
    try:
        deadline = time.monotonic() + 10
        while str(left.pid) not in ip("netns", "pids", stale).stdout.split():
            assert time.monotonic() < deadline, "the sleeper did not start"
            time.sleep(0.05)

        lan_factory(1)
        assert left.wait(timeout=10) == -signal.SIGKILL
        names = set(list_namespaces())
        assert stale not in names
        assert {live, odd} <= names
    finally:
        left.kill()
        left.wait()
        for name in (stale, live, odd):
            ip("netns", "del", name, check=False)


@pytest.mark.parametrize("role", ["p", "q", "b", "h2"])
def test_an_interrupt_while_a_namespace_is_made_leaves_nothing(
    role: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Ctrl-C (or SIGTERM, tests/conftest.py) may land while `ip netns add` runs, once the
    namespace exists: the probe (p, q) or the Lan being built (b, h2) still removes it."""
    netns_harness.require_netns()
    monkeypatch.setattr(netns_harness, "_probe", None)  # probe again
    real = netns_harness.ip
    interrupted: list[str] = []

    def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = real(*args, check=check)
        if args[:2] == ("netns", "add") and args[2].endswith(f"-{role}"):
            interrupted.append(args[2])
            raise KeyboardInterrupt
        return done

    monkeypatch.setattr(netns_harness, "ip", ip)
    with pytest.raises(KeyboardInterrupt):
        Lan.create(2, tmp_path)
    assert interrupted
    assert interrupted[0] not in list_namespaces()


def test_the_reason_to_skip_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs everywhere: the checks that decide to skip, with root and `ip` taken away."""
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert "needs root" in netns_harness._why_not()
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert "iproute2 (`ip`) is not installed" in netns_harness._why_not()
