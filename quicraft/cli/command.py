"""The `quicraft` command. It only parses arguments, calls the library and prints. It is
run by main() in __init__.py, which loads it and says when it is interrupted (Ctrl-C).

Exit codes: 0 success, 1 an operational error (one line on stderr; the output that cannot be
written too: output.py), 2 misuse, 130 interrupted (Ctrl-C, said by __init__.py), 141 the
reader of the output went away (`quicraft events | head -n 1`), as for a Unix tool that
SIGPIPE ends.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import logging
import sys

from quicraft.node.version import build_text
from quicraft.sim.__main__ import add_arguments as add_sim_arguments
from quicraft.sim.__main__ import run as run_sim
from quicraft.telemetry import TelemetryError, configure_logging

from . import bench, certs, events, kv, local, mgmt, node
from .common import FAILED, MISUSE
from .output import OutputError, drop_pending, guard_stdout


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="quicraft",
        description="Raft consensus over QUIC. See 'quicraft COMMAND --help'.",
    )
    parser.add_argument("--version", action="version", version=build_text())
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    node.add_parser(commands)
    kv.add_parser(commands)
    mgmt.add_parser(commands)
    events.add_parser(commands)
    local.add_parser(commands)
    bench.add_parser(commands)
    certs.add_parser(commands)
    sim = commands.add_parser(
        "sim",
        help="run the deterministic cluster simulator (same as 'python -m quicraft.sim')",
        description="Run seeded simulations of a Raft cluster under faults and check safety, "
        "liveness and linearizability.",
    )
    add_sim_arguments(sim)
    return parser


def innermost(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the innermost command `args` name ("kv cas": kv's cas parser)."""
    while True:
        commands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not commands:
            return parser
        chosen = commands[0].choices.get(str(getattr(args, commands[0].dest, "")))
        if not isinstance(chosen, argparse.ArgumentParser):
            return parser
        parser = chosen


def check_order(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """`quicraft kv --cluster X get k`: an operation's options given before the operation
    (or `quicraft --cluster X kv ...`, before the command). argparse would take X for the
    operation ("invalid choice: 'X'"); say the order instead."""
    if (
        argv
        and argv[0].startswith("-")
        and argv[0].split("=")[0] not in parser._option_string_actions
    ):
        parser.error(f"COMMAND comes first, then its options: 'quicraft COMMAND {argv[0]} ...'")
    if len(argv) < 2 or not argv[1].startswith("-"):
        return
    group = innermost(parser, argparse.Namespace(command=argv[0]))
    ops = [a for a in group._actions if isinstance(a, argparse._SubParsersAction)]
    if group is parser or not ops or argv[1].split("=")[0] in group._option_string_actions:
        return  # not a command with operations, or an option of the command itself (local --dir)
    op = ops[0].metavar
    group.error(f"{op} comes first, then its options: 'quicraft {argv[0]} {op} {argv[1]} ...'")


RUNNERS = {
    "node": node.run,
    "kv": kv.run,
    "mgmt": mgmt.run,
    "events": events.run,
    "local": local.run,
    "bench": bench.run,
    "certs": certs.run,
    "sim": run_sim,
}


def parse(argv: list[str]) -> argparse.Namespace:
    """The arguments of `argv`; SystemExit(MISUSE) with argparse's usage and error if they
    do not parse."""
    parser = build_parser()
    check_order(parser, argv)
    args, extras = parser.parse_known_args(argv)
    if extras:  # said by the command they were given to, with its usage, not quicraft's
        innermost(parser, args).error(f"unrecognized arguments: {' '.join(extras)}")
    return args


def json_logs_asked(argv: list[str]) -> bool:
    """Whether `argv` asks for JSON logs (`quicraft node ... --log-format json`), in the
    two spellings a supervisor's unit file would use."""
    if "--log-format=json" in argv:
        return True
    return any(a == "--log-format" and b == "json" for a, b in itertools.pairwise(argv))


def parse_for_json_logs(argv: list[str]) -> argparse.Namespace:
    """parse(), but a refusal is one JSON log line, as the node would have written, rather
    than usage text: whatever reads its standard error parses every line."""
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):
            return parse(argv)
    except SystemExit as refused:
        if refused.code != MISUSE:
            raise
        configure_logging("error", "json")
        logging.getLogger("quicraft.cli").error("%s", said.getvalue().strip().splitlines()[-1])
        raise


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    guard_stdout()
    try:
        try:
            args = parse_for_json_logs(argv) if json_logs_asked(argv) else parse(argv)
        except SystemExit:  # --help, or misuse: what it printed must be written, or said
            sys.stdout.flush()
            raise
        # aioquic logs every failed handshake; the commands report failures in their words.
        logging.getLogger("quic").setLevel(logging.CRITICAL)
        code = RUNNERS[args.command](args)
        sys.stdout.flush()  # output that cannot be written fails here, not in Python's exit
        return code
    except TelemetryError as err:  # the tracing flags ask for what cannot work
        print(f"quicraft {args.command}: {err}", file=sys.stderr)
        return MISUSE
    except OutputError as err:
        print(f"quicraft: error: cannot write the output: {err}", file=sys.stderr)
        drop_pending()
        return FAILED
    except BrokenPipeError:
        drop_pending()
        return 141
