"""`quicraft kv get|set|del|incr|keys|cas|shell|watch`: the key-value store from the command line.

Only results go to stdout: a value as UTF-8 text, or "base64:..." when it is not UTF-8 (with
--json, "value" or "value_base64"); messages go to stderr. `set KEY -` reads the value from
stdin. `shell` runs the same operations typed at a prompt (or read from a script).

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
import io
import json
import os
import shlex
import sys
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple, NoReturn, TypeVar

from quicraft.client import Client, ClientError, InvalidRequest, connect
from quicraft.transport import IdentityError
from quicraft.wire import MAX_VALUE, Event

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
    utf8_text,
)
from .telemetry import add_tracing_arguments, client_tracing

#: The operations of `quicraft kv OP` and of its shell, with one line of help each.
OPS = {
    "get": "print the value of KEY (not UTF-8: 'base64:' and its base64)",
    "set": "set KEY to VALUE ('-': the bytes read from stdin); prints the revision",
    "del": "delete KEY (a KEY already unset is not an error)",
    "incr": "add BY (default 1) to the integer at KEY; prints the new value",
    "keys": "list the keys starting with PREFIX",
    "cas": "set KEY to NEW only if it holds EXPECTED (--absent: only if KEY is unset)",
}
#: The shell's: its stdin holds its commands, so a value is only ever as typed ('-' is refused).
SHELL_OPS = {**OPS, "set": "set KEY to VALUE, as typed; prints the revision"}

Parser = TypeVar("Parser", bound=argparse.ArgumentParser)

#: What a value that is not UTF-8 prints as, before its base64 (as `kv watch` prints it).
BASE64 = "base64:"


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    kv = commands.add_parser(
        "kv",
        help="read and write the key-value store",
        description="Read and write a cluster's key-value store. Reads are linearizable "
        "unless --stale. Values are printed as text, or as 'base64:...' when they are not "
        "UTF-8 (--json: 'value' or 'value_base64'). Only results go to stdout; messages go "
        "to stderr. Exit status: 0 success (del of an unset key too), 1 an operational error "
        "(or: get of an unset key, cas not swapped), 2 misuse.",
    )
    ops = kv.add_subparsers(dest="op", required=True, metavar="OP")
    for op_parser in _op_parsers(ops):
        _add_connection_arguments(op_parser)
    shell = ops.add_parser(
        "shell",
        help="a prompt for the same commands, one client for all (help lists them)",
        description="Run get, set, del, incr, keys and cas typed at a prompt, over one "
        "connection ('help' lists them; exit, quit or Ctrl-D leaves). At a terminal, Ctrl-C "
        "cancels the line or the command running, and the lines are kept in "
        "~/.quicraft_history. With stdin not a terminal (a script), there is no prompt, "
        "results go to stdout and errors to stderr, Ctrl-C stops the shell (exit 130), and "
        "the exit status is 1 if any command failed.",
    )
    _add_connection_arguments(shell)
    watch = ops.add_parser(
        "watch",
        help="print each change of the keys starting with PREFIX, until Ctrl-C",
        description="Print each change (set, del, incr, cas) of a key starting with PREFIX as "
        "the cluster applies it, one per line, until Ctrl-C. Follows the cluster across lost "
        "nodes without gaps or repeats.",
    )
    watch.add_argument(
        "prefix", nargs="?", default="", type=utf8_text, help="key prefix (default: every key)"
    )
    _add_connection_arguments(watch)


def _op_parsers(ops: argparse._SubParsersAction[Parser], shell: bool = False) -> list[Parser]:
    """The parsers of the operations, as `quicraft kv OP` has them or (`shell`) its shell."""
    helps = SHELL_OPS if shell else OPS

    def add(op: str, description: str = "") -> Parser:
        summary = helps[op][:1].upper() + helps[op][1:] + "."
        return ops.add_parser(op, help=helps[op], description=description or summary)

    get = add(
        "get",
        "Print the value of KEY: its text, or 'base64:' and its base64 if it is not UTF-8 "
        "(--json: 'value' or 'value_base64'). Exit status 1 if KEY is not set.",
    )
    get.add_argument("key", type=utf8_text, help="the key (UTF-8 text)")
    get.add_argument("--stale", action="store_true", help="read the contacted node's state at once")
    if shell:
        put = add(
            "set",
            "Set KEY to VALUE, as typed, and print the revision of the write. A value from "
            "stdin ('-') is for 'quicraft kv set': the shell's stdin holds its commands.",
        )
        put.add_argument("key", type=utf8_text, help="the key (UTF-8 text)")
        put.add_argument("value", help="the value")
    else:
        put = add(
            "set",
            "Set KEY to VALUE (the bytes given) and print the revision of the write. VALUE '-' "
            "reads the value from stdin instead: its bytes exactly, a final newline included, "
            f"up to {MAX_VALUE} bytes (1 MiB, the most a node stores).",
        )
        put.add_argument("key", type=utf8_text, help="the key (UTF-8 text)")
        put.add_argument("value", help="the value, or '-' to read it from stdin")
    delete = add(
        "del",
        "Delete KEY. Deleting a key that is not set succeeds too (exit 0), and says so on stderr.",
    )
    delete.add_argument("key", type=utf8_text, help="the key (UTF-8 text)")
    incr = add("incr")
    incr.add_argument("key", type=utf8_text, help="the key (UTF-8 text)")
    incr.add_argument(
        "by", nargs="?", type=int, default=1, help="what to add, negative too (default: 1)"
    )
    keys = add("keys")
    keys.add_argument(
        "prefix", nargs="?", default="", type=utf8_text, help="key prefix (default: every key)"
    )
    keys.add_argument(
        "--stale", action="store_true", help="read the contacted node's state at once"
    )
    cas = add(
        "cas",
        "Set KEY to NEW only if it holds EXPECTED; with --absent, only if KEY is unset (then "
        "EXPECTED is left out, or ''). Exit status 1 if it did not swap.",
    )
    cas.usage = "%(prog)s [-h] key expected new\n       %(prog)s [-h] key new --absent"
    cas.add_argument("key", type=utf8_text, help="the key (UTF-8 text)")
    cas.add_argument("expected", help="the value KEY must hold (left out with --absent)")
    cas.add_argument("new", nargs="?", help="the value to set")
    cas.add_argument("--absent", action="store_true", help="swap only if KEY is unset")
    return [get, put, delete, incr, keys, cas]


def _add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    add_tracing_arguments(parser)  # a watch traces only its subscribes
    add_connection_arguments(
        parser,
        "nodes to contact; the client finds the leader from any of them",
        "role client or admin (reader: get and keys only)",
    )
    parser.add_argument("--timeout", type=seconds, default=10.0, help="seconds (default: 10)")
    parser.add_argument("--json", action="store_true", help="print JSON")


class Misuse(Exception):
    """A command that cannot be run as given: one line, exit status 2."""


def prepare(args: argparse.Namespace, stdin: BinaryIO | None) -> None:
    """Check what argparse cannot, and turn values into the bytes to send: a `set` VALUE of
    '-' is read from `stdin` (None: there is none to read, as in the shell)."""
    if args.op == "set":
        if args.value != "-":
            args.value = os.fsencode(args.value)  # the bytes as given
        elif stdin is None:
            raise Misuse("set: '-' (the value from stdin) works in 'quicraft kv set', not here")
        else:
            args.value = stdin.read(MAX_VALUE + 1)
            if len(args.value) > MAX_VALUE:
                raise Misuse(
                    f"set: the value on stdin is over {MAX_VALUE} bytes (1 MiB), the "
                    "most a node stores"
                )
    elif args.op == "cas":
        if not args.absent:
            if args.new is None:
                raise Misuse("cas: give KEY EXPECTED NEW, or KEY NEW --absent")
            args.expected = os.fsencode(args.expected)
        elif args.new is None:  # KEY NEW --absent
            args.expected, args.new = None, args.expected
        elif args.expected:
            raise Misuse(
                f"cas: --absent swaps only if KEY is unset, so it takes no EXPECTED (got "
                f"{args.expected!r}): give KEY NEW --absent"
            )
        else:  # KEY '' NEW --absent, as before
            args.expected = None
        args.new = os.fsencode(args.new)


def shown(value: bytes) -> str:
    """A value for people: its text, or "base64:" and its base64 if it is not UTF-8."""
    text = _text(value)
    return text["value"] if "value" in text else BASE64 + text["value_base64"]


def _text(value: bytes) -> dict[str, str]:
    try:
        return {"value": value.decode()}
    except UnicodeDecodeError:
        return {"value_base64": base64.b64encode(value).decode()}


class Outcome(NamedTuple):
    """What an operation did: its exit code, its result as JSON, what goes to stdout (the
    value, for people) and a message for stderr (why it failed, or a remark)."""

    code: int
    result: dict[str, Any]
    out: str
    message: str = ""


async def execute(client: Client, args: argparse.Namespace) -> Outcome:
    """Run one operation, `prepare`d."""
    kv = client.kv
    if args.op == "keys":
        keys = await kv.keys(args.prefix, stale=args.stale)
        return Outcome(OK, {"keys": keys}, "\n".join(keys))
    key = args.key
    if args.op == "get":
        value, revision = await kv.get_with_revision(key, stale=args.stale)
        if value is None:
            return Outcome(FAILED, {"key": key, "found": False}, "", f"key {key!r} not found")
        result = {"key": key, "found": True, "revision": revision, **_text(value)}
        return Outcome(OK, result, shown(value))
    if args.op == "set":
        revision = await kv.set(key, args.value)
        return Outcome(OK, {"key": key, "revision": revision}, f"OK (revision {revision})")
    if args.op == "del":
        if await kv.delete(key):
            return Outcome(OK, {"key": key, "deleted": True}, "deleted")
        return Outcome(
            OK, {"key": key, "deleted": False}, "", f"key {key!r} not found; nothing deleted"
        )
    if args.op == "incr":
        number = await kv.incr(key, args.by)
        return Outcome(OK, {"key": key, "value": number}, str(number))
    if await kv.cas(key, args.expected, args.new):
        return Outcome(OK, {"key": key, "swapped": True}, "swapped")
    why = "is set" if args.expected is None else "does not hold the expected value"
    return Outcome(FAILED, {"key": key, "swapped": False}, "", f"not swapped: {key!r} {why}")


def _change(as_json: bool, event: Event) -> str:
    """One line for a kv event (watch)."""
    data = event.data
    if as_json:
        return json.dumps({"pos": event.pos, **events.jsonable(data)})
    value = data["value"]
    if value is None:
        text = ""
    elif isinstance(value, bytes):
        text = " = " + shown(value)
    else:
        text = f" = {value}"
    return f"{data['revision']} {data['op']} {data['key']}{text}"


def run(args: argparse.Namespace) -> int:
    if args.op == "watch":
        return events.follow(args, ["kv"], args.prefix or None, None, partial(_change, args.json))
    try:
        if sys.stdin is None:  # started with stdin closed (`<&-`): Python leaves it None
            if args.op == "shell":
                raise Misuse("shell: reads its commands from stdin, which is closed")
            if args.op == "set" and args.value == "-":
                raise Misuse("set: '-' reads the value from stdin, which is closed")
            prepare(args, None)
        elif args.op != "shell":
            prepare(args, sys.stdin.buffer)
    except Misuse as err:
        fail(str(err))
        return MISUSE
    with client_tracing(args):  # before the client is made: it looks for a tracer then
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    try:
        client = connect(endpoints_of(args), args.cluster, args.certs, args.name, args.timeout)
    except (ValueError, IdentityError, CommandError) as err:
        return fail(str(err))
    if args.op == "shell":
        return _Shell(client, args.json, sys.stdin.isatty()).run()
    return asyncio.run(_run_once(client, args))


async def _run_once(client: Client, args: argparse.Namespace) -> int:
    async with client:
        try:
            outcome = await execute(client, args)
        except InvalidRequest as err:
            fail(str(err))
            return MISUSE
        except ClientError as err:
            return fail(str(err))
    if args.json:
        print(json.dumps(outcome.result))
    elif outcome.out:
        print(outcome.out)
    if outcome.message and not args.json:
        if outcome.code == OK:
            print(f"quicraft: {outcome.message}", file=sys.stderr)
        else:
            fail(outcome.message)
    return outcome.code


class _Helped(Exception):
    """An op's -h printed its help."""


