"""Subscribe to a cluster's events and print them as they happen.

    python examples/watch_events.py --cluster c1 --endpoints 127.0.0.1:7401,127.0.0.1:7402

The subscription follows the cluster by itself: if its node goes away it resumes on another
from the last event it printed, so no event is missed or printed twice. Each event has a
position (`pos`); pass the last one printed as --since to pick up where a previous run ended.
--count stops after that many events (otherwise Ctrl-C).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

import quicraft


async def watch(args: argparse.Namespace) -> None:
    kinds = args.kinds.split(",") if args.kinds else None
    async with quicraft.connect(args.endpoints, args.cluster, args.certs, args.name) as client:
        events = client.events(kinds=kinds, prefix=args.prefix, since=args.since)
        async with contextlib.aclosing(events):
            seen = 0
            async for event in events:
                print(f"{event.pos:>10} {event.kind:<16} {event.data}", flush=True)
                seen += 1
                if seen == args.count:
                    return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cluster", required=True)
    parser.add_argument("--endpoints", required=True, help="HOST:PORT,...")
    parser.add_argument("--certs", default="certs", help="folder of the cluster's keys")
    parser.add_argument("--name", default="admin", help="identity (role reader or up)")
    parser.add_argument("--kinds", help="comma-separated event kinds (default: all)")
    parser.add_argument("--prefix", help="kv events only for keys with this prefix")
    parser.add_argument("--since", type=int, help="resume after this position")
    parser.add_argument("--count", type=int, help="stop after this many events")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(watch(args))


if __name__ == "__main__":
    main()
