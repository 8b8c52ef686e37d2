"""The `quicraft` command's entry point: its console script and `python -m quicraft.cli`
both call main().

It imports nothing of its own at first: loading the command line (command.py) and the
library under it takes about half a second, and a Ctrl-C meanwhile must end the command as
one later does, with "quicraft: interrupted" and exit status 130, not a traceback.
"""

from __future__ import annotations

import sys

INTERRUPTED = 130


def main(argv: list[str] | None = None) -> int:
    """Run the command `argv` (default: sys.argv[1:]); its exit status."""
    try:
        from .command import main as run

        return run(argv)
    except KeyboardInterrupt:
        print("quicraft: interrupted", file=sys.stderr)
        return INTERRUPTED
