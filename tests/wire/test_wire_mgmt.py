"""The management protocol: every op and result round-trips; every rule of its tables holds."""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wire_strategies import (
    MGMT_ARGS,
    MGMT_RESULTS,
    addresses,
    mgmt_errors,
    mgmt_requests,
    traceparents,
    u64s,
)

from quicraft.wire import (
    MEMBER_ROLES,
    MGMT_ERROR_CODES,
    MGMT_OPS,
    NODE_ROLES,
    BadRequest,
    MgmtErrorInfo,
    MgmtRequest,
    MgmtResponse,
    ProtocolError,
    decode_mgmt_request,
    decode_mgmt_response,
    encode_mgmt_request,
    encode_mgmt_response,
)
from quicraft.wire.mgmt import MAX_PROBLEMS, RESULTS
from quicraft.wire.schema import MAX_MEMBERS, as_address

DEFAULTS: dict[str, dict[str, object]] = {
    "transfer": {"target": "auto"},
    "add_member": {"learner": False},
}
MEMBER = {
    "id": "n1",
    "name": "alpha",
    "address": "10.0.0.1:7400",
    "voter": True,
    "role": "leader",
    "match": 9,
    "lag": 0,
    "last_contact_ms": 3,
    "term": 2,
    "commit": 9,
    "applied": 9,
}
STATUS = {
    "cluster_id": "c-1",
    "leader": "n1",
    "term": 2,
    "commit": 9,
    "applied": 9,
    "node": "n1",
    "members": [MEMBER],
}
HEALTH = {"ok": True, "leader": "n1", "voters": 3, "reachable": 3, "problems": []}
BACKUP = {
    "cluster_id": None,
    "index": 9,
    "term": 2,
    "size": 100,
    "membership": {"voters": ["a", "b"], "learners": ["c"]},
}


def test_the_ops_codes_and_roles_are_those_of_the_spec() -> None:
    assert MGMT_OPS == (
        "add_member",
        "backup",
        "health",
        "promote",
        "remove_member",
        "snapshot",
        "status",
        "transfer",
    )
    assert {
        "bad_request",
        "forbidden",
        "not_leader",
        "no_leader",
        "no_quorum",
        "unknown_member",
        "already_member",
        "unreachable",
        "timeout",
        "unavailable",
        "busy",
        "internal",
    } == MGMT_ERROR_CODES
    assert {"leader", "follower", "candidate", "pre_candidate", "learner"} == NODE_ROLES
    assert NODE_ROLES | {"unknown"} == MEMBER_ROLES


@given(request=mgmt_requests, request_id=u64s, tp=traceparents)
@settings(max_examples=200)
def test_every_op_round_trips_with_defaults_filled(
    request: tuple[str, dict[str, Any]], request_id: int, tp: str | None
) -> None:
    op, args = request
    decoded = decode_mgmt_request(encode_mgmt_request(op, args, id=request_id, traceparent=tp))
    assert decoded == MgmtRequest(request_id, op, {**DEFAULTS.get(op, {}), **args}, tp)


@pytest.mark.parametrize("op", MGMT_OPS)
@given(data=st.data())
@settings(max_examples=20)
def test_every_result_round_trips_checked_by_op_and_without(op: str, data: st.DataObject) -> None:
    result = data.draw(MGMT_RESULTS[op])
    tp = data.draw(traceparents)
    rid = data.draw(u64s)
    for check in (op, None):
        payload = encode_mgmt_response(id=rid, ok=True, result=result, op=check, traceparent=tp)
        assert decode_mgmt_response(payload, op) == MgmtResponse(rid, result, traceparent=tp)
        assert decode_mgmt_response(payload) == MgmtResponse(rid, result, traceparent=tp)


