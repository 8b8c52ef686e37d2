"""`quicraft local start N | status | kill I | restart I | logs [I] | stop`: a dev cluster."""

from __future__ import annotations

import argparse
import asyncio
import shlex
import signal
import sys
from pathlib import Path

from quicraft.client import ClientError, connect
from quicraft.node.local import (
    STOP_GRACE_S,
    LocalCluster,
    LocalClusterError,
    LocalNode,
    NoLocalCluster,
    NoSuchNode,
)
from quicraft.node.settings import PRESETS
from quicraft.transport import IdentityError

from .common import FAILED, MISUSE, OK, base_port, cluster_name, fail, int_in, path

DEFAULT_DIR = Path(".quicraft-local")
DEFAULT_CLUSTER, DEFAULT_BASE_PORT, DEFAULT_PRESET = "local", 7400, "dev"
#: What a node says when another process (another cluster, say) holds its port.
PORT_TAKEN = "Address already in use"


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    local = commands.add_parser(
        "local",
        help="run a development cluster on this machine",
        description="A cluster of N node processes on loopback, with its certificates, data "
        "and logs under one folder (--dir, before or after ACTION). Processes keep running "
        "after this command returns, until 'quicraft local stop'. Exit status: 0 success, "
        "1 an operational error (status: no leader serves), 2 misuse (such as a node number "
        "the cluster does not have).",
    )
    _add_dir(local, default=None)
    actions = local.add_subparsers(dest="action", required=True, metavar="ACTION")
    start = _action(
        actions,
        "start",
        "create N nodes and start them, or start a stopped cluster again",
        "Create a cluster of N nodes in --dir (a new or empty folder) and start them; in a "
        "folder that holds a stopped cluster, start its nodes again on their data (N and any "
        "option given must match it). Waits until every node listens and still runs a second "
        "later: if one exits (its port is taken, or its peers refuse it), stops the others "
        "and fails with that node's error.",
    )
    start.add_argument("size", type=_node_number, metavar="N", help="number of nodes (1-9)")
    start.add_argument(
        "--cluster", type=cluster_name, help=f"cluster name (default: {DEFAULT_CLUSTER})"
    )
    start.add_argument(
        "--base-port",
        type=base_port,
        metavar="BASE",
        help=f"node I listens on 127.0.0.1:BASE+I (default: {DEFAULT_BASE_PORT}, so node 1 "
        f"on {DEFAULT_BASE_PORT + 1}); pick another when those ports are taken",
    )
    start.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help=f"election and heartbeat timings: test (fastest), dev or prod (default: "
        f"{DEFAULT_PRESET})",
    )
    _action(
        actions,
        "status",
        "show each node's process and whether a leader serves (exit 1 if none does)",
    )
    for name, text in (
        ("kill", "SIGKILL node I: no hand-over, as in a crash"),
        (
            "restart",
            f"stop node I if it runs (SIGTERM: a leader hands over first; SIGKILL after "
            f"{STOP_GRACE_S:g} s), then start it again on its data; fails with its error if it "
            f"exits, as 'start' does",
        ),
    ):
        action = _action(actions, name, text)
        action.add_argument("number", type=_node_number, metavar="I", help="node number, from 1")
    logs = _action(actions, "logs", "print the log of node I, or of all nodes")
    logs.add_argument(
        "number",
        type=_node_number,
        nargs="?",
        metavar="I",
        help="node number, from 1 (default: all)",
    )
    logs.add_argument(
        "--lines", type=_line_count, default=40, help="last lines per node (default: 40)"
    )
    stop = _action(
        actions,
        "stop",
        f"stop every node (SIGTERM, then SIGKILL after {STOP_GRACE_S:g} s); 'start N' "
        f"starts them again",
    )
    stop.add_argument(
        "--clean",
        action="store_true",
        help="also delete the cluster's keys, data and logs, and the folder if 'start' made "
        "it and nothing else is in it",
    )


def _add_dir(parser: argparse.ArgumentParser, default: object) -> None:
    """--dir goes before or after the action: on an action, it is left unset unless given
    (SUPPRESS), so it does not hide one given before."""
    parser.add_argument(
        "--dir",
        type=path,
        default=default,
        help=f"folder of the cluster (default: ./{DEFAULT_DIR})",
    )


def _action(
    actions: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    text: str,
    description: str | None = None,
) -> argparse.ArgumentParser:
    parser = actions.add_parser(name, help=text, description=description or text)
    _add_dir(parser, default=argparse.SUPPRESS)
    return parser


#: A node's number in its cluster, or a cluster's size (at most 9), and a count of log lines.
_node_number = int_in(1, 9)
_line_count = int_in(1, 10**9)


def run(args: argparse.Namespace) -> int:
    folder = args.dir or DEFAULT_DIR
    # How the user names this folder, for the commands a message suggests.
    command = (
        "quicraft local" if args.dir is None else f"quicraft local --dir {shlex.quote(str(folder))}"
    )
    try:
        if args.action == "start":
            return _start(args, folder, command)
        return _manage(args, LocalCluster.load(folder), command)
    except NoSuchNode as err:
        print(f"quicraft local: {err}", file=sys.stderr)
        return MISUSE
    except NoLocalCluster as err:
        return fail(f"{err}: start one with '{command} start 3'")
    except BrokenPipeError:
        raise  # the reader of our output went away (`logs | head`): exit 141, quietly
    except (LocalClusterError, IdentityError, OSError) as err:
        return fail(str(err))


