"""The command's standard output, made to fail in one known way.

A result that cannot be written (stdout on a full disk, an I/O error, stdout closed with
`>&-`) raises OutputError from whichever module printed it, so that command.py says it in
one line with exit status 1. Before, it was a traceback, or a message naming only an errno
(local's handler of file errors took it for its own), or, with stdout closed, nothing at all
and exit status 0: the result lost without a word. A reader that went away (`| head -n 1`)
is still BrokenPipeError, which ends the command quietly (141).
"""

from __future__ import annotations

import io
import os
import sys
from typing import Any, TextIO, cast


class OutputError(Exception):
    """Standard output could not be written; the message says why."""


class _Guarded:
    """A stream that turns its write errors, except a broken pipe, into OutputError, and
    is the stream it wraps in everything else (fileno, isatty, encoding)."""

    def __init__(self, stream: TextIO):
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            raise
        except OSError as err:
            raise OutputError(err.strerror or str(err)) from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise
        except OSError as err:
            raise OutputError(err.strerror or str(err)) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _Closed(io.TextIOBase):
    """What stdout is when the command started without one (`quicraft ... >&-`): Python
    would drop every print silently."""

    def write(self, text: str) -> int:
        if text:  # input() writes an empty prompt even where there is none
            raise OutputError("standard output is closed")
        return 0


def guard_stdout() -> None:
    """Make the process's stdout raise OutputError as above. A stdout replaced by someone
    else (a test capturing it) is left alone."""
    out: TextIO | None = sys.stdout
    if out is None:
        sys.stdout = _Closed()
    elif out is sys.__stdout__ and out is not None:  # (mypy takes `is` to widen it again)
        sys.stdout = cast(TextIO, _Guarded(out))


def drop_pending() -> None:
    """Point file descriptor 1 at /dev/null: Python flushes stdout again on its way out,
    and what failed to be written would fail the same way, with a traceback."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
