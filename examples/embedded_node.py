"""Three quicraft nodes embedded in one asyncio program, and a client that uses them.

    python examples/embedded_node.py [--base-port N]

In a temporary folder it makes the cluster's keys, starts three `quicraft.node.Node`s on
127.0.0.1 (on free ports, or on N+1..N+3), waits for a leader, writes and reads through a
client, reads those writes back as events, and stops every node. Nothing outlives it: no
process, no open port, no file. mDNS stays off: a `Node` uses it only if its settings ask.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import tempfile
import time
from pathlib import Path

import quicraft
from quicraft.node import Node, NodeSettings
from quicraft.transport import IdentityError, Role, TransportError, init_cluster, issue

CLUSTER = "demo"
NAMES = ("n1", "n2", "n3")


def free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 now, as the OS picks them (QUIC runs over UDP)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def make_keys(certs: Path) -> None:
    """The cluster's CA, a key for each node, and one for our client (role client: it may
    read, write and watch, but not manage the cluster)."""
    init_cluster(certs, CLUSTER)  # the CA, and an "admin" identity we do not use here
    for name in NAMES:
        issue(certs, CLUSTER, name, Role.NODE)
    issue(certs, CLUSTER, "app", Role.CLIENT)


async def wait_for_leader(nodes: list[Node], timeout: float = 15.0) -> Node:
    """The node that leads, once the nodes have elected one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for node in nodes:
            if node.leader == node.id:  # `leader` is the id of the leader this node knows
                return node
        await asyncio.sleep(0.05)
    raise TimeoutError(f"no leader was elected in {timeout:g}s")


async def use_the_cluster(certs: Path, endpoints: list[str]) -> None:
    """What any program of the cluster's could do, from this process or another."""
    async with quicraft.connect(endpoints, CLUSTER, certs, name="app") as client:
        revision = await client.kv.set("greeting", "hello")  # a str is sent as UTF-8
        print(f"set greeting = 'hello' at revision {revision}")
        for _ in range(2):
            print(f"incr visits -> {await client.kv.incr('visits')}")
        # Linearizable: the node checks with a majority that it still leads before it answers.
        value = await client.kv.get("greeting")
        print(f"get greeting -> {value!r} (linearizable), from {client.current_endpoint}")

        # The changes after that first write, as events: a kv event's position is its
        # revision x 1024, so since=revision * 1024 replays what came after it.
        events = client.events(kinds=["kv"], since=revision * 1024)
        async with asyncio.timeout(10):
            async for event in events:
                print(f"event {event.data['op']} {event.data['key']} -> {event.data['value']}")
                if event.data["key"] == "visits" and event.data["value"] == 2:
                    break
        await events.aclose()


async def main(ports: list[int]) -> None:
    with tempfile.TemporaryDirectory(prefix="quicraft-embedded-") as tmp:
        folder = Path(tmp)
        certs = folder / "certs"
        make_keys(certs)
        print(f"made the keys of cluster {CLUSTER!r} in {folder}")
        addresses = [("127.0.0.1", port) for port in ports]
        nodes: list[Node] = []
        try:
            for name, address in zip(NAMES, addresses, strict=True):
                settings = NodeSettings(
                    cluster=CLUSTER,
                    name=name,
                    data_dir=folder / name,
                    certs_dir=certs,
                    listen=address,
                    # The founding members: together they found the cluster.
                    peers=tuple(a for a in addresses if a != address),
                )
                nodes.append(Node(settings))  # loads its key, opens its data directory
            # start() returns once a node has reached the founders it waits for: start all
            # three together. If one fails, the TaskGroup cancels the others' start().
            started = time.monotonic()
            async with asyncio.TaskGroup() as group:
                for node in nodes:
                    group.create_task(node.start())
            where = ", ".join(f"{n.settings.name} on port {n.settings.listen[1]}" for n in nodes)
            print(f"started {where}")
            leader = await wait_for_leader(nodes)
            took = time.monotonic() - started
            print(f"{leader.settings.name} leads (elected {took:.1f}s after the start)")
            await use_the_cluster(certs, [f"{host}:{port}" for host, port in addresses])
        finally:
            # stop() frees the node's port and data directory; a leader hands over first.
            # Always in a finally: Ctrl-C or an error must not leave them taken.
            for node in nodes:
                await node.stop()
            if nodes:
                print(f"stopped {', '.join(n.settings.name for n in nodes)}")


def port_base(text: str) -> int:
    base = int(text)
    if not 0 < base < 65536 - len(NAMES):
        raise argparse.ArgumentTypeError(f"{base} leaves no room for {len(NAMES)} ports")
    return base


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--base-port", type=port_base, help="listen on ports N+1..N+3 (default: free ones)"
    )
    args = parser.parse_args()
    count = len(NAMES)
    if args.base_port is None:
        ports = free_ports(count)
    else:
        ports = [args.base_port + i for i in range(1, count + 1)]
    try:
        asyncio.run(main(ports))
    except* (quicraft.ClientError, IdentityError, TransportError, TimeoutError) as failed:
        sys.exit(f"embedded_node: error: {failed.exceptions[0] or 'timed out'}")
    except* KeyboardInterrupt:
        sys.exit(130)
