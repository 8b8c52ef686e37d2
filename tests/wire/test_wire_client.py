"""The client protocol: every op and result round-trips; every rule of the table is enforced."""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wire_strategies import REQUEST_ARGS, RESULTS, errors, requests, traceparents

from quicraft.wire import (
    ERROR_CODES,
    MAX_KEY,
    MAX_VALUE,
    OPS,
    BadRequest,
    ErrorInfo,
    ProtocolError,
    Request,
    Response,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)

DEFAULTS: dict[str, dict[str, object]] = {
    "incr": {"by": 1},
    "get": {"stale": False},
    "keys": {"prefix": "", "stale": False},
}


def test_the_ops_are_those_of_the_spec() -> None:
    assert OPS == ("cas", "delete", "get", "incr", "keys", "register", "set")
    assert {
        "not_leader",
        "no_leader",
        "timeout",
        "forbidden",
        "bad_request",
        "session_expired",
        "unavailable",
        "internal",
    } == ERROR_CODES


@given(request=requests, tp=traceparents)
@settings(max_examples=200)
def test_every_op_round_trips_with_defaults_filled(
    request: tuple[str, dict[str, Any]], tp: str | None
) -> None:
    op, args = request
    decoded = decode_request(encode_request(op, args, traceparent=tp))
    assert decoded == Request(op, {**DEFAULTS.get(op, {}), **args}, tp)


@pytest.mark.parametrize("op", OPS)
@given(data=st.data())
@settings(max_examples=20)
def test_every_result_round_trips_checked_by_op_and_without(op: str, data: st.DataObject) -> None:
    result = data.draw(RESULTS[op])
    tp = data.draw(traceparents)
    for check in (op, None):
        payload = encode_response(ok=True, result=result, op=check, traceparent=tp)
        assert decode_response(payload, op) == Response(result=result, traceparent=tp)
        assert decode_response(payload) == Response(result=result, traceparent=tp)


@given(error=errors)
@settings(max_examples=50)
def test_errors_round_trip_as_map_or_error_info(error: dict[str, Any]) -> None:
    info = ErrorInfo(**error)
    for given_as in (error, info):
        response = decode_response(encode_response(ok=False, error=given_as), "set")
        assert response == Response(error=info)
        assert not response.ok


def test_wire_shape_of_request_and_responses() -> None:
    assert cbor2.loads(encode_request("register", id=5)) == {
        "v": 1,
        "id": 5,
        "op": "register",
        "args": {},
    }
    assert cbor2.loads(encode_response(ok=True, result={"revision": 3})) == {
        "v": 1,
        "id": 0,
        "ok": True,
        "result": {"revision": 3},
    }
    assert cbor2.loads(encode_response(ok=False, error={"code": "no_leader", "message": "m"})) == {
        "v": 1,
        "id": 0,
        "ok": False,
        "error": {"code": "no_leader", "message": "m", "leader": None, "leader_addr": None},
    }


