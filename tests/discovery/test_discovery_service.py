"""Discovery objects where no network is needed: set-up errors, state before start and after
close. Everything that sends or receives mDNS is in test_discovery_lan.py, in namespaces."""

from __future__ import annotations

import asyncio

import pytest

from quicraft.discovery import Announcement, Discovery, DiscoveryError, PeerEvent

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
