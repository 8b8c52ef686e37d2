"""`quicraft kv get|set|del|incr|keys|cas|shell|watch`: the key-value store from the command line.

`watch PREFIX` prints each change of a key under PREFIX as it is applied, one per line, until
Ctrl-C (exit 130): "REVISION OP KEY = VALUE" for people (values as UTF-8 text, or "base64:..."),
or with --json the kv event's data (see `quicraft events`) plus its "pos".
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import cmd
import contextlib
import json
import os
import shlex
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from quicraft.client import Client, ClientError, InvalidRequest, connect
from quicraft.transport import IdentityError
from quicraft.wire import Event

from . import events
from .common import (
    FAILED,
    MISUSE,
    OK,
    CommandError,
    add_connection_arguments,
    endpoints_of,
    fail,
    seconds,
)
from .telemetry import add_tracing_arguments, client_tracing


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    kv = commands.add_parser(
        "kv",
        help="read and write the key-value store",
        description="Read and write a cluster's key-value store. Reads are linearizable "
        "unless --stale. Exit status: 0 success, 1 an operational error (or: key not found, "
        "cas not swapped), 2 misuse.",
    )
    ops = kv.add_subparsers(dest="op", required=True, metavar="OP")
    for op_parser in _op_parsers(ops):
        _add_connection_arguments(op_parser)
    shell = ops.add_parser(
        "shell", help="an interactive prompt for the same commands (with history and help)"
    )
    _add_connection_arguments(shell)
    watch = ops.add_parser(
        "watch",
        help="print each change of the keys starting with PREFIX, until Ctrl-C",
        description="Print each change (set, del, incr, cas) of a key starting with PREFIX as "
        "the cluster applies it, one per line, until Ctrl-C. Follows the cluster across lost "
        "nodes without gaps or repeats.",
    )
    watch.add_argument("prefix", nargs="?", default="", help="key prefix (default: every key)")
    _add_connection_arguments(watch)


def _op_parsers(
    ops: argparse._SubParsersAction[argparse.ArgumentParser],
) -> list[argparse.ArgumentParser]:
    get = ops.add_parser("get", help="print the value of KEY")
    get.add_argument("key")
    get.add_argument("--stale", action="store_true", help="read the contacted node's state at once")
    put = ops.add_parser("set", help="set KEY to VALUE; prints the revision")
    put.add_argument("key")
    put.add_argument("value")
    delete = ops.add_parser("del", help="delete KEY")
    delete.add_argument("key")
    incr = ops.add_parser("incr", help="add BY (default 1) to the integer at KEY")
    incr.add_argument("key")
    incr.add_argument("by", nargs="?", type=int, default=1)
    keys = ops.add_parser("keys", help="list keys starting with PREFIX")
    keys.add_argument("prefix", nargs="?", default="")
    keys.add_argument(
        "--stale", action="store_true", help="read the contacted node's state at once"
    )
    cas = ops.add_parser(
        "cas", help="set KEY to NEW only if it holds EXPECTED ('' with --absent: only if unset)"
    )
    cas.add_argument("key")
    cas.add_argument("expected")
    cas.add_argument("new")
    cas.add_argument("--absent", action="store_true", help="expect KEY to be unset")
    return [get, put, delete, incr, keys, cas]


def _add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    add_tracing_arguments(parser)  # a watch traces only its subscribes
    add_connection_arguments(
        parser,
        "nodes to contact; the client finds the leader from any of them",
        "role writer or admin (reader: reads only)",
    )
    parser.add_argument("--timeout", type=seconds, default=10.0, help="seconds (default: 10)")
    parser.add_argument("--json", action="store_true", help="print JSON")


def _text(value: bytes) -> dict[str, str]:
    try:
        return {"value": value.decode()}
    except UnicodeDecodeError:
        return {"value_base64": base64.b64encode(value).decode()}


async def execute(client: Client, args: argparse.Namespace) -> tuple[int, dict[str, Any], str]:
    """Run one operation: (exit code, JSON result, line for people)."""
    kv = client.kv
    if args.op == "get":
        value, revision = await kv.get_with_revision(args.key, stale=args.stale)
        if value is None:
            return FAILED, {"key": args.key, "found": False}, f"key {args.key!r} not found"
        text = _text(value)
        return (
            OK,
            {"key": args.key, "found": True, "revision": revision, **text},
            next(iter(text.values())),
        )
    if args.op == "set":
        revision = await kv.set(args.key, os.fsencode(args.value))  # the bytes as given
        return OK, {"key": args.key, "revision": revision}, f"OK (revision {revision})"
    if args.op == "del":
        deleted = await kv.delete(args.key)
        return OK, {"key": args.key, "deleted": deleted}, "deleted" if deleted else "not found"
    if args.op == "incr":
        number = await kv.incr(args.key, args.by)
        return OK, {"key": args.key, "value": number}, str(number)
    if args.op == "keys":
        keys = await kv.keys(args.prefix, stale=args.stale)
        return OK, {"keys": keys}, "\n".join(keys)
    expected = None if args.absent else os.fsencode(args.expected)
    swapped = await kv.cas(args.key, expected, os.fsencode(args.new))
    return (
        (OK if swapped else FAILED),
        {"key": args.key, "swapped": swapped},
        ("swapped" if swapped else "not swapped: the value was not the expected one"),
    )


def _change(as_json: bool, event: Event) -> str:
    """One line for a kv event (watch)."""
    data = event.data
    if as_json:
        return json.dumps({"pos": event.pos, **events.jsonable(data)})
    value = data["value"]
    if value is None:
        shown = ""
    elif isinstance(value, bytes):
        text = _text(value)
        shown = " = " + (text["value"] if "value" in text else "base64:" + text["value_base64"])
    else:
        shown = f" = {value}"
    return f"{data['revision']} {data['op']} {data['key']}{shown}"


def _print(code: int, result: dict[str, Any], line: str, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result))
    elif line:
        print(line)


def run(args: argparse.Namespace) -> int:
    if args.op == "watch":
        return events.follow(args, ["kv"], args.prefix or None, None, partial(_change, args.json))
    with client_tracing(args):  # before the client is made: it looks for a tracer then
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    try:
        client = connect(endpoints_of(args), args.cluster, args.certs, args.name, args.timeout)
    except (ValueError, IdentityError, CommandError) as err:
        return fail(str(err))
    if args.op == "shell":
        return _Shell(client, args.json).run()
    return asyncio.run(_run_once(client, args))


async def _run_once(client: Client, args: argparse.Namespace) -> int:
    async with client:
        try:
            code, result, line = await execute(client, args)
        except InvalidRequest as err:
            fail(str(err))
            return MISUSE
        except ClientError as err:
            return fail(str(err))
    _print(code, result, line, args.json)
    return code


class _Shell(cmd.Cmd):
    """`quicraft kv shell`: one client kept open between commands."""

    intro = "quicraft kv shell: get, set, del, incr, keys, cas; 'help' or 'help set'; Ctrl-D quits."
    prompt = "kv> "

    def __init__(self, client: Client, as_json: bool):
        super().__init__()
        self.client = client
        self.as_json = as_json
        self.loop = asyncio.new_event_loop()
        self.parser = argparse.ArgumentParser(prog="", add_help=False, exit_on_error=False)
        ops = self.parser.add_subparsers(dest="op", required=True)
        self.ops = {p.prog.split()[-1]: p for p in _op_parsers(ops)}
        for op, sub in self.ops.items():
            sub.prog = op  # "usage: set key value", as typed at this prompt
            setattr(self, f"help_{op}", _printer(sub.format_help))

    def run(self) -> int:
        history = Path.home() / ".quicraft_history"
        try:
            import readline

            if history.exists():
                readline.read_history_file(history)
        except (ImportError, OSError):
            readline = None  # type: ignore[assignment]
        try:
            self.cmdloop()
        except KeyboardInterrupt:
            print()
        finally:
            if readline is not None:
                with contextlib.suppress(OSError):
                    readline.write_history_file(history)
            self.loop.run_until_complete(self.client.close())
            self.loop.close()
        return OK

    def default(self, line: str) -> None:
        try:
            args = self.parser.parse_args(shlex.split(line))
        except (argparse.ArgumentError, ValueError, SystemExit) as err:
            print(f"error: {err}" if str(err) else "error: bad command; try 'help'")
            return
        try:
            code, result, text = self.loop.run_until_complete(execute(self.client, args))
        except ClientError as err:
            print(f"error: {err}")
            return
        _print(code, result, text, self.as_json)

    def do_exit(self, _: str) -> bool:
        """Leave the shell."""
        return True

    def do_EOF(self, _: str) -> bool:
        print()
        return True

    def emptyline(self) -> bool:
        return False

    def completenames(self, text: str, *ignored: Any) -> list[str]:
        return [op for op in [*self.ops, "help", "exit"] if op.startswith(text)]


def _printer(make_text: Callable[[], str]) -> Callable[[], None]:
    return lambda: print(make_text())
