"""The Python management client, run inside a host of a LAN test (test_mgmt_lan.py): it finds
the cluster by mDNS (quicraft.discovery.find_nodes), as a program on that LAN would, then runs
the operations given and prints one JSON line per operation.

    python mgmt_agent.py --cluster C --certs DIR [--name admin] OP [OP ...]

OP is `promote:NODE`, `remove:NODE`, `transfer:NODE`, `backup:FILE` or `status`. Each line is
{"op": OP, "result": ...} or, for a refused operation, {"op": OP, "error": CODE}; the first
error ends the run (exit 1). Only ever run inside a test's network namespace.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from quicraft.client import MgmtClient, MgmtError, connect_mgmt
from quicraft.discovery import find_nodes
from quicraft.transport.address import format_address


async def perform(client: MgmtClient, op: str) -> Any:
    action, _, argument = op.partition(":")
    if action == "promote":
        return await client.promote(argument)
    if action == "remove":
        return await client.remove_member(argument)
    if action == "transfer":
        return await client.transfer(argument)
    if action == "backup":
        info = await client.backup(Path(argument))
        return {"index": info.index, "bytes": info.size}
    if action == "status":
        return await client.status()
    raise SystemExit(f"unknown op {op!r}")


async def main(args: argparse.Namespace) -> int:
    nodes = await find_nodes(args.cluster, interfaces=["eth0"])
    if not nodes:
        print(json.dumps({"error": "no node found on mDNS"}), flush=True)
        return 1
    endpoints = [format_address(node.address) for node in nodes]
    async with connect_mgmt(endpoints, args.cluster, args.certs, args.name, timeout=20) as client:
        for op in args.ops:
            try:
                result = await perform(client, op)
            except MgmtError as err:
                print(json.dumps({"op": op, "error": err.code}), flush=True)
                return 1
            print(json.dumps({"op": op, "result": result}), flush=True)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cluster", required=True)
    parser.add_argument("--certs", type=Path, required=True)
    parser.add_argument("--name", default="admin")
    parser.add_argument("ops", nargs="+")
    sys.exit(asyncio.run(main(parser.parse_args())))
