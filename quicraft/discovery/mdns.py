"""Announce this node and browse for its peers over mDNS, with zeroconf's asyncio API.

Rules:

- One AsyncZeroconf per Discovery, IPv4 only, bound to the IPv4 addresses of the named
  interfaces, or to every interface (zeroconf's InterfaceChoice.All) when none are named.
- We announce one service instance, `<name>-<id>._quicraft._udp.local.` on the host name
  `<name>-<id>.local.` (the id makes both unique per node). When the node's formed state or
  cluster id changes, the TXT record of that same instance is updated in place; close()
  unregisters it, which sends goodbye packets so that peers report us lost at once.
- zeroconf calls us back inside the event loop. A callback never raises and never awaits: it
  starts one resolve task per instance, replacing any still running for it; at most
  MAX_RESOLVING of them ask the network at once (anyone may announce thousands).
- A resolution reads zeroconf's cache (asking the network for what is missing) and hands the
  result to PeerTable, which decides the events. When the cache holds two TXT records of one
  instance, they are dropped and the owner is asked again: the cache cannot say which is
  newer. A record that does not parse is debug-logged and treats its instance as gone. A host
  that changes address flushes the old one from caches one second later (RFC 6762 §10.2),
  so every resolution is repeated after that second.
- Events reach the on_event callback and every events() iterator, in the same order. A failing
  on_event is logged; it cannot break discovery.
- Discovery knows nothing of Raft: it reports hints. The node layer dials a peer over QUIC and
  checks its certificate and node id before it trusts anything announced here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from zeroconf import Error as ZeroconfError
from zeroconf import InterfaceChoice, IPVersion, ServiceStateChange, current_time_millis
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from .errors import DiscoveryError, RecordError
from .interfaces import announce_addresses, interface_addresses
from .peers import DiscoveredPeer, PeerEvent, PeerEventKind, PeerTable, peer_from_service
from .txt import SERVICE_TYPE, Announcement, encode_txt

log = logging.getLogger("quicraft.discovery")

#: How long one resolution may ask the network for a service's records.
RESOLVE_TIMEOUT_MS = 3000
#: Records replaced by a cache-flushing announcement live on for one second (RFC 6762 §10.2).
SETTLE_S = 1.2
#: At most this many resolutions run at once: anyone may announce thousands of instances, and
#: each resolution asks the network for the records it lacks.
MAX_RESOLVING = 16
#: The DNS record type of TXT records (RFC 1035); zeroconf does not export its constant.
TYPE_TXT = 16

EventCallback = Callable[[PeerEvent], None]


def instance_label(name: str, node_id: str) -> str:
    """`<name>-<id>`: unique per node by its id, readable by its name, and a valid DNS host
    label (letters, digits, hyphens; at most 40 + 1 + 16 bytes of the 63 allowed)."""
    return f"{re.sub(r'[^A-Za-z0-9-]', '-', name)[:40]}-{node_id[:16]}"


class Discovery:
    """Announces `me` and reports the peers of its cluster name; start() it, close() it."""

    def __init__(
        self,
        me: Announcement,
        *,
        addresses: Sequence[str] | None = None,
        interfaces: Sequence[str] = (),
        on_event: EventCallback | None = None,
        announce: bool = True,
    ):
        """`addresses`: where this node listens (default: the IPv4 addresses of `interfaces`,
        all but loopback when empty); `interfaces`: names of the interfaces to run mDNS on;
        `announce=False` only browses (a tool looking for the nodes of `me.cluster`)."""
        self._me = me
        self._announce = announce
        self._interfaces = tuple(interfaces)
        self._addresses = list(addresses) if addresses is not None else None
        self._on_event = on_event
        label = instance_label(me.name, me.node_id)
        #: Our service instance name: others' browsers report it, ours ignores it.
        self.instance = f"{label}.{SERVICE_TYPE}"
        self._host = f"{label}.local."
        self._table = PeerTable(me.cluster, me.node_id)
        self._zc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._info: AsyncServiceInfo | None = None
        self._registered = False
        self._broadcasts: list[asyncio.Future[Any]] = []
        self._resolving: dict[str, asyncio.Task[None]] = {}
        self._lookups = asyncio.Semaphore(MAX_RESOLVING)
        self._queues: set[asyncio.Queue[PeerEvent | None]] = set()
        self._closed = False

    @property
    def announcement(self) -> Announcement:
        return self._me

    @property
    def addresses(self) -> list[str]:
        """The addresses we announce (known once started, unless given)."""
        return list(self._addresses or ())

    def peers(self) -> dict[str, DiscoveredPeer]:
        """Node id -> the peers of our cluster name that are announced right now."""
        return self._table.peers()

    # -- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind, browse, and announce (after probing that our instance name is free)."""
        if self._zc is not None or self._closed:
            raise RuntimeError("a Discovery starts once")
        try:
            if self._addresses is None and self._announce:
                self._addresses = announce_addresses("", self._interfaces)
            bind: list[str] | InterfaceChoice = InterfaceChoice.All
            if self._interfaces:
                bind = interface_addresses(self._interfaces)
            self._zc = AsyncZeroconf(interfaces=bind, ip_version=IPVersion.V4Only)
            self._browser = AsyncServiceBrowser(
                self._zc.zeroconf, SERVICE_TYPE, handlers=[self._on_service_change]
            )
            if self._announce:
                await self._register()
        except (ZeroconfError, OSError) as err:
            await self.close()
            raise DiscoveryError(f"mDNS could not start: {type(err).__name__}: {err}") from err
        except BaseException:
            await self.close()
            raise

    async def _register(self) -> None:
        assert self._zc is not None
        self._info = self._service_info()
        self._remember(await self._zc.async_register_service(self._info))
        self._registered = True
        if self._info.text != encode_txt(self._me.txt()):
            # set_formed() ran while we were probing: announce what it said.
            self._info = self._service_info()
            self._remember(await self._zc.async_update_service(self._info))
        log.info(
            "discovery: announcing %s (cluster %s) at %s port %d",
            self.instance, self._me.cluster, ", ".join(self.addresses), self._me.port,
        )  # fmt: skip

    async def set_formed(self, cluster_id: str | None) -> None:
        """Announce that we belong to the formed cluster `cluster_id` (None: to none), by
        updating our TXT record in place."""
        me = dataclasses.replace(self._me, cluster_id=cluster_id)  # checks the id
        if me == self._me:
            return
        self._me = me
        if self._zc is None or not self._registered or self._closed:
            return  # start() announces the new state
        self._info = self._service_info()
        self._remember(await self._zc.async_update_service(self._info))
        log.info("discovery: announcing formed=%d cid=%s", me.formed, cluster_id)

    async def close(self) -> None:
        """Say goodbye (unregister), stop browsing, and end every events() iterator."""
        if self._closed:
            return
        self._closed = True
        tasks = [*self._resolving.values(), *self._broadcasts]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._resolving.clear()
        zc = self._zc
        if zc is not None:
            try:
                if self._browser is not None:
                    await self._browser.async_cancel()
                if self._registered and self._info is not None:
                    await (await zc.async_unregister_service(self._info))  # the goodbyes
            except (ZeroconfError, OSError) as err:
                log.debug("discovery: goodbye failed: %s", err)
            finally:
                await zc.async_close()
        for queue in self._queues:
            queue.put_nowait(None)
        log.debug("discovery: closed")

    async def __aenter__(self) -> Discovery:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def events(self) -> AsyncIterator[PeerEvent]:
        """Every peer event from the first iteration on, starting with a DISCOVERED for each
        peer already known; the iteration ends when the discovery closes."""
        queue: asyncio.Queue[PeerEvent | None] = asyncio.Queue()
        for peer in self._table.peers().values():
            queue.put_nowait(PeerEvent(PeerEventKind.DISCOVERED, peer))
        if self._closed:
            queue.put_nowait(None)
        self._queues.add(queue)
        try:
            while (event := await queue.get()) is not None:
                yield event
        finally:
            self._queues.discard(queue)

    # -- announcing ------------------------------------------------------------------------

    def _service_info(self) -> AsyncServiceInfo:
        return AsyncServiceInfo(
            SERVICE_TYPE,
            self.instance,
            port=self._me.port,
            properties=encode_txt(self._me.txt()),
            server=self._host,
            parsed_addresses=self.addresses,
        )

    def _remember(self, broadcast: Awaitable[Any]) -> None:
        """Keep the announcement task zeroconf hands back, so close() can end it."""
        future = asyncio.ensure_future(broadcast)
        self._broadcasts = [f for f in self._broadcasts if not f.done()] + [future]

    # -- browsing --------------------------------------------------------------------------

    def _on_service_change(
        self, zeroconf: object, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        """zeroconf's callback (keyword arguments, in the event loop): must not raise."""
        try:
            key = name.lower()
            if self._closed or key == self.instance.lower():
                return
            running = self._resolving.pop(key, None)
            if running is not None:
                running.cancel()
            if state_change is ServiceStateChange.Removed:
                self._emit(self._table.remove(key))
            else:
                task = asyncio.get_running_loop().create_task(self._resolve(name))
                self._resolving[key] = task
        except Exception:
            log.exception("discovery: failed to handle %s of %r", state_change, name)

    async def _resolve(self, name: str) -> None:
        key = name.lower()
        try:
            for attempt in range(2):
                if attempt:
                    await asyncio.sleep(SETTLE_S)
                async with self._lookups:
                    info = await self._lookup(name)
                if info is not None:
                    self._emit(self._table.put(key, self._peer_of(name, info)))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("discovery: failed to resolve %r", name)
        finally:
            if self._resolving.get(key) is asyncio.current_task():
                del self._resolving[key]

    async def _lookup(self, name: str) -> AsyncServiceInfo | None:
        """The records of `name`, or None if they did not all arrive (then nothing changes)."""
        assert self._zc is not None
        zc = self._zc.zeroconf
        for asked_owner in (False, True):
            try:
                info = AsyncServiceInfo(SERVICE_TYPE, name)
            except ZeroconfError as err:
                log.debug("discovery: ignoring bad service name %r: %s", name, err)
                return None
            if not await info.async_request(zc, RESOLVE_TIMEOUT_MS):
                log.debug("discovery: %s did not resolve", name)
                return None
            now = current_time_millis()
            texts = [
                r for r in zc.cache.async_entries_with_name(name)
                if r.type == TYPE_TXT and not r.is_expired(now)
            ]  # fmt: skip
            if len(texts) < 2 or asked_owner:
                return info
            # Two TXT records of one instance: one is out of date (a copy older than an
            # update arrived after it, or a forgery), and zeroconf's cache answers with the
            # last one it stored, not the newest. Its owner knows: forget both and ask it.
            log.debug("discovery: %s has %d TXT records; asking its owner", name, len(texts))
            zc.cache.async_remove_records(texts)
        return info

    def _peer_of(self, name: str, info: AsyncServiceInfo) -> DiscoveredPeer | None:
        """The peer `info` announces, or None if it is not a valid announcement."""
        try:
            peer = peer_from_service(name, info.text, info.port or 0, info.parsed_addresses())
        except RecordError as err:
            log.debug("discovery: ignoring %s: %s", name, err)
            return None
        if peer.cluster != self._me.cluster:
            log.debug("discovery: ignoring %s of cluster %r", name, peer.cluster)
        return peer

    def _emit(self, events: list[PeerEvent]) -> None:
        for event in events:
            peer = event.peer
            log.debug(
                "discovery: %s %s (%s) at %s:%d formed=%d",
                event.kind.value, peer.node_id, peer.name, *peer.address, peer.formed,
            )  # fmt: skip
            if self._on_event is not None:
                try:
                    self._on_event(event)
                except Exception:
                    log.exception("discovery: the on_event callback failed on %s", event)
            for queue in self._queues:
                queue.put_nowait(event)


#: The node id a browsing tool takes: ids are key fingerprints, so no node has this one.
BROWSER_ID = "0" * 16


async def find_nodes(
    cluster: str, *, interfaces: Sequence[str] = (), wait_s: float = 3.0, quiet_s: float = 0.5
) -> list[DiscoveredPeer]:
    """The nodes announcing `cluster` on the LAN, found by browsing without announcing: those
    heard within `quiet_s` of the first one (formed ones first), or [] if none is heard within
    `wait_s`. Raises DiscoveryError if mDNS cannot run on `interfaces`."""
    heard = asyncio.Event()
    browser = Discovery(
        Announcement(cluster, BROWSER_ID, "browser", 1),
        interfaces=interfaces,
        on_event=lambda _: heard.set(),
        announce=False,
    )
    async with browser:
        try:
            # Not asyncio.wait_for: in Python 3.11 it loses a cancel (Ctrl-C) that comes in
            # the same turn of the loop as the first answer.
            async with asyncio.timeout(wait_s):
                await heard.wait()
        except TimeoutError:
            return []
        await asyncio.sleep(quiet_s)  # every node answers the same query within ~0.1 s
        found = list(browser.peers().values())
    return sorted(found, key=lambda peer: (not peer.formed, peer.name, peer.node_id))