def test_nulls_may_be_left_out_and_are_filled_in() -> None:
    bare_member = {"id": "n2", "voter": False, "role": "unknown"}
    result = {**STATUS, "members": [bare_member]}
    del result["cluster_id"], result["leader"]
    decoded = decode_mgmt_response(encode_mgmt_response(id=1, ok=True, result=result), "status")
    assert decoded.result is not None
    assert decoded.result["cluster_id"] is None and decoded.result["leader"] is None
    assert decoded.result["members"] == [
        {key: bare_member.get(key) for key in MEMBER},
    ]


@given(error=mgmt_errors, rid=u64s)
@settings(max_examples=50)
def test_errors_round_trip_as_map_or_error_info(error: dict[str, Any], rid: int) -> None:
    info = MgmtErrorInfo(**error)
    for given_as in (error, info):
        response = decode_mgmt_response(encode_mgmt_response(id=rid, ok=False, error=given_as))
        assert response == MgmtResponse(rid, error=info)
        assert not response.ok


def test_wire_shape_of_request_and_responses() -> None:
    assert cbor2.loads(encode_mgmt_request("status", id=5)) == {
        "v": 1,
        "id": 5,
        "op": "status",
        "args": {},
    }
    assert cbor2.loads(encode_mgmt_request("transfer", id=6)) == {
        "v": 1,
        "id": 6,
        "op": "transfer",
        "args": {"target": "auto"},
    }
    assert cbor2.loads(encode_mgmt_response(id=5, ok=True, result={"index": 3}, op="snapshot")) == {
        "v": 1,
        "id": 5,
        "ok": True,
        "result": {"index": 3},
    }
    error = {"code": "not_leader", "message": "m", "leader": "n2", "leader_addr": "h:1"}
    assert cbor2.loads(encode_mgmt_response(id=7, ok=False, error=error)) == {
        "v": 1,
        "id": 7,
        "ok": False,
        "error": {**error, "hint": None},
    }


def test_the_result_tables_name_the_spec_fields() -> None:
    assert set(RESULTS["status"]) == set(STATUS)
    assert set(RESULTS["health"]) == set(HEALTH)
    assert set(RESULTS["backup"]) == set(BACKUP)
    assert RESULTS["status"]["leader"].type == "id|null"
    assert RESULTS["status"]["members"].type == "[member]"


def _request(op: object, request_id: object = 1, **args: object) -> bytes:
    return cbor2.dumps({"v": 1, "id": request_id, "op": op, "args": args})


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (_request("drop_cluster"), "unknown op 'drop_cluster'"),
        (_request(7), "unknown op 7"),
        (cbor2.dumps({"v": 1, "id": 1, "op": "status"}), "missing field 'args'"),
        (cbor2.dumps({"v": 1, "op": "status", "args": {}}), "missing field 'id'"),
        (cbor2.dumps({"v": 2, "id": 1, "op": "status", "args": {}}), "unsupported version 2"),
        (cbor2.dumps({"op": "status", "id": 1, "args": {}}), "no version field"),
        (cbor2.dumps({"v": 1, "id": 1, "op": "status", "args": []}), "'args' must be a map"),
        (cbor2.dumps({"v": 1, "id": 1, "op": "status", "args": {}, "x": 1}), "unknown field"),
        (_request("status", -1), "'id' must be an unsigned"),
        (_request("status", True), "'id' must be an unsigned"),
        (_request("status", 1 << 64), "CBOR tags are not allowed"),  # a bignum
        (_request("status", "1"), "'id' must be an unsigned"),
        (_request("status", None), "'id' must be an unsigned"),
        (_request("status", force=True), "unknown field"),
        (_request("remove_member"), "missing field 'node'"),
        (_request("promote", node=""), "'node' must be a str of 1 to 128"),
        (_request("promote", node="n" * 129), "'node' must be a str of 1 to 128"),
        (_request("promote", node=5), "'node' must be a str"),
        (_request("transfer", target=None), "'target' must be a str"),
        (_request("add_member"), "missing field 'address'"),
        (_request("add_member", address="host"), "'address' must be an address"),
        (_request("add_member", address="h:1", learner=1), "'learner' must be a bool"),
        (_request("add_member", address="h:1", node="n"), "unknown field"),
        (cbor2.dumps({"v": 1, "id": 1, "op": "status", "args": {}, "tp": "X"}), "traceparent"),
    ],
)
def test_bad_requests_are_refused_saying_why(payload: bytes, error: str) -> None:
    with pytest.raises(ProtocolError, match=error):
        decode_mgmt_request(payload)


