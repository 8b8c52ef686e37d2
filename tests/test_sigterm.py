"""A SIGTERM to pytest runs the teardown of the fixtures set up (tests/conftest.py), so the
processes and network namespaces a test made are not left behind."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

_TEST = """
import time
from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.fixture
def resource():
    yield
    (HERE / "torn-down").touch()


def test_long(resource):
    (HERE / "started").touch()
    time.sleep(60)
"""


def test_a_sigterm_to_pytest_runs_the_fixtures_teardown(tmp_path: Path) -> None:
    shutil.copy(Path(__file__).parent / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_long.py").write_text(_TEST)
    run = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_long.py"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "started").exists():
            assert run.poll() is None, run.communicate()[0]
            assert time.monotonic() < deadline, "the test did not start"
            time.sleep(0.05)
        run.send_signal(signal.SIGTERM)
        output, _ = run.communicate(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    assert (tmp_path / "torn-down").exists(), output
    assert run.returncode == 2, output  # pytest's "interrupted"
    assert "KeyboardInterrupt: SIGTERM" in output
