"""Majority arithmetic, as pure functions so that it can be tested exhaustively.

Only voters count. Learners never appear in these computations.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping

from .types import NodeId


class VoteResult(enum.Enum):
    PENDING = "pending"
    WON = "won"
    LOST = "lost"


def majority(voter_count: int) -> int:
    """The smallest number of voters that forms a quorum."""
    return voter_count // 2 + 1


def quorum_index(voters: Collection[NodeId], acked: Mapping[NodeId, int]) -> int:
    """The largest value that a quorum of voters has reached (missing voters count as 0).

    With `acked` = match indexes this is the highest index replicated on a majority; with
    `acked` = ReadIndex rounds it is the newest round a majority has confirmed.
    An empty voter set has no quorum; it returns 0 so nothing is ever committed by it.
    """
    if not voters:
        return 0
    values = sorted((acked.get(v, 0) for v in voters), reverse=True)
    return values[majority(len(values)) - 1]


def vote_result(voters: Collection[NodeId], votes: Mapping[NodeId, bool]) -> VoteResult:
    """WON once a majority granted; LOST once a majority can no longer be reached."""
    need = majority(len(voters))
    granted = sum(1 for v in voters if votes.get(v) is True)
    rejected = sum(1 for v in voters if votes.get(v) is False)
    if granted >= need:
        return VoteResult.WON
    if len(voters) - rejected < need:
        return VoteResult.LOST
    return VoteResult.PENDING


def has_quorum(voters: Collection[NodeId], active: Collection[NodeId]) -> bool:
    return sum(1 for v in voters if v in active) >= majority(len(voters))
