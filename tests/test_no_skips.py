"""In CI no test may skip: with QUICRAFT_NO_SKIPS=1 (.ci/run sets it) a skip or an xfail, of a
test or of a whole module, fails the run and says why it would have skipped (tests/conftest.py).
Without it, a developer's run without root skips as before."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

_TESTS = """
import pytest


def test_runs():
    pass


def test_skips():
    pytest.skip("no iproute2 here")


@pytest.mark.skipif(True, reason="not root")
def test_marked():
    pass


@pytest.mark.xfail(reason="known broken")
def test_expected_to_fail():
    assert False
"""

_MODULE = """
import pytest

pytest.importorskip("a_module_nobody_has")


def test_never_collected():
    pass
"""


def _run(folder: Path, file: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "QUICRAFT_NO_SKIPS"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", file],
        cwd=folder, env={**environ, **env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_with_no_skips_set_every_skip_and_xfail_fails_with_its_reason(tmp_path: Path) -> None:
    shutil.copy(Path(__file__).parent / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_some.py").write_text(_TESTS)

    strict = _run(tmp_path, "test_some.py", QUICRAFT_NO_SKIPS="1")
    assert strict.returncode == 1, strict.stdout
    summary = strict.stdout.splitlines()[-1]
    assert summary.startswith("2 failed, 1 passed, 1 error in "), strict.stdout  # setup's: error
    for why in ("no iproute2 here", "not root", "xfail: known broken"):
        assert f"QUICRAFT_NO_SKIPS=1 lets no test skip: {why}" in strict.stdout, why

    relaxed = _run(tmp_path, "test_some.py")
    assert relaxed.returncode == 0, relaxed.stdout
    assert "1 passed, 2 skipped, 1 xfailed" in relaxed.stdout, relaxed.stdout


def test_with_no_skips_set_a_module_that_skips_itself_is_an_error(tmp_path: Path) -> None:
    shutil.copy(Path(__file__).parent / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_module.py").write_text(_MODULE)

    strict = _run(tmp_path, "test_module.py", QUICRAFT_NO_SKIPS="1")
    assert strict.returncode != 0, strict.stdout
    assert "ERROR test_module.py - skipped, but QUICRAFT_NO_SKIPS=1" in strict.stdout
    assert "lets no test skip: could not import 'a_module_nobody_has'" in strict.stdout

    relaxed = _run(tmp_path, "test_module.py")
    assert relaxed.stdout.splitlines()[-1].startswith("1 skipped in "), relaxed.stdout
