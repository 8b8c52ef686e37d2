"""When a node's peers' refusals prove that it was removed (quicraft/node/removal.py)."""

from __future__ import annotations

import pytest

from quicraft.core import Membership
from quicraft.node.removal import (
    NOT_A_MEMBER,
    Refusals,
    committed_without,
    left_out_at,
    refusal_detail,
)

ME = "me"
THREE = Membership(voters=frozenset({"a", "b", ME}))
FIVE = Membership(voters=frozenset({"a", "b", "c", "d", ME}))


def refused(said: dict[str, int]) -> Refusals:
    refusals = Refusals(ME)
    for peer, index in said.items():
        refusals.heard(peer, index, while_member=True)
    return refusals


def test_the_detail_names_the_committed_index_or_nothing() -> None:
    assert committed_without(refusal_detail(1234)) == 1234
    assert committed_without(refusal_detail(None)) is None
    assert refusal_detail(None) == NOT_A_MEMBER
    for garbage in ("", "not a member", "(membership committed at index x)", "index 12"):
        assert committed_without(garbage) is None


def test_a_majority_of_the_other_voters_with_newer_commits_proves_it() -> None:
    assert refused({"a": 10, "b": 11}).removed(THREE, made_at=5) == ["a", "b"]
    # One of two others is not a majority of them.
    assert refused({"a": 10}).removed(THREE, made_at=5) == []
    # Of four others, three are needed.
    assert refused({"a": 9, "b": 9}).removed(FIVE, made_at=5) == []
    assert refused({"a": 9, "b": 9, "d": 9}).removed(FIVE, made_at=5) == ["a", "b", "d"]


def test_a_membership_committed_no_later_than_ours_proves_nothing() -> None:
    # A member whose log is behind the change that added us (or made our membership) refuses
    # us too: its committed index is not above the index of our membership.
    assert refused({"a": 5, "b": 4}).removed(THREE, made_at=5) == []
    assert refused({"a": 6, "b": 5}).removed(THREE, made_at=5) == []


def test_the_highest_index_a_member_said_counts() -> None:
    refusals = refused({"a": 9, "b": 9})
    refusals.heard("a", 3, while_member=True)  # an older word does not undo a newer one
    assert refusals.removed(THREE, made_at=5) == ["a", "b"]
    # Our membership made later than what they said (we were added back): not removed.
    assert refusals.removed(THREE, made_at=9) == []


def test_only_voters_of_our_membership_count() -> None:
    with_learner = Membership(voters=frozenset({"a", "b", ME}), learners=frozenset({"l"}))
    assert refused({"a": 9, "l": 9, "x": 9}).removed(with_learner, made_at=5) == []


def test_a_node_holding_its_own_removal_needs_a_commit_as_new() -> None:
    # Our newest membership is the one without us, made at 7: a commit at 7 covers it.
    without_me = Membership(voters=frozenset({"a", "b"}))
    assert refused({"a": 7, "b": 7}).removed(without_me, made_at=7) == ["a", "b"]
    assert refused({"a": 6, "b": 7}).removed(without_me, made_at=7) == []


def test_a_learner_is_removed_by_the_voters() -> None:
    learner = Membership(voters=frozenset({"a", "b", "c"}), learners=frozenset({ME}))
    assert refused({"a": 9, "c": 9}).removed(learner, made_at=5) == ["a", "c"]


@pytest.mark.parametrize(
    "membership",
    [Membership(), Membership(voters=frozenset({ME}))],
    ids=["no membership yet", "the only voter"],
)
def test_without_other_voters_nobody_can_prove_it(membership: Membership) -> None:
    # A fresh node waiting to be added hears refusals of members that know an older history.
    assert refused({"a": 9, "b": 9}).removed(membership, made_at=0) == []


def test_two_voters_the_other_one_suffices() -> None:
    assert refused({"a": 4}).removed(Membership(voters=frozenset({"a", ME})), made_at=2) == ["a"]


def test_what_a_node_heard_before_it_was_a_member_does_not_count() -> None:
    # Its data deleted after its removal, a node waits to be added again: every member says
    # it is left out. Added, it catches up through old memberships of its log that have it
    # (made at 5, say): those words must not stop it then.
    refusals = Refusals(ME)
    for peer in ("a", "b"):
        refusals.heard(peer, 9, while_member=False)
    assert refusals.removed(THREE, made_at=5) == []


def test_a_member_says_a_node_is_left_out_only_when_both_memberships_leave_it_out() -> None:
    without = Membership(voters=frozenset({"a", "b"}))
    assert left_out_at(ME, without, without, 12) == 12
    # An addition of the node appended, not yet committed: never said (a majority holds a
    # committed addition, so fewer than a majority of the others can say it then).
    assert left_out_at(ME, THREE, without, 12) is None
    # A removal appended, not yet committed: not yet a fact.
    assert left_out_at(ME, without, THREE, 12) is None
    assert left_out_at(ME, Membership(), Membership(), 0) is None  # no membership yet
