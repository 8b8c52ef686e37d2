"""What every command shares: argument types, the --certs flag and error reporting."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from quicraft.transport.address import Address, parse_address

#: Exit codes: 0 success, 1 an operational error (one line on stderr), 2 misuse.
OK, FAILED, MISUSE = 0, 1, 2


class CommandError(Exception):
    """An operational error: printed as one line, exit code 1."""


def address(text: str) -> Address:
    try:
        return parse_address(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def address_list(text: str) -> list[Address]:
    return [address(part) for part in text.split(",") if part.strip()]


def add_certs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--certs",
        type=Path,
        default=Path("certs"),
        metavar="DIR",
        help="folder holding one sub-folder of keys per cluster (default: ./certs)",
    )


def fail(message: str) -> int:
    print(f"quicraft: error: {message}", file=sys.stderr)
    return FAILED