class _ShellParser(argparse.ArgumentParser):
    """An op's parser at the shell's prompt: misuse raises Misuse("OP: what is wrong")
    instead of printing the usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise Misuse(f"{self.prog}: {message}")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise _Helped


class _Shell(cmd.Cmd):
    """`quicraft kv shell`: one client kept open between commands. With stdin a terminal
    (`interactive`) it prompts, keeps history and survives Ctrl-C; otherwise it runs a script:
    no prompt, and Ctrl-C or a failed command makes the exit status 130 or 1."""

    intro = "quicraft kv shell: get, set, del, incr, keys, cas; 'help' lists them; 'quit' leaves."
    prompt = "kv> "

    def __init__(self, client: Client, as_json: bool, interactive: bool):
        super().__init__(completekey="tab" if interactive else "")
        self.client = client
        self.as_json = as_json
        self.interactive = interactive
        self.failed = False  # a command failed
        if not interactive:
            self.intro, self.prompt = "", ""
        self.runner = asyncio.Runner()  # Ctrl-C during a command cancels it
        ops = _ShellParser(prog="kv", add_help=False).add_subparsers()
        self.ops = {p.prog.split()[-1]: p for p in _op_parsers(ops, shell=True)}
        for op, sub in self.ops.items():
            sub.prog = op  # "usage: set [-h] key value", as typed at this prompt

    def run(self) -> int:
        if isinstance(sys.stdin, io.TextIOWrapper):
            # A line that is not UTF-8 reaches its command as argv's bytes do (os.fsdecode),
            # where a key refuses it and the shell goes on. Under a strict locale (such as
            # en_US.UTF-8) reading the line ended the shell with a traceback.
            sys.stdin.reconfigure(errors="surrogateescape")
        history = _read_history() if self.interactive else None
        try:
            while True:
                try:
                    self.cmdloop()
                    break
                except KeyboardInterrupt:  # at the prompt: a terminal's Ctrl-C drops the line
                    if not self.interactive:
                        raise
                    print()
                    self.intro = ""
        finally:
            if history is not None:
                _write_history(history)
            self.runner.run(self.client.close())
            self.runner.close()
        return FAILED if self.failed and not self.interactive else OK

    def default(self, line: str) -> None:
        try:
            op, *words = shlex.split(line)
            parser = self.ops.get(op)
            if parser is None:
                raise Misuse(f"unknown command {op!r}; 'help' lists them")
            args = parser.parse_args(words, argparse.Namespace(op=op))
            prepare(args, None)
        except _Helped:
            return
        except (Misuse, ValueError) as err:  # ValueError: shlex, "No closing quotation"
            return self._error(str(err))
        try:
            outcome = self.runner.run(execute(self.client, args))
        except ClientError as err:
            return self._error(str(err))
        except KeyboardInterrupt:
            if not self.interactive:
                raise
            return self._error("interrupted; a write may have been applied or not")
        if self.as_json:
            print(json.dumps(outcome.result))
        elif outcome.out:
            print(outcome.out)
        if outcome.code != OK:
            self._error(outcome.message)
        elif outcome.message and not self.as_json:
            print(outcome.message, file=sys.stderr)

    def _error(self, message: str) -> None:
        self.failed = True
        sys.stdout.flush()  # what came before, first
        print(f"error: {message}", file=sys.stderr)

    def do_help(self, arg: str) -> None:
        """List the commands; 'help OP' shows OP's usage."""
        if arg in self.ops:
            self.ops[arg].print_help()
            return
        if arg and arg not in ("help", "exit", "quit"):
            return self._error(f"unknown command {arg!r}; 'help' lists them")
        print("commands ('help OP' or 'OP -h' shows its usage):")
        for op, summary in SHELL_OPS.items():
            print(f"  {op:<5} {summary}")
        print("  exit  leave the shell (also 'quit', or Ctrl-D)")

    def do_exit(self, _: str) -> bool:
        """Leave the shell."""
        return True

    do_quit = do_exit

    def do_EOF(self, _: str) -> bool:
        if self.interactive:
            print()
        return True

    def emptyline(self) -> bool:
        return False

    def completenames(self, text: str, *ignored: Any) -> list[str]:
        return [op for op in [*self.ops, "help", "exit", "quit"] if op.startswith(text)]


#: The shell's history (at a terminal only).
HISTORY = "~/.quicraft_history"


def _read_history() -> Path | None:
    """Load the shell's history, if readline and a home folder exist: the path to save it."""
    try:
        import readline

        path = Path(HISTORY).expanduser()
    except (ImportError, RuntimeError):  # no readline; no home folder
        return None
    readline.set_history_length(1000)
    with contextlib.suppress(OSError):  # none yet, or unreadable: start afresh
        readline.read_history_file(path)
    return path


def _write_history(path: Path) -> None:
    import readline

    with contextlib.suppress(OSError):
        readline.write_history_file(path)
