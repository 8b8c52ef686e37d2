"""A cluster of real processes under a seeded schedule of faults: the clients' history stays
linearizable and the nodes agree (nemesis.py; longer runs: `python tests/node/nemesis.py`)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from nemesis import FAULTS, nemesis_run


def test_under_crashes_pauses_and_transfers_every_answer_is_linearizable(tmp_path: Path) -> None:
    report = asyncio.run(nemesis_run(tmp_path, seed=1, duration_s=60))
    assert not report.problems, report.describe()
    # Not a run that did nothing: every kind of fault came, and answers around them.
    assert {f.split()[1] for f in report.faults} == set(FAULTS), report.describe()
    assert report.count(known=True, writes=True) >= 300, report.describe()
    assert report.count(known=True, writes=False) >= 200, report.describe()


def test_the_check_catches_stale_reads(tmp_path: Path) -> None:
    """The same run with every read served stale by one node, which may lag the leader: the
    history check must say so (it is the check's own check)."""
    report = asyncio.run(nemesis_run(tmp_path, seed=2, duration_s=20, stale_reads=True))
    assert any("not linearizable" in p for p in report.problems), report.describe()
