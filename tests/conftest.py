"""Test-wide settings, and a SIGTERM that stops the run the way Ctrl-C does."""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import Any

import pytest
from hypothesis import settings

# No per-example deadline: a loaded 2-core CI machine must not turn slowness into failures
# (speed is measured in benchmarks/, never in tests). Under CI, examples are derandomized so
# that a red run can be reproduced exactly.
settings.register_profile("default", deadline=None)
settings.register_profile("ci", deadline=None, derandomize=True, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")

_before: Any = None  # the SIGTERM handler pytest_sessionstart replaced


def pytest_sessionstart(session: pytest.Session) -> None:
    """By default SIGTERM ends pytest at once, and no fixture teardown runs: the processes and
    network namespaces of the running test would be left. Turned into KeyboardInterrupt, it
    unwinds the run as Ctrl-C does: pytest tears down every fixture set up, then exits with
    code 2 (interrupted). Each pytest-xdist worker sets it too: `kill -- -PGID` reaches them
    all, and each tears down its own tests."""
    global _before
    if threading.current_thread() is not threading.main_thread():
        # Python takes signal handlers only there. An xdist worker older than 3.6 may run here:
        # SIGTERM stays fatal to it, and the next Lan removes the namespaces it left.
        return
    _before = signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # Once: a second SIGTERM (CI or a user asking again) must not cut short the teardown the
    # first one started. SIGKILL still ends the run at once.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    raise KeyboardInterrupt("SIGTERM")


def pytest_unconfigure(config: pytest.Config) -> None:
    global _before
    if _before is not None:
        signal.signal(signal.SIGTERM, _before)
        _before = None
