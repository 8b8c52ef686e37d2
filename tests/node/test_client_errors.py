"""The client's errors are copied or pickled whole, as a process pool does with an error its
worker raised. Before, each failed to unpickle (their __init__ takes more than the message),
so a ClientError raised in a ProcessPoolExecutor's worker broke the pool (BrokenProcessPool)
instead of reaching the caller (found by an audit)."""

from __future__ import annotations

import copy
import pickle

import pytest

from quicraft.client import ClientError, EventsCompacted, InvalidRequest, MgmtError

ERRORS = [
    ClientError("timeout", "gave up after 1s: 10.0.0.1:7400: timed out"),
    InvalidRequest("bad_request", "'key' cannot be sent as UTF-8"),
    EventsCompacted("the events after 1024 are gone", 2048),
    MgmtError("not_leader", "not the leader", "leader is n2", "ab12", "10.0.0.2:7400"),
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_an_error_survives_pickle_and_copy_whole(error: Exception) -> None:
    for again in (pickle.loads(pickle.dumps(error)), copy.copy(error)):
        assert type(again) is type(error)
        assert str(again) == str(error)
        assert vars(again) == vars(error)  # code, message, oldest, hint, leader...


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_one_except_catches_what_any_client_raises(error: Exception) -> None:
    """A program using the KV, events and management clients catches ClientError once."""
    assert isinstance(error, ClientError)


def test_a_management_error_reads_as_its_message_and_hint() -> None:
    assert str(MgmtError("timeout", "gave up after 1s", "is the cluster running?")) == (
        "gave up after 1s; is the cluster running?"
    )
    assert str(MgmtError("busy", "a change is in progress")) == "a change is in progress"
