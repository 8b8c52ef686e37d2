"""Discovery objects where no network is needed: set-up errors, state before start and after
close. Everything that sends or receives mDNS is in test_discovery_lan.py, in namespaces."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from zeroconf import ServiceStateChange

from quicraft.discovery import (
    SERVICE_TYPE,
    Announcement,
    Discovery,
    DiscoveryError,
    PeerEvent,
    mdns,
)

ID = "0123456789abcdef"


def test_an_unknown_interface_fails_before_any_socket_is_opened() -> None:
    async def scenario() -> None:
        d = Discovery(Announcement("c1", ID, "n1", 7400), interfaces=["nosuch0"])
        with pytest.raises(DiscoveryError, match="no network interface named 'nosuch0'"):
            await d.start()
        with pytest.raises(RuntimeError, match="starts once"):
            await d.start()

    asyncio.run(scenario())


def test_state_before_start_and_after_close() -> None:
    async def scenario() -> None:
        me = Announcement("c1", ID, "n.1", 7400)
        d = Discovery(me, addresses=["10.0.0.1"])
        assert d.instance == f"n-1-{ID}._quicraft._udp.local."
        assert d.addresses == ["10.0.0.1"]
        await d.set_formed("abcdef0123456789")  # before start: announced when it starts
        assert d.announcement.cluster_id == "abcdef0123456789"
        with pytest.raises(ValueError, match="bad cluster id"):
            await d.set_formed("not hex")
        assert d.peers() == {}
        await d.close()
        await d.close()
        seen: list[PeerEvent] = [event async for event in d.events()]
        assert seen == []  # the iteration of a closed discovery ends at once

    asyncio.run(scenario())


def test_many_announced_instances_are_resolved_a_bounded_few_at_a_time() -> None:
    """Anyone may announce thousands of instances (a pointer record each is enough), and each
    resolution asks the network for what it lacks: at most MAX_RESOLVING run together. No
    zeroconf here: the lookup is a stand-in that takes a while and finds nothing."""

    async def scenario() -> None:
        d = Discovery(Announcement("c1", ID, "n1", 7400), addresses=["10.0.0.1"])
        running, most, asked = 0, 0, 0

        async def lookup(name: str) -> None:
            nonlocal running, most, asked
            running, asked = running + 1, asked + 1
            most = max(most, running)
            try:
                await asyncio.sleep(0.01)
            finally:
                running -= 1

        d._lookup = lookup  # type: ignore[method-assign]
        for n in range(300):
            name = f"x{n}.{SERVICE_TYPE}"
            d._on_service_change(None, SERVICE_TYPE, name, ServiceStateChange.Added)
        async with asyncio.timeout(10):
            while asked < 300:
                await asyncio.sleep(0.01)
        assert 0 < most <= mdns.MAX_RESOLVING
        await d.close()

    asyncio.run(scenario())


def test_finding_nodes_ends_on_a_cancel_that_comes_with_the_first_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ctrl-C (a cancel) in the same turn of the loop as the first answer: asyncio.wait_for
    of Python 3.11 lost the cancel, and find_nodes went on and returned."""
    browsers: list[FakeBrowser] = []

    class FakeBrowser:
        def __init__(self, *_: object, on_event: Callable[[object], None], **__: object) -> None:
            self.on_event = on_event
            browsers.append(self)

        async def __aenter__(self) -> FakeBrowser:
            return self

        async def __aexit__(self, *_: object) -> None:
            return None

        def peers(self) -> dict[str, object]:
            return {}

    monkeypatch.setattr(mdns, "Discovery", FakeBrowser)

    async def scenario() -> None:
        finding = asyncio.create_task(mdns.find_nodes("c1", wait_s=5.0, quiet_s=0.0))
        await asyncio.sleep(0.01)  # it waits for an answer
        browsers[0].on_event(None)
        finding.cancel()
        with pytest.raises(asyncio.CancelledError):
            await finding

    asyncio.run(scenario())
