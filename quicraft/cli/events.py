"""`quicraft events`: a cluster's events as JSON lines, until Ctrl-C (exit 130).

Each line is one event: {"pos", "kind", "at_ms", "data"}. In data, bytes (a kv event's
value and previous) are written as UTF-8 text when they are valid UTF-8; otherwise the field
is renamed with a `_base64` suffix and holds base64 ("value_base64": "..."), as `quicraft kv
get --json` does. An incr's count is a JSON number.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

from quicraft.client import Client, ClientError, EventsCompacted, InvalidRequest, connect
from quicraft.client.events import check_subscription
from quicraft.transport import IdentityError
from quicraft.wire import EVENT_KINDS, Event

from . import common
from .common import MISUSE, OK, fail
from .telemetry import add_tracing_arguments, client_tracing


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "events",
        help="print cluster events as JSON lines",
        description="Subscribe to a cluster's events and print each as one JSON line, until "
        "Ctrl-C (exit 130). It follows the cluster across lost connections and nodes, without "
        "gaps or repeats. Exit status: 1 if the subscription is refused (e.g. compacted: the "
        "node no longer holds the events after --since), 2 misuse. See docs/events.md.",
    )
    parser.add_argument(
        "--kinds",
        type=kinds,
        metavar="K1,K2",
        help=f"only these kinds (default: all): {', '.join(sorted(EVENT_KINDS))}",
    )
    parser.add_argument(
        "--prefix",
        type=common.utf8_text,
        help="kv events only for keys starting with this (other kinds unaffected)",
    )
    parser.add_argument(
        "--since",
        type=position,
        metavar="POS",
        help="resume after this position (the 'pos' of the last event handled); "
        "default: only events from now on",
    )
    add_tracing_arguments(parser)  # a subscription traces only its subscribes
    add_connection_arguments(parser)


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_connection_arguments(
        parser,
        "nodes to subscribe at; on losing one the subscription moves to the next",
        "role reader or up",
    )


def kinds(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = sorted(set(names) - EVENT_KINDS)
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown event kind {', '.join(unknown) or repr(text)}; "
            f"kinds are {', '.join(sorted(EVENT_KINDS))}"
        )
    return sorted(set(names))


def position(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a position: {text!r}") from None
    if not 0 <= value < 1 << 64:
        raise argparse.ArgumentTypeError(f"a position is 0 to 2**64 - 1: {text!r}")
    return value


def jsonable(data: dict[str, Any]) -> dict[str, Any]:
    """`data` with bytes as UTF-8 text, or base64 under the field's name + "_base64"."""
    out: dict[str, Any] = {}
    for name, value in data.items():
        if isinstance(value, bytes):
            try:
                out[name] = value.decode("utf-8")
            except UnicodeDecodeError:
                out[f"{name}_base64"] = base64.b64encode(value).decode("ascii")
        else:
            out[name] = value
    return out


def event_json(event: Event) -> str:
    line = {"pos": event.pos, "kind": event.kind, "at_ms": event.at_ms}
    return json.dumps({**line, "data": jsonable(event.data)})


def run(args: argparse.Namespace) -> int:
    if args.prefix is not None and args.kinds is not None and "kv" not in args.kinds:
        fail("--prefix filters kv events, which --kinds leaves out")
        return MISUSE
    return follow(args, args.kinds, args.prefix, args.since, event_json)


def follow(
    args: argparse.Namespace,
    wanted: list[str] | None,
    prefix: str | None,
    since: int | None,
    show: Callable[[Event], str],
) -> int:
    """Print show(event) for each event until interrupted; ClientError is one line, exit 1.
    The subscription's warnings (no node answers) go to stderr as they happen."""
    try:  # a prefix no node would take (too long, not UTF-8) is misuse: exit 2, as kv get
        check_subscription(wanted, prefix, since)
    except InvalidRequest as err:
        fail(err.message)
        return MISUSE
    warnings = logging.StreamHandler(sys.stderr)
    warnings.setFormatter(logging.Formatter("quicraft: %(message)s"))
    client_log = logging.getLogger("quicraft.client")
    client_log.addHandler(warnings)
    client_log.setLevel(logging.WARNING)
    with client_tracing(args):
        try:
            client = connect(common.endpoints_of(args), args.cluster, args.certs, args.name)
        except (ValueError, IdentityError, common.CommandError) as err:
            return fail(str(err))
        return asyncio.run(_follow(client, wanted, prefix, since, show))


async def _follow(
    client: Client,
    wanted: list[str] | None,
    prefix: str | None,
    since: int | None,
    show: Callable[[Event], str],
) -> int:
    async with client:
        try:
            async with contextlib.aclosing(client.events(wanted, prefix, since)) as events:
                async for event in events:
                    print(show(event), flush=True)
        except EventsCompacted as err:
            return fail(f"{err}; re-read the state, then use --since {err.oldest}")
        except ClientError as err:
            return fail(str(err))
    return OK
