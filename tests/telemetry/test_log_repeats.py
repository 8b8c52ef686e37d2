"""The filter that holds back repeated log lines, under many distinct lines and many threads."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterator

import pytest

from quicraft.telemetry.logs import _MAX_LINES_SEEN, RepeatFilter


def _record(text: str) -> logging.LogRecord:
    return logging.LogRecord("quicraft.transport", logging.WARNING, __file__, 1, text, None, None)


def test_lines_that_all_differ_are_remembered_up_to_a_bound() -> None:
    """Found by an audit: while every line of the last minute differed (refusals of
    connections from many addresses, say), the filter kept them all and went over them all
    for each new line: 20,000 such lines in a minute cost 25 s of the event loop's time."""
    repeats = RepeatFilter(window_s=60, clock=lambda: 0.0)
    for n in range(3 * _MAX_LINES_SEEN):
        assert repeats.filter(_record(f"refused a connection from 10.0.{n // 256}.{n % 256}"))
    assert len(repeats._seen) <= _MAX_LINES_SEEN
    last = 3 * _MAX_LINES_SEEN - 1
    assert not repeats.filter(_record(f"refused a connection from 10.0.{last // 256}.{last % 256}"))


@pytest.fixture
def switching_often() -> Iterator[None]:
    """Threads switch as often as the interpreter allows: races show at once."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


@pytest.mark.usefixtures("switching_often")
def test_repeats_from_several_threads_are_all_counted() -> None:
    """Found by an audit: the filter runs on every thread that logs (the event loop, the span
    exporter's, the metrics server's), and two of them counting the same line at once lost
    counts: 4 threads holding back 20,000 repeats each said "and 75,918 more"."""
    now = [0.0]
    repeats = RepeatFilter(window_s=60, clock=lambda: now[0])
    per_thread, threads = 20_000, 4

    def log_repeats() -> None:
        for _ in range(per_thread):
            repeats.filter(_record("same line"))

    running = [threading.Thread(target=log_repeats) for _ in range(threads)]
    for thread in running:
        thread.start()
    for thread in running:
        thread.join()
    now[0] = 61.0
    record = _record("same line")
    assert repeats.filter(record)
    held = per_thread * threads - 1  # the first was let through
    assert record.getMessage() == f"same line (and {held} more like it in the last 61 s)"
