"""The `quicraft` command. It only parses arguments, calls the library and prints."""

from __future__ import annotations

import argparse
import sys

from quicraft.sim.__main__ import add_arguments as add_sim_arguments
from quicraft.sim.__main__ import run as run_sim


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="quicraft",
        description="Raft consensus over QUIC. See 'quicraft COMMAND --help'.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sim = commands.add_parser(
        "sim",
        help="run the deterministic cluster simulator (same as 'python -m quicraft.sim')",
        description="Run seeded simulations of a Raft cluster under faults and check safety, "
        "liveness and linearizability.",
    )
    add_sim_arguments(sim)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "sim":
        return run_sim(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
