"""The pure rules of forming and joining (quicraft/node/forming.py), and the reserved `found`
command that gives a cluster its id (quicraft/statemachine)."""

from __future__ import annotations

import itertools

import pytest

from quicraft.core import ConfChange, ConfChangeKind
from quicraft.node.forming import (
    UNKNOWN_CLUSTER,
    FormingRule,
    FoundingError,
    Verdict,
    founders_agree,
    next_change,
    other_clusters,
    waiting_for,
)
from quicraft.statemachine import FOUND_OP, CommandError, KVStore, decode_command, encode_command
from quicraft.wire import OPS as CLIENT_OPS
from quicraft.wire import Hello

A, B, C, D = "a" * 16, "b" * 16, "c" * 16, "d" * 16
CID, OTHER = "1" * 32, "2" * 32


def rule(own: str, expect: int) -> FormingRule:
    return FormingRule(own, expect, grace_s=3.0, settle_s=2.0)


def test_a_node_waits_for_expect_verified_unformed_nodes_then_the_lowest_founds() -> None:
    early: dict[str, dict[str, str | None]] = {A: {B: None}, B: {A: None}, C: {}}
    rules = {node: rule(node, 3) for node in (A, B, C)}
    # Two of three: everyone waits, however long.
    for node, r in rules.items():
        assert r.decide(0.0, early[node]) is Verdict.WAIT
        assert r.decide(100.0, early[node]) is Verdict.WAIT
    # All three, once the view settled: A (lowest) founds, the others join. Same set, same
    # founder: exactly one initial configuration.
    views: dict[str, dict[str, str | None]] = {
        A: {B: None, C: None},
        B: {A: None, C: None},
        C: {A: None, B: None},
    }
    verdicts = {}
    for node, r in rules.items():
        r.decide(100.0, views[node])
        assert r.decide(101.0, views[node]) is Verdict.WAIT  # settling
        verdicts[node] = r.decide(102.5, views[node])
    assert verdicts == {A: Verdict.FOUND, B: Verdict.JOIN, C: Verdict.JOIN}


def test_nodes_that_meet_only_through_a_seed_count_what_it_sees() -> None:
    """D is the seed (--join D, no mDNS): A, B and C each see only D. Counting D's view too,
    all count {A, B, C, D} and only A founds; before, each of A, B, C founded (a review)."""
    views: dict[str, dict[str, str | None]] = {A: {D: None}, B: {D: None}, C: {D: None}}
    views[D] = {A: None, B: None, C: None}
    seen_by = {D: frozenset({A, B, C, D}), A: frozenset({A, D})}
    seen_by |= {B: frozenset({B, D}), C: frozenset({C, D})}
    verdicts = {}
    for node, view in views.items():
        r = rule(node, 2)
        r.decide(0.0, view, seen_by)
        verdicts[node] = r.decide(10.0, view, seen_by)
        assert r.unformed(view, seen_by) == {A, B, C, D}
    assert verdicts == {A: Verdict.FOUND, B: Verdict.JOIN, C: Verdict.JOIN, D: Verdict.JOIN}
    # Two hops, not more: what a peer's peers see is not counted.
    assert rule(A, 2).unformed({D: None}, {D: frozenset({D, C}), C: frozenset({B})}) == {A, C, D}
    # A node known to be formed is not counted, whoever says they see it.
    assert rule(A, 2).unformed({D: None, B: CID}, {D: frozenset({B, D})}) == {A, D}


def test_a_peer_that_is_joining_means_there_is_a_cluster() -> None:
    r = rule(A, 1)
    assert r.decide(0.0, {D: None}, {}, joining={D}) is Verdict.JOIN and r.awaited is None
    assert rule(A, 1).decide(10.0, {D: None}, {}, joining={C}) is Verdict.WAIT  # not seen