@pytest.mark.parametrize(
    "address",
    [
        "a:1",
        "node-1.lan:7400",
        "10.0.0.2:7400",
        "[::1]:7400",
        "[fe80::1%eth0]:65535",
        "[::ffff:10.0.0.1]:1",
        ("x" * 63 + ".") * 3 + "x" * 59 + ":7400",  # MAX_ADDRESS in all
    ],
)
def test_addresses_accepted(address: str) -> None:
    assert as_address(address, "w", "'address'") == address


@pytest.mark.parametrize(
    "address",
    [
        "",
        "host",
        "host:",
        ":7400",
        "host:0",
        "host:65536",
        "host:123456",
        "host:-1",
        "host:+1",
        "host:\uff17",  # FULLWIDTH DIGIT SEVEN: a digit to str.isdigit, not to us
        "host: 1",
        "two words:1",
        "user@host:1",
        "a/b:1",
        "::1:7400",  # IPv6 without brackets
        "[::1]",
        "[::1]7400",
        "[]:1",
        "[host]:1",  # brackets are for IPv6 only
        "[::1]:1:2",
        ("x" * 63 + ".") * 3 + "x" * 60 + ":7400",  # one character too long
        b"host:1",
        None,
        7400,
    ],
)
def test_addresses_refused(address: object) -> None:
    with pytest.raises(ProtocolError, match="must be an address"):
        as_address(address, "w", "'address'")


@given(address=addresses)
def test_generated_addresses_are_accepted(address: str) -> None:
    assert as_address(address, "w", "'address'") == address


def _member(**changes: object) -> dict[str, object]:
    return {**MEMBER, **changes}


