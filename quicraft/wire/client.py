"""The key-value client protocol (ALPN quicraft-client/1): requests and responses as CBOR maps.

    request  = {"v": 1, "id": uint, "op": str, "args": {...}, "tp"?: traceparent}
    response = {"v": 1, "id": uint, "ok": true, "result": {...}, "tp"?: traceparent}
             | {"v": 1, "id": uint, "ok": false, "tp"?: traceparent,
                "error": {"code": str, "message": str, "leader": id|null, "leader_addr": addr|null}}

A stream carries any number of requests, each with an id of the client's choosing; the node
answers each with a response carrying the same id, in whatever order they finish (a write
waiting for the log does not hold up a read behind it).

    op        args                                               result
    register  {}                                                 {session}
    set       {key, value, session?, seq?}                       {revision}
    delete    {key, session?, seq?}                              {revision, deleted}
    incr      {key, by=1, session?, seq?}                        {revision, value: int}
    cas       {key, expected: bytes|null, new, session?, seq?}   {revision, ok, value: bytes|null}
    get       {key, stale=false}                                 {value: bytes|null, revision}
    keys      {prefix="", stale=false}                           {keys: [str]}

Rules (each op's fields are checked in wire/ops.py):
- Decoded args hold exactly their op's fields, defaults filled in (by, stale, prefix);
  session and seq appear only when given. Encoders check with the same rules, so what encodes is
  what the other side accepts, and a bad value fails at its sender.
- A result is checked against its op when the caller names it (the client knows what it asked);
  without an op, against the union of every op's result fields.
- A request whose envelope and id are sound but whose op or args are not raises BadRequest,
  which carries the id: the node answers that one request with bad_request and reads on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .errors import ProtocolError
from .fields import (
    MAX_REQUEST_ITEMS,
    VERSION,
    as_map,
    as_traceparent,
    as_uint,
    encode_answer,
    encode_item,
    get_bool,
    get_str,
    get_traceparent,
    get_uint,
    need,
    open_envelope,
    show,
    wrong,
)
from .ops import ANY_RESULT, REQUESTS, RESULTS, Args, lookup
from .schema import OPT_ADDRESS, OPT_ID

MAX_ERROR_MESSAGE = 4096
ERROR_CODES = frozenset(
    {
        "bad_request",
        "forbidden",
        "internal",
        "no_leader",
        "not_leader",
        "session_expired",
        "timeout",
        "unavailable",
    }
)


class BadRequest(ProtocolError):
    """A request that can be answered (its id is known) but not served."""

    def __init__(self, message: str, request_id: int):
        super().__init__(message)
        self.request_id = request_id


@dataclass(frozen=True, slots=True)
class Request:
    op: str
    args: Args
    traceparent: str | None = None
    id: int = 0


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    code: str  #: one of ERROR_CODES
    message: str  #: for a person to read
    leader: str | None = None  #: the leader's node id, when known (not_leader)
    leader_addr: str | None = None  #: where to reach it, "host:port"


@dataclass(frozen=True, slots=True)
class Response:
    """Exactly one of `result` (success) and `error` is set."""

    result: Args | None = None
    error: ErrorInfo | None = None
    traceparent: str | None = None
    id: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None


# -- requests -----------------------------------------------------------------------------------


def encode_request(
    op: str,
    args: Mapping[str, object] | None = None,
    *,
    id: int = 0,
    traceparent: str | None = None,
) -> bytes:
    """Request `id` for `op`; ProtocolError if the server would refuse its args."""
    op, fields, check = lookup(REQUESTS, op, "request")
    where = _REQUEST_WHERE[op]
    if args is None:
        args = {}
    elif type(args) is not dict:
        if not isinstance(args, Mapping):
            raise wrong(where, "'args'", args, "a map")
        args = dict(args)
    as_map(args, where, "'args'", fields)
    out: dict[str, object] = {
        "v": VERSION,
        "id": as_uint(id, where, "'id'"),
        "op": op,
        "args": check(args, where),  # a new map: the caller's is not changed
    }
    if traceparent is not None:
        out["tp"] = as_traceparent(traceparent, where)
    return encode_item(out)


def decode_request(data: bytes) -> Request:
    """The request in `data`: ProtocolError if not even its id can be read, BadRequest if
    its id can but the rest does not hold."""
    raw = open_envelope(data, "request", _REQUEST_FIELDS, max_items=MAX_REQUEST_ITEMS)
    request_id = get_uint(raw, "id", "request")
    try:
        op, fields, check = lookup(REQUESTS, need(raw, "op", "request"), "request")
        where = _REQUEST_WHERE[op]
        args = as_map(need(raw, "args", where), where, "'args'", fields)
        return Request(op, check(args, where), get_traceparent(raw, where), request_id)
    except ProtocolError as err:
        raise BadRequest(str(err), request_id) from None


# -- responses ----------------------------------------------------------------------------------


def _error(value: object, where: str) -> ErrorInfo:
    fields = frozenset({"code", "message", "leader", "leader_addr"})
    raw = as_map(value, where, "'error'", fields)
    where = f"{where} error"
    code = need(raw, "code", where)
    if type(code) is not str or code not in ERROR_CODES:
        raise ProtocolError(f"{where}: unknown code {show(code)}")
    return ErrorInfo(
        code,
        get_str(raw, "message", where, max_len=MAX_ERROR_MESSAGE),
        # The same rules as mgmt's: a node id, and an address as transport writes it.
        OPT_ID.check(raw.get("leader"), where, "'leader'"),
        OPT_ADDRESS.check(raw.get("leader_addr"), where, "'leader_addr'"),
    )


def _error_map(e: ErrorInfo) -> dict[str, object]:
    return {"code": e.code, "message": e.message, "leader": e.leader, "leader_addr": e.leader_addr}


_REQUEST_FIELDS = frozenset({"id", "op", "args"})
_RESPONSE_FIELDS = frozenset({"id", "ok", "result", "error"})
#: Where a message of each op is, for error messages (built once, not per message).
_REQUEST_WHERE = {op: f"request {op}" for op in REQUESTS}
_RESPONSE_WHERE: dict[str | None, str] = {None: "response"}
_RESPONSE_WHERE.update((op, f"response to {op}") for op in RESULTS)


def _result(value: object, op: str | None, where: str) -> Args:
    fields, check = ANY_RESULT if op is None else lookup(RESULTS, op, where)[1:]
    return check(as_map(value, where, "'result'", fields), where)


def encode_response(
    *,
    ok: bool,
    result: Mapping[str, object] | None = None,
    error: ErrorInfo | Mapping[str, object] | None = None,
    op: str | None = None,
    id: int = 0,
    traceparent: str | None = None,
) -> bytes:
    """The response to request `id`: a success (`ok`, with `result`, checked against `op`'s
    when given) or a failure (with `error`: an ErrorInfo or the same fields as a map);
    ProtocolError if a client would refuse it.
    """
    where = _response_where(op)

    def checked_error(value: object) -> object:
        if isinstance(value, ErrorInfo):
            value = _error_map(value)
        return _error_map(_error(value, where))

    return encode_answer(
        where, id, ok, result, error, traceparent, lambda r: _result(r, op, where), checked_error
    )


def decode_response(data: bytes, op: str | None = None) -> Response:
    """The response in `data`; its result is checked against `op`'s when given."""
    where = _response_where(op)
    raw = open_envelope(data, where, _RESPONSE_FIELDS)
    request_id = get_uint(raw, "id", where)
    trace = get_traceparent(raw, where)
    if get_bool(raw, "ok", where):
        if "error" in raw:
            raise ProtocolError(f"{where}: a success carries no 'error'")
        result = _result(need(raw, "result", where), op, where)
        return Response(result=result, traceparent=trace, id=request_id)
    if "result" in raw:
        raise ProtocolError(f"{where}: a failure carries no 'result'")
    return Response(
        error=_error(need(raw, "error", where), where), traceparent=trace, id=request_id
    )


def _response_where(op: str | None) -> str:
    return _RESPONSE_WHERE.get(op) or f"response to {op}"  # an unknown op fails in lookup
