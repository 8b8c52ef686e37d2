"""A discovery process for the netns tests: announce, browse, print each event as a JSON line.

    python discovery_agent.py --cluster C --name N --id HEX --port P [--interface eth0|all]
                              [--cid HEX] [--via iterator|callback]
    python discovery_agent.py --garbage TXT_HEX --name N --port P [--interface eth0]
    python discovery_agent.py --replay TXT_HEX --name INSTANCE [--interface eth0]

stdout, one JSON object per line:
    {"event": "ready", "instance": ..., "addresses": [...]}    once announced
    {"event": "discovered"|"updated"|"lost", "id", "name", "cluster", "address": [host, port],
     "addresses", "formed", "cid", "v"}                         for each peer event
    {"event": "formed", "cid": ...}                             after SIGUSR1
Signals: SIGUSR1 announces formed=1 with --cid; SIGTERM or SIGINT closes (goodbye packets)
and exits 0. With --garbage it announces a raw TXT record through zeroconf itself (what a
broken or hostile node could send) and does not browse. With --replay it sends one unasked
answer carrying that TXT record for the instance INSTANCE, which it does not own (an old copy
arriving late, or a forgery), prints {"event": "sent"} and exits.

Only ever run inside a test's network namespace (tests/netns/netns_harness.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys

# Exported at run time, left out of zeroconf's __all__: mypy sees no export.
from zeroconf import DNSOutgoing, DNSText, IPVersion  # type: ignore[attr-defined]
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from quicraft.discovery import (
    SERVICE_TYPE,
    Announcement,
    Discovery,
    PeerEvent,
    interface_addresses,
)


def say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def show(event: PeerEvent) -> None:
    peer = event.peer
    say(
        event=event.kind.value, id=peer.node_id, name=peer.name, cluster=peer.cluster,
        address=list(peer.address), addresses=list(peer.addresses), formed=peer.formed,
        cid=peer.cluster_id, v=peer.version,
    )  # fmt: skip


async def run(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    formed = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, formed.set)
    if args.garbage is not None:
        await announce_garbage(args, stop)
        return
    if args.replay is not None:
        await replay(args)
        return

    me = Announcement(args.cluster, args.id, args.name, args.port)
    callback = show if args.via == "callback" else None
    interfaces = [] if args.interface == "all" else [args.interface]
    discovery = Discovery(me, interfaces=interfaces, on_event=callback)
    await discovery.start()
    say(event="ready", instance=discovery.instance, addresses=discovery.addresses)

    async def print_events() -> None:
        async for event in discovery.events():
            show(event)

    async def announce_formed() -> None:
        await formed.wait()
        await discovery.set_formed(args.cid)
        say(event="formed", cid=args.cid)

    tasks = [asyncio.create_task(announce_formed())]
    if args.via == "iterator":
        tasks.append(asyncio.create_task(print_events()))
    await stop.wait()
    await discovery.close()  # ends print_events
    tasks[0].cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    say(event="closed")


async def announce_garbage(args: argparse.Namespace, stop: asyncio.Event) -> None:
    addresses = interface_addresses([args.interface])
    async with AsyncZeroconf(interfaces=addresses, ip_version=IPVersion.V4Only) as zc:
        info = AsyncServiceInfo(
            SERVICE_TYPE,
            f"{args.name}.{SERVICE_TYPE}",
            port=args.port,
            properties=bytes.fromhex(args.garbage),
            server=f"{args.name}.local.",
            parsed_addresses=addresses,
        )
        await zc.async_register_service(info)
        say(event="ready", instance=info.name, addresses=addresses)
        await stop.wait()
    say(event="closed")


#: DNS wire constants (RFC 1035, RFC 6762 §10.2): a response with the authoritative bit, a
#: TXT record of class IN with the cache-flush bit, and zeroconf's TTL for TXT records.
RESPONSE_FLAGS = 0x8400
TYPE_TXT, CLASS_IN_FLUSH, TXT_TTL = 16, 0x8001, 4500


async def replay(args: argparse.Namespace) -> None:
    addresses = interface_addresses([args.interface])
    async with AsyncZeroconf(interfaces=addresses, ip_version=IPVersion.V4Only) as zc:
        await zc.zeroconf.async_wait_for_start()
        answer = DNSOutgoing(RESPONSE_FLAGS)
        text = bytes.fromhex(args.replay)
        answer.add_answer_at_time(DNSText(args.name, TYPE_TXT, CLASS_IN_FLUSH, TXT_TTL, text), 0)
        zc.zeroconf.async_send(answer)
    say(event="sent")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cluster", default="blue")
    parser.add_argument("--name", required=True)
    parser.add_argument("--id", default="")
    parser.add_argument("--port", type=int, default=7400)
    parser.add_argument("--interface", default="eth0", help='"all": every interface')
    parser.add_argument("--cid", default="c1d0c1d0c1d0c1d0")
    parser.add_argument("--via", choices=["iterator", "callback"], default="iterator")
    parser.add_argument("--garbage", help="announce this raw TXT record (hex) instead")
    parser.add_argument("--replay", help="send this TXT record (hex) for instance --name, once")
    args = parser.parse_args()
    logging.basicConfig(
        stream=sys.stderr, level=logging.WARNING, format="%(asctime)s %(name)s %(message)s"
    )
    logging.getLogger("quicraft.discovery").setLevel(logging.DEBUG)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