@pytest.mark.parametrize(
    ("op", "result", "error"),
    [
        ("status", {**STATUS, "node": None}, "'node' must be a str"),
        ("status", {k: v for k, v in STATUS.items() if k != "term"}, "missing field 'term'"),
        ("status", {**STATUS, "extra": 1}, "unknown field"),
        ("status", {**STATUS, "cluster_id": ""}, "'cluster_id' must be a str of 1"),
        ("status", {**STATUS, "cluster_id": "c" * 129}, "'cluster_id' must be a str of 1 to 128"),
        ("status", {**STATUS, "members": {}}, "'members' must be a list"),
        ("status", {**STATUS, "members": [MEMBER] * 2}, "names a member twice"),
        (
            "status",
            {**STATUS, "members": [_member(id=str(i)) for i in range(MAX_MEMBERS + 1)]},
            "a list of at most 1024",
        ),
        ("status", {**STATUS, "members": [_member(role="boss")]}, "'role' must be one of"),
        ("status", {**STATUS, "members": [_member(voter=None)]}, "'voter' must be a bool"),
        ("status", {**STATUS, "members": [_member(lag=-1)]}, "'lag' must be an unsigned"),
        ("status", {**STATUS, "members": [_member(address="h")]}, "'address' must be an addr"),
        ("status", {**STATUS, "members": [_member(name="n" * 256)]}, "'name' must be a str"),
        ("status", {**STATUS, "members": [_member(x=1)]}, "unknown field"),
        ("status", {**STATUS, "members": [[]]}, "a member in 'members' must be a map"),
        ("health", {**HEALTH, "reachable": 4}, "reachable 4 is above voters 3"),
        ("health", {**HEALTH, "ok": "yes"}, "'ok' must be a bool"),
        ("health", {**HEALTH, "problems": ["two\nlines"]}, "one line"),
        ("health", {**HEALTH, "problems": ["x" * 1025]}, "an item of 'problems'"),
        ("health", {**HEALTH, "problems": ["p"] * (MAX_PROBLEMS + 1)}, "at most 64"),
        ("transfer", {"leader": None}, "'leader' must be a str"),
        ("add_member", {"node": "n"}, "missing field 'index'"),
        ("remove_member", {"index": True}, "'index' must be an unsigned"),
        ("promote", {"index": 1.0}, "'index' must be an unsigned"),
        ("snapshot", {}, "missing field 'index'"),
        ("backup", {**BACKUP, "size": -1}, "'size' must be an unsigned"),
        ("backup", {**BACKUP, "membership": {"voters": ["b", "a"], "learners": []}}, "sorted"),
        ("backup", {**BACKUP, "membership": {"voters": ["a", "a"], "learners": []}}, "repeats"),
        ("backup", {**BACKUP, "membership": {"voters": [], "learners": ["a"]}}, "no voter"),
        ("backup", {**BACKUP, "membership": {"voters": ["a"], "learners": ["a"]}}, "both"),
        ("backup", {**BACKUP, "membership": {"voters": ["a"]}}, "missing field 'learners'"),
        ("backup", {**BACKUP, "membership": {"voters": [""], "learners": []}}, "an id in"),
        (None, {"index": "1"}, "'index' must be an unsigned"),
        (None, {"leader": 5}, "'leader' must be a str"),
        (None, {"voters": 1, "reachable": 2}, "above voters"),
        (None, {"anything": 1}, "unknown field"),
    ],
)
def test_bad_results_are_refused(op: str | None, result: dict[str, Any], error: str) -> None:
    payload = cbor2.dumps({"v": 1, "id": 1, "ok": True, "result": result})
    with pytest.raises(ProtocolError, match=error):
        decode_mgmt_response(payload, op)
    with pytest.raises(ProtocolError, match=error):
        encode_mgmt_response(id=1, ok=True, result=result, op=op)


def _error(**changes: object) -> dict[str, object]:
    return {"code": "not_leader", "message": "m", **changes}


@pytest.mark.parametrize(
    ("response", "error"),
    [
        ({"v": 1, "ok": True, "result": {}}, "missing field 'id'"),
        ({"v": 1, "id": None, "ok": True, "result": {}}, "'id' must be an unsigned"),
        ({"v": 1, "id": -3, "ok": False, "error": _error()}, "'id' must be an unsigned"),
        ({"v": 1, "id": 1, "ok": True}, "missing field 'result'"),
        ({"v": 1, "id": 1, "ok": False}, "missing field 'error'"),
        ({"v": 1, "id": 1, "ok": 1, "result": {}}, "'ok' must be a bool"),
        ({"v": 1, "id": 1, "ok": True, "result": {}, "error": _error()}, "carries no 'error'"),
        ({"v": 1, "id": 1, "ok": False, "result": {}, "error": _error()}, "carries no 'result'"),
        ({"v": 1, "id": 1, "ok": False, "error": _error(code="oops")}, "'code' must be one of"),
        ({"v": 1, "id": 1, "ok": False, "error": {"code": "busy"}}, "missing field 'message'"),
        ({"v": 1, "id": 1, "ok": False, "error": _error(hint="a\nb")}, "one line"),
        ({"v": 1, "id": 1, "ok": False, "error": _error(hint="h" * 1025)}, "'hint'"),
        ({"v": 1, "id": 1, "ok": False, "error": _error(leader="")}, "'leader'"),
        ({"v": 1, "id": 1, "ok": False, "error": _error(leader_addr="x")}, "'leader_addr'"),
        ({"v": 1, "id": 1, "ok": False, "error": _error(message=b"m")}, "'message'"),
        ({"v": 1, "id": 1, "ok": False, "error": _error(x=1)}, "unknown field"),
        ({"v": 1, "id": 1, "ok": False, "error": []}, "'error' must be a map"),
        ({"v": 1, "id": 1, "ok": True, "result": {}, "tp": "ABC"}, "traceparent"),
        ({"v": 2, "id": 1, "ok": True, "result": {}}, "unsupported version 2"),
        ({"v": 1, "id": 1, "ok": False, "error": _error(message="m" * 4097)}, "'message'"),
        ({"v": 1, "id": 1, "ok": True, "result": {}, "op": "status"}, "unknown field"),
    ],
)
def test_bad_responses_are_refused(response: dict[str, Any], error: str) -> None:
    with pytest.raises(ProtocolError, match=error):
        decode_mgmt_response(cbor2.dumps(response))


