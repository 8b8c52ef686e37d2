"""Test-wide settings, a SIGTERM that stops the run the way Ctrl-C does, and no skipping in CI."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Generator
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


# A test skips where what it needs is missing (root, iproute2, a tmpfs, /dev/full): right on a
# developer's machine, but in CI (root, Linux) a skip is a test that did not run reported as not
# failing. With QUICRAFT_NO_SKIPS=1 (.ci/run sets it) every skip and xfail is a failure that
# says why it would have skipped.
NO_SKIPS = "QUICRAFT_NO_SKIPS"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.skipped and os.environ.get(NO_SKIPS) == "1":
        _fail_the_skip(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    report = yield  # a module that skips itself (importorskip, allow_module_level) lands here
    if report.skipped and os.environ.get(NO_SKIPS) == "1":
        _fail_the_skip(report)
    return report


def _fail_the_skip(report: pytest.TestReport | pytest.CollectReport) -> None:
    longrepr = report.longrepr
    why = (longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)).removeprefix("Skipped: ")
    if isinstance(report, pytest.TestReport) and hasattr(report, "wasxfail"):
        why = f"xfail: {report.wasxfail}"
        del report.wasxfail
    report.outcome = "failed"
    report.longrepr = f"skipped, but {NO_SKIPS}=1 lets no test skip: {why}"