def _request(op: str, **args: object) -> bytes:
    return cbor2.dumps({"v": 1, "id": 7, "op": op, "args": args})


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (_request("drop_table"), "unknown op 'drop_table'"),
        (cbor2.dumps({"v": 1, "id": 7, "op": 1, "args": {}}), "unknown op 1"),
        (cbor2.dumps({"v": 1, "id": 7, "op": "register"}), "missing field 'args'"),
        (cbor2.dumps({"v": 3, "op": "register", "args": {}}), "unsupported version 3"),
        (cbor2.dumps({"v": 1, "id": 7, "op": "register", "args": []}), "'args' must be a map"),
        (_request("register", key="k"), "unknown field"),
        (_request("set", key="k"), "missing field 'value'"),
        (_request("set", key="", value=b""), "'key' must be a str of 1"),
        (_request("set", key=b"k", value=b""), "'key' must be a str"),
        (_request("set", key="k", value="v"), "'value' must be bytes"),
        (
            _request("set", key="k", value=b"x" * (MAX_VALUE + 1)),
            "'value' must be bytes of at most",
        ),
        (_request("set", key="k" * (MAX_KEY + 1), value=b""), "'key' must be a str"),
        (_request("set", key="é" * (MAX_KEY // 2 + 1), value=b""), "bytes of UTF-8"),
        (_request("set", key="k", value=b"", session=1), "'session' and 'seq' go together"),
        (_request("delete", key="k", seq=1), "'session' and 'seq' go together"),
        (_request("set", key="k", value=b"", session=True, seq=1), "'session' must be an unsigned"),
        (_request("set", key="k", value=b"", session=-1, seq=1), "'session' must be an unsigned"),
        (_request("incr", key="k", by=True), "'by' must be a signed 64-bit int, got bool"),
        (_request("incr", key="k", by=1 << 63), "'by' must be a signed 64-bit int"),
        (_request("incr", key="k", by=1.0), "'by' must be a signed 64-bit int"),
        (_request("cas", key="k", new=b""), "missing field 'expected'"),
        (_request("cas", key="k", expected=b"", new=None), "'new' must be bytes"),
        (_request("get", key="k", stale=0), "'stale' must be a bool"),
        (_request("keys", prefix=None), "'prefix' must be a str"),
    ],
)
def test_bad_requests_are_refused_saying_why(payload: bytes, error: str) -> None:
    with pytest.raises(ProtocolError, match=error) as raised:
        decode_request(payload)
    # Whenever the id could be read, the error carries it, so the node can answer that request.
    if cbor2.loads(payload)["v"] == 1:
        assert isinstance(raised.value, BadRequest)
        assert raised.value.request_id == 7
    else:
        assert not isinstance(raised.value, BadRequest)


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (cbor2.dumps({"v": 1, "op": "register", "args": {}}), "missing field 'id'"),
        (cbor2.dumps({"v": 1, "id": -1, "op": "register", "args": {}}), "'id' must be an unsigned"),
        (
            cbor2.dumps({"v": 1, "id": "7", "op": "register", "args": {}}),
            "'id' must be an unsigned",
        ),
        (cbor2.dumps([1, 7, "register"]), "expected a map"),
    ],
)
def test_a_request_without_a_readable_id_cannot_be_answered(payload: bytes, error: str) -> None:
    with pytest.raises(ProtocolError, match=error) as raised:
        decode_request(payload)
    assert not isinstance(raised.value, BadRequest)


def test_ids_travel_both_ways() -> None:
    assert decode_request(encode_request("register", id=41)).id == 41
    assert decode_response(encode_response(ok=True, result={"revision": 1}, id=41)).id == 41
    error = {"code": "timeout", "message": "m"}
    assert decode_response(encode_response(ok=False, error=error, id=42)).id == 42
    with pytest.raises(ProtocolError, match="'id' must be an unsigned"):
        encode_request("register", id=-1)


