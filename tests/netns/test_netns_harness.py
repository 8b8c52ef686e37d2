"""The netns LAN harness itself: hosts reach each other (unicast and mDNS multicast), an
unplugged cable cuts a host off, a new address is reachable, and nothing is left behind."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable

import netns_harness
import pytest
from netns_harness import Lan, ip


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
    assert set(names) <= _namespaces()

    lan.close()
    assert sleeper.popen.poll() is not None
    assert not set(names) & _namespaces()
    lan.close()  # twice is harmless


def _namespaces() -> set[str]:
    return {line.split()[0] for line in ip("netns", "list").stdout.splitlines() if line.strip()}


def test_the_reason_to_skip_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs everywhere: the checks that decide to skip, with root and `ip` taken away."""
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert "needs root" in netns_harness._why_not()
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert "iproute2 (`ip`) is not installed" in netns_harness._why_not()