def test_a_peer_awaiting_another_founder_is_followed_and_one_awaiting_us_is_not() -> None:
    """B decided first, to wait for A: A must still found (a first version had A join
    because B said it was joining, and nobody founded); C, who sees B, waits for A too."""
    view_a: dict[str, str | None] = {B: None, C: None}
    r = rule(A, 3)
    r.decide(0.0, view_a, {}, awaits={B: A})
    assert r.decide(10.0, view_a, {}, awaits={B: A}) is Verdict.FOUND
    c = rule(C, 3)
    assert c.decide(0.0, {B: None}, {}, awaits={B: A}) is Verdict.JOIN and c.awaited == A
    # Awaited while counting too few itself (B saw more): found once the grace is over.
    few = rule(A, 3)
    assert few.decide(0.0, {B: None}, {}, awaits={B: A}) is Verdict.WAIT
    assert few.decide(3.0, {B: None}, {}, awaits={B: A}) is Verdict.FOUND
    # The founder a node waits for when it is not the lowest itself.
    b = rule(B, 3)
    b.decide(0.0, {A: None, C: None})
    assert b.decide(10.0, {A: None, C: None}) is Verdict.JOIN and b.awaited == A


@pytest.mark.parametrize("order", list(itertools.permutations([A, B, C, D])))
def test_whatever_the_order_nodes_are_seen_in_one_founder(order: tuple[str, ...]) -> None:
    found = []
    for own in order:
        r = rule(own, 4)
        view: dict[str, str | None] = {}
        t = 0.0
        for other in order:
            if other != own:
                view[other] = None
                r.decide(t, view)
                t += 0.5
        if r.decide(t + 10, view) is Verdict.FOUND:
            found.append(own)
    assert found == [A]


def test_expect_one_founds_only_after_the_grace_period() -> None:
    r = rule(B, 1)
    assert r.decide(0.0, {}) is Verdict.WAIT
    assert r.decide(2.9, {}) is Verdict.WAIT  # an existing cluster may still answer
    assert r.decide(3.1, {}) is Verdict.FOUND


def test_a_formed_cluster_of_our_name_means_join_never_found() -> None:
    r = rule(A, 1)
    assert r.decide(0.0, {B: CID}) is Verdict.JOIN
    # Even when this node has the lowest id and enough unformed nodes are around.
    r = rule(A, 2)
    assert r.decide(0.0, {B: None, C: None}) is Verdict.WAIT
    assert r.decide(50.0, {B: None, C: None, D: CID}) is Verdict.JOIN
    # A --join address that refused us is a formed cluster whose id we do not know.
    assert rule(A, 1).decide(0.0, {"join@10.0.0.1:7400": UNKNOWN_CLUSTER}) is Verdict.JOIN


def test_a_changing_view_restarts_the_settling() -> None:
    r = rule(B, 2)
    r.decide(0.0, {C: None})
    assert r.decide(5.0, {C: None}) is Verdict.FOUND
    r = rule(B, 2)
    r.decide(0.0, {C: None})
    # A lower node appears just before the verdict: wait again, then it founds, not B.
    assert r.decide(4.0, {A: None, C: None}) is Verdict.WAIT
    assert r.decide(6.5, {A: None, C: None}) is Verdict.JOIN


def test_expect_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        FormingRule(A, 0)


def test_the_leader_promotes_ready_learners_up_to_the_voter_count_then_adds_standbys() -> None:
    voters, learners = {A}, {B, C}
    # Fewer voters than wanted: promote a caught-up learner, the lowest first.
    assert next_change(voters, learners, {B, C}, set(), 3) == ConfChange(ConfChangeKind.PROMOTE, B)
    # A learner that is not caught up is not promoted; a new node is added meanwhile.
    assert next_change(voters, learners, set(), {D}, 3) == ConfChange(ConfChangeKind.ADD_LEARNER, D)
    # Enough voters: learners stay learners (standbys); members are never added again.
    assert next_change({A, B, C}, {D}, {D}, {B, D}, 3) is None
    assert next_change({A, B, C}, set(), set(), {D}, 3) == ConfChange(ConfChangeKind.ADD_LEARNER, D)
    # A voter went: the standby is promoted.
    assert next_change({A, B}, {D}, {D}, set(), 3) == ConfChange(ConfChangeKind.PROMOTE, D)


