"""`quicraft node`: run one node until SIGTERM or SIGINT (a leader hands over first)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from quicraft.discovery import DiscoveryError, DiscoverySettings
from quicraft.node import PRESETS, FoundingError, Node, NodeSettings, RemovedFromCluster
from quicraft.node.settings import MAX_CONNECTIONS_PER_IDENTITY
from quicraft.storage import StorageError
from quicraft.telemetry import TelemetryError, check, configure_logging, set_log_context
from quicraft.transport import IdentityError, Role, TransportError, identity_exists, issue
from quicraft.transport.address import format_address, is_loopback

from .common import (
    FAILED,
    MISUSE,
    OK,
    add_certs,
    address,
    address_list,
    check_cluster_folder,
    cluster_name,
    freeze_what_is_loaded,
    identity_name,
    path,
)
from .telemetry import add_node_telemetry_arguments, telemetry_settings

DEFAULT_PORT = 7400
log = logging.getLogger("quicraft.cli")


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    node = commands.add_parser(
        "node",
        help="run a node",
        description="Run a quicraft node. On a LAN, run 'quicraft node --cluster NAME --expect 3' "
        "on each of three hosts: the nodes find each other by mDNS, check each other's "
        "certificates, and the one with the lowest id founds the cluster and adds the others; "
        "hosts started later join it (learners, promoted to voters up to --voters). With "
        "--peers, a node with an empty data directory instead waits until every peer has "
        "answered and proved its identity, then founds the cluster of itself and those peers "
        "(give every founder the same set). With --no-mdns and no --peers it founds a cluster "
        "of one. A node with data rejoins as itself and never founds again.",
    )
    add_node_arguments(node)


def add_node_arguments(node: argparse.ArgumentParser) -> None:
    node.add_argument("--cluster", required=True, type=cluster_name, help="cluster name (required)")
    node.add_argument(
        "--name",
        default=socket.gethostname(),
        type=identity_name,
        help="this node's name, which picks its key in the certs folder (default: host name)",
    )
    node.add_argument(
        "--listen",
        type=address,
        default=("0.0.0.0", DEFAULT_PORT),
        metavar="HOST:PORT",
        help=f"UDP address to serve QUIC on (default: 0.0.0.0:{DEFAULT_PORT}, every interface). "
        "A node listening on a loopback address runs no mDNS",
    )
    node.add_argument(
        "--data",
        type=path,
        metavar="DIR",
        help="data directory for the log and snapshots (default: ./data/CLUSTER/NAME)",
    )
    add_certs(node)
    node.add_argument(
        "--peers",
        type=address_list,
        default=[],
        metavar="HOST:PORT,...",
        help="the other founding members' addresses",
    )
    node.add_argument(
        "--expect",
        type=_at_least(1),
        default=1,
        metavar="N",
        help="a new node waits until N nodes of the cluster (itself included) are found and "
        "verified before one of them founds it (default: 1; use 3 in production: with 1, "
        "nodes started apart can each found a cluster of their own)",
    )
    node.add_argument(
        "--voters",
        type=_at_least(1),
        default=3,
        metavar="N",
        help="the leader promotes nodes that join to voters while there are fewer than N "
        "(default: 3); later nodes stay learners, standing by",
    )
    node.add_argument(
        "--no-mdns",
        action="store_true",
        help="neither announce nor browse by mDNS (use --join or --peers instead)",
    )
    node.add_argument(
        "--mdns-interface",
        action="append",
        default=[],
        metavar="IFACE",
        help="run mDNS on this interface only (repeatable; default: every interface)",
    )
    node.add_argument(
        "--join",
        type=address_list,
        default=[],
        metavar="HOST:PORT,...",
        help="addresses of nodes to dial where multicast does not reach; treated like nodes "
        "found by mDNS. This node's hello tells the leader there where to reach it, so it is "
        "added even with --no-mdns",
    )
    node.add_argument(
        "--no-bootstrap",
        action="store_true",
        help="start empty and wait for an existing cluster to add this node "
        "(quicraft mgmt add-member)",
    )
    node.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="dev",
        help="timings: test (elections in 0.2-0.4 s), dev (0.5-1 s, the default), "
        "prod (1-2 s, rare snapshots); see docs/node.md",
    )
    node.add_argument(
        "--snapshot-every",
        type=int,
        metavar="N",
        help="applied entries between snapshots (default: the preset's: "
        + ", ".join(f"{t.snapshot_every:,} for {name}" for name, t in sorted(PRESETS.items()))
        + ")",
    )
    node.add_argument(
        "--max-connections-per-identity",
        type=_at_least(0),
        default=MAX_CONNECTIONS_PER_IDENTITY,
        metavar="N",
        help="connections one client, admin or reader identity may hold open to this node "
        f"from one host at once (default: {MAX_CONNECTIONS_PER_IDENTITY}; 0: no limit); one "
        "more is refused "
        "(too_many_connections). A client holds one, plus one per events subscription. "
        "Connections between nodes are not counted",
    )
    node.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="default: info; debug also logs aioquic's packets",
    )
    add_node_telemetry_arguments(node)


def _at_least(low: int) -> Callable[[str], int]:
    """An argument type: a whole number of at least `low` (0, where allowed: no limit)."""
    meaning = " (0: no limit)" if low == 0 else ""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            raise argparse.ArgumentTypeError(
                f"expected a whole number of at least {low}{meaning}, not {text!r}"
            )
        return value

    return parse


def settings_from(args: argparse.Namespace) -> NodeSettings:
    # A node on loopback cannot be reached from the LAN: announcing it there would only
    # mislead (and tests run nodes on loopback next to the machine's real interfaces).
    mdns = not args.no_mdns and not (is_loopback(args.listen[0]) and not args.mdns_interface)
    settings = NodeSettings(
        cluster=args.cluster,
        name=args.name,
        data_dir=args.data or Path("data") / args.cluster / args.name,
        certs_dir=args.certs,
        listen=args.listen,
        peers=tuple(args.peers),
        timings=PRESETS[args.preset],
        wait_to_be_added=args.no_bootstrap,
        discovery=DiscoverySettings(mdns, tuple(args.mdns_interface), tuple(args.join)),
        expect=args.expect,
        voters=args.voters,
        # A node founding on its own still hears the hellos of nodes given --join to it.
        lan=not args.peers and not args.no_bootstrap,
        telemetry=telemetry_settings(args),
        max_connections_per_identity=args.max_connections_per_identity,
    )
    if args.snapshot_every is not None:
        settings = settings.with_timings(snapshot_every=args.snapshot_every)
    return settings


def run(args: argparse.Namespace) -> int:
    configure_logging(args.log_level, args.log_format)
    if args.log_level == "debug":
        logging.getLogger("quic").setLevel(logging.DEBUG)

    def say(prefix: str, message: str, level: int = logging.ERROR) -> None:
        """A line for the operator. Under --log-format json it is a JSON log line like every
        other the node writes, so that whatever reads them parses this one too."""
        if args.log_format == "json":
            log.log(level, "%s", message)
        else:
            print(f"{prefix}{message}", file=sys.stderr)

    if args.snapshot_every is not None and args.snapshot_every < 1:
        say("quicraft node: ", "--snapshot-every must be at least 1")
        return MISUSE
    settings = settings_from(args)
    try:
        check(settings.telemetry)  # before anything starts
    except TelemetryError as err:
        say("quicraft node: ", str(err))
        return MISUSE
    if settings.expect > 1 and not settings.discovering and not settings.peers:
        say("quicraft node: ", "--expect needs mDNS (not --no-mdns, not on loopback) or --join")
        return MISUSE
    if args.listen in (args.peers or []):  # it would dial itself and found a cluster of one
        say(
            "quicraft node: ",
            f"--peers names this node's own address {format_address(args.listen)}: "
            "give the others' only",
        )
        return MISUSE
    if not settings.discovery.enabled and not args.no_mdns and not args.mdns_interface:
        log.info("listening on loopback: mDNS is off (listen on a LAN address to use it)")
    try:
        new = ensure_identity(settings)
        return asyncio.run(serve(settings, new))
    except (
        IdentityError,
        StorageError,
        TransportError,
        DiscoveryError,
        FoundingError,
        OSError,
    ) as err:
        say("quicraft: error: ", str(err))
        return FAILED
    except RemovedFromCluster as err:
        # Not a failure: what the operator asked for. Exit 0 so that a supervisor restarting
        # failed nodes leaves it stopped.
        say("quicraft: ", str(err), logging.INFO)
        return OK
    except KeyboardInterrupt:
        return OK


@dataclass(frozen=True, slots=True)
class NewIdentity:
    """A node key this command issued, and the node's data directory as it was then (empty
    or missing): what a command that fails before the node is known to anyone takes back,
    so that a failed start or restore leaves neither a key nor a data directory behind."""

    files: tuple[Path, Path]
    data_dir: Path
    made_from: Path | None  #: the highest of data_dir and its parents that did not exist

    def take_back(self) -> None:
        try:
            for path in self.files:
                path.unlink(missing_ok=True)
            log.info("removed %s and %s again: the node did not start", *self.files)
            if self.data_dir.is_dir():
                for child in self.data_dir.iterdir():  # all made since: it was empty
                    child.unlink()  # LevelDB makes files only
            for folder in (self.data_dir, *self.data_dir.parents):
                if self.made_from is None or not folder.is_dir():
                    break
                folder.rmdir()
                if folder == self.made_from:
                    break
        except OSError as err:
            log.warning("could not remove %s: %s", err.filename, err.strerror)


def ensure_identity(settings: NodeSettings) -> NewIdentity | None:
    """Issue this node's key when the cluster's CA is here and the node has none yet;
    returns what it made (None when the node has its key), to take back if the command
    fails. A new key needs a new node's data directory: missing or empty."""
    certs, cluster, name = settings.certs_dir, settings.cluster, settings.name
    if identity_exists(certs, cluster, name):
        return None
    data = settings.data_dir
    missing = [p for p in (data, *data.parents) if not os.path.lexists(p)]
    try:
        holds_files = data.is_dir() and any(data.iterdir())
    except OSError as err:
        raise StorageError(f"cannot read {data}: {err.strerror}") from None
    if holds_files:
        raise IdentityError(
            f"{data} is not empty but node {name!r} has no key in {certs / cluster}: if this "
            f"is its data, restore {name}.key and {name}.crt; a new node needs an empty --data"
        )
    check_cluster_folder(certs, cluster)
    crt = issue(certs, cluster, name, Role.NODE)
    log.info("issued a node key for %r", name)
    return NewIdentity((crt, crt.with_suffix(".key")), data, missing[-1] if missing else None)


async def serve(settings: NodeSettings, new: NewIdentity | None = None) -> int:
    """Run the node until a signal; `new` is taken back if it fails before it serves."""
    try:
        node = Node(settings)
    except BaseException:
        if new is not None:
            new.take_back()
        raise
    set_log_context(node.log_context)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stopping = asyncio.create_task(stop.wait())
    # Starting may wait for founding peers for a long time: a signal must still stop it.
    starting = asyncio.create_task(node.start())
    await asyncio.wait([starting, stopping], return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        await node.stop(hand_over=False)
        return OK
    try:
        starting.result()
    except BaseException:
        stopping.cancel()
        await node.stop(hand_over=False)
        if new is not None and node.server is None:  # nobody has heard of it: no key kept
            new.take_back()
        raise
    freeze_what_is_loaded()
    waiting = asyncio.create_task(node.wait())
    await asyncio.wait([waiting, stopping], return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    await node.stop(hand_over=True)
    if waiting.done():
        waiting.result()  # a fatal error of the Raft loop, e.g. the disk failing
    return OK