def _start(args: argparse.Namespace, folder: Path, command: str) -> int:
    try:
        cluster = LocalCluster.load(folder)
    except NoLocalCluster:
        return _create(args, folder, command)
    return _resume(args, cluster, command)


def _create(args: argparse.Namespace, folder: Path, command: str) -> int:
    cluster = LocalCluster.create(
        folder,
        args.size,
        args.cluster or DEFAULT_CLUSTER,
        args.preset or DEFAULT_PRESET,
        args.base_port or DEFAULT_BASE_PORT,
    )
    try:
        _start_nodes(cluster, cluster.nodes, "try another --base-port")
    except BaseException:  # Ctrl-C too: start_nodes has stopped the nodes it started
        cluster.delete()  # nothing is left of a cluster that never ran
        raise
    print(f"started {_nodes(args.size)} of cluster {cluster.cluster!r} in {folder}")
    print(f"endpoints: {cluster.endpoints()}")
    print(
        f"try: quicraft kv set hello world --cluster {cluster.cluster} "
        f"--endpoints {cluster.endpoints()} --certs {shlex.quote(str(cluster.certs))}"
    )
    return OK


def _resume(args: argparse.Namespace, cluster: LocalCluster, command: str) -> int:
    """Start the nodes of a cluster that are not running, if it is the cluster asked for."""
    size = len(cluster.nodes)
    asked = {
        "N": (args.size, size),
        "--cluster": (args.cluster, cluster.cluster),
        "--base-port": (args.base_port, cluster.base_port),
        "--preset": (args.preset, cluster.preset),
    }
    other = any(given is not None and given != kept for given, kept in asked.values())
    held = (
        f"{cluster.folder} holds cluster {cluster.cluster!r} of {_nodes(size)} (base port "
        f"{cluster.base_port}, preset {cluster.preset})"
    )
    elsewhere = f"'{command} stop --clean' deletes it; or pass another --dir"
    stopped = [node for node in cluster.nodes if not cluster.running(node)]
    if not stopped:
        # Whatever was asked, there is nothing to start: say so first.
        return fail(
            f"{held}, which is already running: '{command} status' shows it"
            + (f"; {elsewhere}" if other else "")
        )
    if other:
        return fail(f"{held}: '{command} start {size}' starts it; {elsewhere}")
    _start_nodes(cluster, stopped, "stop it first")
    names = ", ".join(node.name for node in stopped)
    print(f"started {names} of cluster {cluster.cluster!r} in {cluster.folder} again")
    print(f"endpoints: {cluster.endpoints()}")
    return OK


def _start_nodes(cluster: LocalCluster, nodes: list[LocalNode], if_taken: str) -> None:
    """cluster.start_nodes, and when a port is taken, what to do about it (`if_taken`)."""
    try:
        cluster.start_nodes(nodes)
    except LocalClusterError as err:
        if PORT_TAKEN not in str(err):
            raise
        raise LocalClusterError(f"{err}; is another cluster on these ports? {if_taken}") from None


def _nodes(count: int) -> str:
    return f"{count} node" if count == 1 else f"{count} nodes"


def _manage(args: argparse.Namespace, cluster: LocalCluster, command: str) -> int:
    if args.action == "status":
        return _status(cluster)
    if args.action == "kill":
        node = cluster.node(args.number)
        if not cluster.running(node):
            return fail(f"{node.name} is not running ('{command} restart {args.number}' starts it)")
        cluster.kill(node, signal.SIGKILL)
        print(f"killed {node.name} (pid {node.pid})")
    elif args.action == "restart":
        node = cluster.node(args.number)
        _say_killed(cluster.stop([node]))
        _start_nodes(cluster, [node], "stop it first")
        print(f"started {node.name} again (pid {node.pid})")
    elif args.action == "logs":
        nodes = [cluster.node(args.number)] if args.number else cluster.nodes
        for node in nodes:
            for line in cluster.log_tail(node, args.lines):
                print(f"{node.name} | {line}")
    else:
        _say_killed(cluster.stop_all())
        if args.clean:
            cluster.delete()
        deleted = " and deleted the cluster" if args.clean else ""
        print(f"stopped the nodes of {cluster.folder}{deleted}")
    return OK


def _say_killed(nodes: list[LocalNode]) -> None:
    """Why stopping took STOP_GRACE_S, and that these did not hand over (a paused node)."""
    for node in nodes:
        print(
            f"{node.name} did not stop within {STOP_GRACE_S:g} s of SIGTERM: killed it (SIGKILL)",
            file=sys.stderr,
        )


def _status(cluster: LocalCluster) -> int:
    for node in cluster.nodes:
        state = f"running (pid {node.pid})" if cluster.running(node) else "stopped"
        print(f"{node.name}  {node.address:<16} {state}")
    serving = asyncio.run(_serving(cluster))
    print(f"leader serving: {'yes' if serving else 'no'}")
    return OK if serving else FAILED


async def _serving(cluster: LocalCluster) -> bool:
    """True when a linearizable read succeeds, which needs a leader and a quorum."""
    try:
        async with connect(cluster.endpoints(), cluster.cluster, cluster.certs, timeout=3) as c:
            await c.kv.keys("")
            return True
    except ClientError:
        return False
