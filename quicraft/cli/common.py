"""What every command shares: argument types, the --certs flag, how a client finds the
cluster (--endpoints, or mDNS) and error reporting."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import math
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

from quicraft.discovery import DiscoveryError, find_nodes
from quicraft.transport import IdentityError, check_name, load_identity
from quicraft.transport.address import Address, format_address, is_unspecified, parse_address

#: Exit codes: 0 success, 1 an operational error (one line on stderr), 2 misuse.
OK, FAILED, MISUSE = 0, 1, 2


class CommandError(Exception):
    """An operational error: printed as one line, exit code 1."""


#: What ends a command that did not expect it: `timeout` and `kill` send SIGTERM, a terminal
#: that is closed SIGHUP.
_ENDING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def ended_as_by_ctrl_c() -> Iterator[None]:
    """Inside, SIGTERM and SIGHUP act as a Ctrl-C does, so that the cleanup a Ctrl-C runs
    (stopping the node processes a command started in their own sessions) runs for them too:
    by default they end this process at once and leave those nodes running. A signal that is
    ignored (nohup) stays ignored. Only in the main thread, where handlers can be set."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    replaced = {
        number: signal.signal(number, _as_ctrl_c)
        for number in _ENDING_SIGNALS
        if signal.getsignal(number) is signal.SIG_DFL
    }
    try:
        yield
    finally:
        for number, handler in replaced.items():
            signal.signal(number, handler)


def _as_ctrl_c(number: int, frame: FrameType | None) -> None:
    """Call the SIGINT handler in place: Python's raises KeyboardInterrupt, asyncio.run's
    cancels its task first, node/local.py's holds it while a process starts."""
    handler = signal.getsignal(signal.SIGINT)
    if not callable(handler):  # SIGINT is ignored (a background job of a script): end anyway
        raise KeyboardInterrupt
    handler(signal.SIGINT, frame)


def address(text: str) -> Address:
    try:
        return parse_address(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def dial_address(text: str) -> Address:
    """An argument type: HOST:PORT of a node to dial."""
    return _dialable(address(text))


def _dialable(found: Address) -> Address:
    """`found`, unless it is the wildcard a node listens on (0.0.0.0, ::): dialed, that
    reaches nothing, or this host only, whichever host the node is on."""
    if is_unspecified(found[0]):
        raise argparse.ArgumentTypeError(
            f"{format_address(found)} is the wildcard address a node listens on, not one to "
            "dial: give a real address of that host (127.0.0.1 for this one)"
        )
    return found


def seconds(text: str) -> float:
    """A positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be more than 0 and finite, not {text}")
    return value


def int_in(low: int, high: int) -> Callable[[str], int]:
    """An argument type: a whole number from `low` to `high`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low:,} to {high:,}, not {value:,}")
        return value

    return parse


def path(text: str) -> Path:
    """An argument type: a file or folder. An empty one is a mistake (`--data "$DIR"` with DIR
    unset), never the current directory, which Path('') is: a node kept its store there."""
    if not text:
        raise argparse.ArgumentTypeError("expected a path, not '' (an unset variable?)")
    return Path(text)


def utf8_text(text: str) -> str:
    """An argument type: a key or prefix, which is UTF-8 text. Bytes that are not UTF-8 (a
    Latin-1 name, say) reach Python as lone surrogates (os.fsdecode); the client refused
    those in words about surrogates, which the user never typed: name the byte instead."""
    bad = next((c for c in text if "\ud800" <= c <= "\udfff"), None)
    if bad is None:
        return text
    byte = ord(bad) - 0xDC00  # os.fsdecode's escape of the byte 0x80-0xff it could not decode
    shown = f"the byte 0x{byte:02x}" if 0x80 <= byte <= 0xFF else repr(bad)
    raise argparse.ArgumentTypeError(
        f"not UTF-8 text (it holds {shown}): keys and prefixes are UTF-8; values may be any bytes"
    )


def cluster_name(text: str) -> str:
    """An argument type: a name a cluster may have (it names a folder of keys)."""
    return _checked(text, "cluster name")


def identity_name(text: str) -> str:
    """An argument type: a name a node or client identity may have (it names its files)."""
    return _checked(text, "name")


def _checked(text: str, what: str) -> str:
    try:
        check_name(text, what)
    except IdentityError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


#: The port before a local cluster's first: its nodes listen on BASE+1 … BASE+9 at most.
base_port = int_in(1024, 65535 - 9)