def test_another_cluster_id_of_our_name_is_a_split() -> None:
    view = {B: CID, C: OTHER, D: None, "join@x:1": UNKNOWN_CLUSTER}
    assert other_clusters(CID, view) == {OTHER: [C]}
    assert other_clusters(None, view) == {}  # not formed ourselves: nothing to compare
    assert other_clusters(CID, {B: CID, D: None}) == {}


def test_found_gives_the_store_its_id_once_and_snapshots_keep_it() -> None:
    store = KVStore()
    assert store.cluster_id is None
    first = encode_command(FOUND_OP, {"cluster_id": CID}, 1)
    assert store.apply(1, first) == {"cluster_id": CID}
    # A second found (another leader's, say) changes nothing and answers the id held.
    assert store.apply(2, encode_command(FOUND_OP, {"cluster_id": OTHER}, 2)) == {"cluster_id": CID}
    restored = KVStore()
    restored.restore(store.snapshot())
    assert restored.cluster_id == CID
    # A store without an id writes a snapshot without one, which reads back as none.
    empty = KVStore()
    empty.restore(KVStore().snapshot())
    assert empty.cluster_id is None


def test_found_is_validated_and_no_client_can_send_it() -> None:
    assert FOUND_OP not in CLIENT_OPS
    assert decode_command(encode_command(FOUND_OP, {"cluster_id": CID}, 5)).cluster_id == CID
    for bad in ("", "XYZ", "12", "g" * 16, 7):
        with pytest.raises(CommandError, match="cluster_id"):
            encode_command(FOUND_OP, {"cluster_id": bad}, 1)
    with pytest.raises(CommandError):
        encode_command(FOUND_OP, {}, 1)


# -- static founders (--peers) ---------------------------------------------------------------


def said(founders: tuple[str, ...] | None, formed: bool = False) -> Hello:
    return Hello("127.0.0.1:7400", formed, None, None, founders)


def test_founders_found_once_every_other_founder_says_the_same_set() -> None:
    ours = {A, B, C}
    names = {A: "a", B: "b", C: "c"}
    assert not founders_agree(A, ours, {}, names)  # nobody has said anything yet
    assert not founders_agree(A, ours, {B: said((A, B, C)), C: said(None)}, names)
    assert founders_agree(A, ours, {B: said((A, B, C)), C: said((A, B, C))}, names)
    # One that already founded the same set (a founder that started late joins its entries).
    assert founders_agree(A, ours, {B: said((A, B, C), formed=True), C: said((A, B, C))}, names)
    # A cluster of one needs nobody's word.
    assert founders_agree(A, {A}, {}, names)


def test_a_founder_with_another_set_or_a_cluster_founded_otherwise_stops_founding() -> None:
    ours = {A, B, C}
    names = {A: "a", B: "b", C: "c", D: "d"}
    with pytest.raises(FoundingError, match=r"c \(c+\) founds with b, c, d but .* a, b, c"):
        founders_agree(A, ours, {B: said((A, B, C)), C: said((B, C, D))}, names)
    with pytest.raises(FoundingError, match="not founded from --peers"):
        founders_agree(A, ours, {B: said(None, formed=True)}, names)
    # A peer that is not a founder at all never agrees: the node waits (and logs who).
    assert not founders_agree(A, {A, B}, {B: said(None)}, names)


def test_the_waiting_line_says_what_a_deciding_node_waits_for() -> None:
    assert waiting_for(1, 3) == "1 of 3 nodes seen and verified; waiting for the others"
    # More nodes than --expect (a LAN with the default of 1): not "2 of 1 seen; waiting".
    enough = waiting_for(2, 1)
    assert enough.startswith("2 nodes seen and verified (--expect 1); deciding once")
    assert waiting_for(3, 3).startswith("3 nodes seen and verified (--expect 3)")