def test_the_encoders_refuse_what_the_other_side_would_refuse() -> None:
    with pytest.raises(ProtocolError, match="unknown op"):
        encode_mgmt_request("reboot", id=1)
    with pytest.raises(ProtocolError, match="'id' must be an unsigned"):
        encode_mgmt_request("status", id=-1)
    with pytest.raises(ProtocolError, match="'address' must be an address"):
        encode_mgmt_request("add_member", {"address": "10.0.0.1"}, id=1)
    with pytest.raises(ProtocolError, match="'args' must be a map"):
        encode_mgmt_request("promote", ["n1"], id=1)  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match="traceparent"):
        encode_mgmt_request("status", id=1, traceparent="not one")
    with pytest.raises(ProtocolError, match="cannot encode"):
        encode_mgmt_request("promote", {"node": "\ud800"}, id=1)  # a lone surrogate is no UTF-8
    with pytest.raises(ProtocolError, match="a success needs a result"):
        encode_mgmt_response(id=1, ok=True)
    with pytest.raises(ProtocolError, match="a failure needs an error"):
        encode_mgmt_response(id=1, ok=False, result={})
    with pytest.raises(ProtocolError, match="'id' must be an unsigned"):
        encode_mgmt_response(id=None, ok=True, result={"index": 1}, op="snapshot")  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match="'code' must be one of"):
        encode_mgmt_response(id=1, ok=False, error=MgmtErrorInfo("teapot", "no"))
    with pytest.raises(ProtocolError, match="one line"):
        encode_mgmt_response(id=1, ok=False, error=MgmtErrorInfo("busy", "m", hint="1\n2"))
    with pytest.raises(ProtocolError, match="'result' must be a map"):
        encode_mgmt_response(id=1, ok=True, result=[1], op="snapshot")  # type: ignore[arg-type]


def test_a_request_with_a_sound_id_is_a_bad_request_that_carries_it() -> None:
    """The node can answer it with bad_request and read on; with no id it cannot."""
    for payload in (
        _request("drop_cluster", 42),
        _request("promote", 42),
        cbor2.dumps({"v": 1, "id": 42, "op": "status"}),
        cbor2.dumps({"v": 1, "id": 42, "op": "status", "args": {}, "tp": "X"}),
    ):
        with pytest.raises(BadRequest) as caught:
            decode_mgmt_request(payload)
        assert caught.value.request_id == 42
    for payload in (
        _request("status", -1),
        _request("status", None),
        cbor2.dumps({"v": 1, "op": "status", "args": {}}),
        cbor2.dumps({"v": 2, "id": 42, "op": "status", "args": {}}),
        cbor2.dumps({"v": 1, "id": 42, "op": "status", "args": {}, "x": 1}),  # not this version
        b"\xff",
    ):
        with pytest.raises(ProtocolError) as refused:
            decode_mgmt_request(payload)
        assert not isinstance(refused.value, BadRequest)


@pytest.mark.parametrize("op", MGMT_OPS)
def test_strategies_cover_every_op(op: str) -> None:
    assert op in MGMT_ARGS and op in MGMT_RESULTS  # the fuzz suite draws from these tables
