"""The `quicraft` command's entry point: its console script and `python -m quicraft.cli`
both call main().

It imports nothing of its own at first: loading the command line (command.py) and the
library under it takes about half a second, and a Ctrl-C meanwhile must end the command as
one later does, with "quicraft: interrupted" and exit status 130, not a traceback. Nor may
it be lost: one that lands in a finalizer run meanwhile (ZipFile's, say) is dropped by
Python, so loading notes every Ctrl-C and ends the command after it, whatever came of it.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from types import FrameType

INTERRUPTED = 130


def main(argv: list[str] | None = None) -> int:
    """Run the command `argv` (default: sys.argv[1:]); its exit status."""
    try:
        return _load()(argv)
    except KeyboardInterrupt:
        print("quicraft: interrupted", file=sys.stderr)
        return INTERRUPTED


def _load() -> Callable[[list[str] | None], int]:
    """command.main, imported; KeyboardInterrupt if a Ctrl-C came meanwhile."""
    pressed: list[int] = []

    def noted(number: int, frame: FrameType | None) -> None:
        pressed.append(number)
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGINT, noted)
    except ValueError:  # not the main thread (an embedding program's): it cannot be noted
        previous = None
    try:
        from .command import main as run
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if pressed:
        raise KeyboardInterrupt
    return run
