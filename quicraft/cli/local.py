"""`quicraft local start N | status | kill I | restart I | logs [I] | stop`: a dev cluster."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import sys
from pathlib import Path

from quicraft.client import ClientError, connect
from quicraft.node.local import LocalCluster, LocalClusterError
from quicraft.node.settings import PRESETS
from quicraft.transport import IdentityError

from .common import MISUSE, OK, base_port, fail


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    local = commands.add_parser(
        "local",
        help="run a development cluster on this machine",
        description="A cluster of N node processes on loopback, with its certificates, data "
        "and logs under one folder (--dir). Processes keep running after this command "
        "returns, until 'quicraft local stop'.",
    )
    local.add_argument(
        "--dir",
        type=Path,
        default=Path(".quicraft-local"),
        help="folder of the cluster (default: ./.quicraft-local)",
    )
    actions = local.add_subparsers(dest="action", required=True, metavar="ACTION")
    start = actions.add_parser("start", help="create and start N nodes")
    start.add_argument("size", type=int, metavar="N", help="number of nodes (1-9)")
    start.add_argument("--cluster", default="local", help="cluster name (default: local)")
    start.add_argument("--base-port", type=base_port, default=7400, help="node I listens on BASE+I")
    start.add_argument("--preset", choices=sorted(PRESETS), default="dev", help="timings")
    actions.add_parser("status", help="show each node's process and whether a leader serves")
    for name, text in (("kill", "SIGKILL node I"), ("restart", "start node I again")):
        action = actions.add_parser(name, help=text)
        action.add_argument("number", type=int, metavar="I")
    logs = actions.add_parser("logs", help="print the log of node I, or of all nodes")
    logs.add_argument("number", type=int, nargs="?", metavar="I")
    logs.add_argument("--lines", type=int, default=40, help="last lines per node (default 40)")
    stop = actions.add_parser("stop", help="stop every node (SIGTERM, then SIGKILL)")
    stop.add_argument("--clean", action="store_true", help="also delete the folder")


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except (LocalClusterError, IdentityError, OSError) as err:
        return fail(str(err))


def _run(args: argparse.Namespace) -> int:
    if args.action == "start":
        if not 1 <= args.size <= 9:
            print("quicraft local: a local cluster has 1 to 9 nodes", file=sys.stderr)
            return MISUSE
        cluster = LocalCluster.create(
            args.dir, args.size, args.cluster, args.preset, args.base_port
        )
        for node in cluster.nodes:
            cluster.start(node)
        print(f"started {args.size} nodes of cluster {args.cluster!r} in {args.dir}")
        print(f"endpoints: {cluster.endpoints()}")
        print(
            f"try: quicraft kv set hello world --cluster {args.cluster} "
            f"--endpoints {cluster.endpoints()} --certs {cluster.certs}"
        )
        return OK
    cluster = LocalCluster.load(args.dir)
    if args.action == "status":
        return _status(cluster)
    if args.action == "kill":
        node = cluster.node(args.number)
        if not cluster.running(node):
            return fail(f"{node.name} is not running")
        cluster.kill(node, signal.SIGKILL)
        print(f"killed {node.name} (pid {node.pid})")
    elif args.action == "restart":
        node = cluster.node(args.number)
        cluster.kill(node, signal.SIGKILL)
        cluster.wait_stopped(node)
        cluster.start(node)
        print(f"started {node.name} (pid {node.pid})")
    elif args.action == "logs":
        nodes = [cluster.node(args.number)] if args.number else cluster.nodes
        for node in nodes:
            path = cluster.log_file(node)
            lines = path.read_text(errors="replace").splitlines() if path.exists() else []
            for line in lines[-args.lines :]:
                print(f"{node.name} | {line}")
    else:
        cluster.stop_all()
        if args.clean:
            shutil.rmtree(args.dir)
        print(f"stopped the nodes of {args.dir}" + (" and deleted it" if args.clean else ""))
    return OK


def _status(cluster: LocalCluster) -> int:
    for node in cluster.nodes:
        state = f"running (pid {node.pid})" if cluster.running(node) else "stopped"
        print(f"{node.name}  {node.address:<16} {state}")
    print(f"leader serving: {'yes' if asyncio.run(_serving(cluster)) else 'no'}")
    return OK


async def _serving(cluster: LocalCluster) -> bool:
    """True when a linearizable read succeeds, which needs a leader and a quorum."""
    try:
        async with connect(cluster.endpoints(), cluster.cluster, cluster.certs, timeout=3) as c:
            await c.kv.keys("")
            return True
    except ClientError:
        return False