def test_key_bounds_are_in_utf8_bytes() -> None:
    for key in ("k" * MAX_KEY, "é" * (MAX_KEY // 2), "😀" * (MAX_KEY // 4)):
        assert decode_request(encode_request("get", {"key": key})).args["key"] == key
    for key in ("é" * (MAX_KEY // 2) + "k", "😀" * (MAX_KEY // 4) + "k"):
        with pytest.raises(ProtocolError, match="bytes of UTF-8"):
            encode_request("get", {"key": key})


def test_the_encoder_refuses_what_the_server_would_refuse() -> None:
    with pytest.raises(ProtocolError, match="unknown op"):
        encode_request("nope", {})
    with pytest.raises(ProtocolError, match="'value' must be bytes"):
        encode_request("set", {"key": "k", "value": "text"})
    with pytest.raises(ProtocolError, match="unknown field"):
        encode_request("get", {"key": "k", "consistent": True})
    with pytest.raises(ProtocolError, match="'args' must be a map"):
        encode_request("get", ["k"])  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match="cannot encode"):
        encode_request("get", {"key": "\ud800"})  # a lone surrogate is no UTF-8


@pytest.mark.parametrize(
    ("op", "result", "error"),
    [
        ("set", {}, "missing field 'revision'"),
        ("set", {"revision": 1, "extra": 1}, "unknown field"),
        ("delete", {"revision": 1, "deleted": 1}, "'deleted' must be a bool"),
        ("incr", {"revision": 1, "value": b"1"}, "'value' must be a signed 64-bit int"),
        ("incr", {"revision": 1}, "missing field 'value'"),
        ("cas", {"revision": 1, "ok": True}, "missing field 'value'"),
        ("get", {"value": 5, "revision": 1}, "'value' must be bytes"),
        ("keys", {"keys": ["a", 1]}, "an item of 'keys'"),
        ("keys", {"keys": "a"}, "'keys' must be a list"),
        ("register", {"session": -5}, "'session' must be an unsigned"),
        (None, {"value": True}, "'value' must be bytes"),
        (None, {"anything": 1}, "unknown field"),
    ],
)
def test_bad_results_are_refused(op: str | None, result: dict[str, Any], error: str) -> None:
    payload = cbor2.dumps({"v": 1, "id": 1, "ok": True, "result": result})
    with pytest.raises(ProtocolError, match=error):
        decode_response(payload, op)
    with pytest.raises(ProtocolError, match=error):
        encode_response(ok=True, result=result, op=op)


@pytest.mark.parametrize(
    ("response", "error"),
    [
        ({"v": 1, "id": 1, "ok": True}, "missing field 'result'"),
        ({"v": 1, "id": 1, "ok": False}, "missing field 'error'"),
        ({"v": 1, "id": 1, "ok": 1, "result": {}}, "'ok' must be a bool"),
        ({"v": 1, "id": 1, "ok": True, "result": {}, "error": {}}, "carries no 'error'"),
        ({"v": 1, "id": 1, "ok": False, "result": {}, "error": {}}, "carries no 'result'"),
        (
            {"v": 1, "id": 1, "ok": False, "error": {"code": "oops", "message": ""}},
            "unknown code 'oops'",
        ),
        ({"v": 1, "id": 1, "ok": False, "error": {"code": "timeout"}}, "missing field 'message'"),
        (
            {
                "v": 1,
                "id": 1,
                "ok": False,
                "error": {"code": "timeout", "message": "", "leader": 3},
            },
            "'leader'",
        ),
        (
            {"v": 1, "id": 1, "ok": False, "error": {"code": "timeout", "message": "", "x": 3}},
            "unknown field",
        ),
        # The leader's id and address follow the same rules as in mgmt errors.
        (
            {
                "v": 1,
                "id": 1,
                "ok": False,
                "error": {"code": "timeout", "message": "", "leader": ""},
            },
            "'leader' must be a str of 1 to",
        ),
        (
            {
                "v": 1,
                "id": 1,
                "ok": False,
                "error": {"code": "not_leader", "message": "", "leader_addr": "no port"},
            },
            "'leader_addr' must be an address",
        ),
        ({"v": 1, "id": 1, "ok": True, "result": {}, "tp": "ABC"}, "traceparent"),
    ],
)
def test_bad_responses_are_refused(response: dict[str, Any], error: str) -> None:
    with pytest.raises(ProtocolError, match=error):
        decode_response(cbor2.dumps(response))


def test_response_encoder_needs_exactly_the_matching_part() -> None:
    with pytest.raises(ProtocolError, match="a success needs a result"):
        encode_response(ok=True)
    with pytest.raises(ProtocolError, match="a failure needs an error"):
        encode_response(ok=False, result={})
    with pytest.raises(ProtocolError, match="unknown code"):
        encode_response(ok=False, error=ErrorInfo("teapot", "no"))


@pytest.mark.parametrize("op", OPS)
def test_request_args_strategy_covers_every_op(op: str) -> None:
    assert op in REQUEST_ARGS and op in RESULTS  # the fuzz suite draws from these tables


def test_a_leader_address_as_nodes_write_it_is_accepted() -> None:
    for address in ("10.0.0.2:7400", "[fe80::1%eth0]:7400", "node-2.example:7400"):
        error = {"code": "not_leader", "message": "m", "leader": "n2", "leader_addr": address}
        response = decode_response(encode_response(ok=False, error=error))
        assert response.error is not None and response.error.leader_addr == address