def address_list(text: str) -> list[Address]:
    """One or more HOST:PORT, separated by commas: an empty list is a mistake (an unset shell
    variable, say), never "no peers" or "look on mDNS"."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if any(_several(part) for part in parts):
        # parse_address would take "A:1;B:2" or "A:1 B:2" for an IPv6 address without brackets
        raise argparse.ArgumentTypeError(
            f"separate the addresses with commas (HOST:PORT,HOST:PORT), not as in {text!r}"
        )
    found = [address(part) for part in parts]
    if not found:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT,..., not {text!r}")
    return found


def _several(text: str) -> bool:
    """Whether `text` is two or more addresses separated by semicolons or spaces."""
    pieces = re.split(r"[;\s]+", text.strip(" ;"))
    if len(pieces) < 2:
        return False
    try:
        for piece in pieces:
            parse_address(piece)
    except ValueError:
        return False
    return True


def endpoint_list(text: str) -> str:
    """address_list, given back as the "HOST:PORT,..." that clients take; none a wildcard."""
    return ",".join(format_address(_dialable(a)) for a in address_list(text))


def check_cluster_folder(certs: Path, cluster: str) -> None:
    """Before issuing a key: when CERTS/CLUSTER/ is missing, fail the way loading a key does,
    naming the clusters that CERTS holds. Issuing into it said only "create the cluster's CA
    with quicraft certs init", which for a mistyped --cluster makes a second cluster.
    (The transport's `issue` could say this itself; until then, here.)"""
    if not os.path.lexists(certs / cluster):
        load_identity(certs, cluster, "admin")  # raises IdentityError: no such folder


#: Where the command line looks for cluster folders unless given --certs.
DEFAULT_CERTS = Path("certs")


def add_certs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--certs",
        type=path,
        default=DEFAULT_CERTS,
        metavar="DIR",
        help="folder holding one sub-folder of keys per cluster (default: ./certs)",
    )


#: How long a client without --endpoints listens on mDNS for the first node of its cluster.
FIND_WAIT_S = 3.0


def add_connection_arguments(parser: argparse.ArgumentParser, endpoints: str, role: str) -> None:
    """--cluster, --endpoints (help: `endpoints`), --mdns-interface, --certs and --name (an
    identity of `role`)."""
    parser.add_argument("--cluster", required=True, type=cluster_name, help="cluster name")
    parser.add_argument(
        "--endpoints",
        type=endpoint_list,
        metavar="HOST:PORT,...",
        help=f"{endpoints} (default: find the nodes of --cluster on the LAN by mDNS)",
    )
    parser.add_argument(
        "--mdns-interface",
        action="append",
        default=[],
        metavar="IFACE",
        help="without --endpoints: look for the nodes on IFACE only (repeatable; default: "
        "every interface)",
    )
    add_certs(parser)
    parser.add_argument(
        "--name",
        default="admin",
        type=identity_name,
        help=f"identity to use, {role} (default: admin)",
    )


def endpoints_of(args: argparse.Namespace) -> str:
    """--endpoints, or else the nodes of --cluster that answer on mDNS, as "HOST:PORT,..."."""
    if args.endpoints:
        return str(args.endpoints)
    hint = "give --endpoints HOST:PORT"
    try:
        found = asyncio.run(
            find_nodes(args.cluster, interfaces=args.mdns_interface, wait_s=FIND_WAIT_S)
        )
    except DiscoveryError as err:
        raise CommandError(f"cannot look for the nodes on mDNS: {err}; {hint}") from None
    if not found:
        raise CommandError(
            f"no node of cluster {args.cluster!r} answered on mDNS within {FIND_WAIT_S:g} s; "
            f"{hint} (nodes started with --no-mdns or listening on loopback do not announce)"
        )
    return ",".join(format_address(peer.address) for peer in found)


def freeze_what_is_loaded() -> None:
    """Leave everything allocated so far (modules, classes, functions: about 50,000
    objects) out of the garbage collector's full passes. Those pauses grow with the objects
    it tracks, and took 90-100 ms in a node under load, stopping its loop meanwhile. Only
    for a process that a command runs from start to end: it changes the whole process."""
    gc.collect()  # what is garbage now is not frozen along (it would never be freed)
    gc.freeze()


def fail(message: str) -> int:
    print(f"quicraft: error: {message}", file=sys.stderr)
    return FAILED
