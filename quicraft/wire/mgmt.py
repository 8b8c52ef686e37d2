"""The management protocol (ALPN quicraft-mgmt/1, admin role): requests and responses as CBOR maps.

    request  = {"v": 1, "id": uint, "op": str, "args": {...}, "tp"?: traceparent}
    response = {"v": 1, "id": uint, "ok": true, "result": {...}, "tp"?: traceparent}
             | {"v": 1, "id": uint, "ok": false, "tp"?: traceparent,
                "error": {"code": str, "message": str, "leader": id|null, "leader_addr": addr|null,
                          "hint": str|null}}

    op             args                              result
    status         {}                                {cluster_id: str|null, leader: id|null, term,
                                                      commit, applied, node: id, members: [member]}
    health         {}                                {ok: bool, leader: id|null, voters, reachable,
                                                      problems: [str]}
    transfer       {target: id|"auto" = "auto"}      {leader: id}
    add_member     {address: addr, learner=false}    {node: id, index}
    remove_member  {node: id}                        {index}
    promote        {node: id}                        {index}
    snapshot       {}                                {index}
    backup         {}                                {cluster_id: str|null, index, term, size,
                                                      membership: {voters: [id], learners: [id]}}
                                                     then chunk frames and a trailer: backup.py

    member = {id, name: str|null, address: addr|null, voter: bool, role, match, lag,
              last_contact_ms, term, commit, applied}      (the last six: uint|null)

Rules (the tables below say it as code; docs can be written from them):
- "id" is the client's number for a request, echoed in its response, so many requests share a
  stream and may be answered out of order (as on quicraft-client/1). A request whose envelope and
  id are sound but whose op or args are not raises BadRequest (wire/client.py), which carries
  the id: the node answers that one request with bad_request and reads on. Any other
  ProtocolError leaves nothing to answer. Unnamed fields are uint (unsigned 64-bit).
- A field shown |null may be absent (meaning null); a decoded map holds every field of its op,
  defaults and nulls filled in. Encoders check with the same rules, so a bad value fails at its
  sender. Without its op, a result is checked against the union of every op's result fields.
- Null means "the answering node does not know". "auto" as a transfer target lets the leader
  pick the most caught-up voter; node ids are key fingerprints, so no node is called "auto".
- addr is "host:port", "[ipv6]:port" for IPv6 (see schema.as_address). Lists are bounded:
  members and each membership list 1024, problems 64. Member ids are unique; a membership's
  lists are sorted, without repeats, disjoint, with at least one voter. health's reachable
  counts the voters this node can reach (itself included), so it is at most voters.
- A hint and each problem are one line for a person to read ("leader is n2 at 10.0.0.2:7400").
- A backup's response is a sequence of frames that takes its stream until the trailer: send it
  on a stream of its own (wire/backup.py has its frames and the helpers for both ends).
- Field, the checks and the field types (id, addr, role, membership, ...) that this protocol
  shares with events.py and backup.py are in wire/schema.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .client import BadRequest
from .errors import ProtocolError
from .fields import (
    MAX_REQUEST_ITEMS,
    VERSION,
    as_bool,
    as_list,
    as_map,
    as_traceparent,
    as_uint,
    encode_answer,
    encode_item,
    get_bool,
    get_traceparent,
    get_uint,
    need,
    open_envelope,
    show,
    wrong,
)
from .schema import (
    ADDRESS,
    BOOL,
    ID,
    MAX_ERROR_MESSAGE,
    MAX_MEMBERS,
    MEMBERSHIP,
    NODE_ROLES,
    OPT_ADDRESS,
    OPT_CLUSTER_ID,
    OPT_ID,
    OPT_NAME,
    OPT_UINT,
    UINT,
    Args,
    Field,
    Schema,
    as_line,
    as_node_id,
    check_fields,
    check_map,
    choice,
    nullable,
    str_check,
)

MAX_PROBLEMS = 64
MGMT_ERROR_CODES = frozenset(
    {
        "already_member",
        "bad_request",
        "busy",
        "forbidden",
        "internal",
        "no_leader",
        "no_quorum",
        "not_leader",
        "timeout",
        "unavailable",
        "unknown_member",
        "unreachable",
    }
)
#: NODE_ROLES (wire/schema.py), or "unknown": a member not heard from.
MEMBER_ROLES = NODE_ROLES | {"unknown"}

# -- a member and the result lists --------------------------------------------------------------

MEMBER: Schema = {
    "id": ID,
    "name": OPT_NAME,
    "address": OPT_ADDRESS,
    "voter": BOOL,
    "role": choice(MEMBER_ROLES, "role"),
    **dict.fromkeys(("match", "lag", "last_contact_ms", "term", "commit", "applied"), OPT_UINT),
}


def _members(value: object, where: str, name: str) -> list[Args]:
    items = as_list(value, where, name, max_len=MAX_MEMBERS)
    members = [check_map(item, where, f"a member in {name}", MEMBER) for item in items]
    if len({m["id"] for m in members}) != len(members):
        raise ProtocolError(f"{where}: {name} names a member twice")
    return members


def _problems(value: object, where: str, name: str) -> list[str]:
    items = as_list(value, where, name, max_len=MAX_PROBLEMS)
    return [as_line(item, where, f"an item of {name}") for item in items]


# -- the ops ------------------------------------------------------------------------------------

Table = dict[str, Schema]
_INDEX: Schema = {"index": UINT}

#: op -> its args' fields
REQUESTS: Table = {
    "status": {},
    "health": {},
    "transfer": {"target": Field('id|"auto"', as_node_id, "auto")},
    "add_member": {"address": ADDRESS, "learner": Field("bool", as_bool, False)},
    "remove_member": {"node": ID},
    "promote": {"node": ID},
    "snapshot": {},
    "backup": {},
}
MGMT_OPS = tuple(sorted(REQUESTS))

#: op -> its result's fields
RESULTS: Table = {
    "status": {
        "cluster_id": OPT_CLUSTER_ID,
        "leader": OPT_ID,
        "term": UINT,
        "commit": UINT,
        "applied": UINT,
        "node": ID,
        "members": Field("[member]", _members),
    },
    "health": {
        "ok": BOOL,
        "leader": OPT_ID,
        "voters": UINT,
        "reachable": UINT,
        "problems": Field("[str]", _problems),
    },
    "transfer": {"leader": ID},
    "add_member": {"node": ID, "index": UINT},
    "remove_member": _INDEX,
    "promote": _INDEX,
    "snapshot": _INDEX,
    "backup": {
        "cluster_id": OPT_CLUSTER_ID,
        "index": UINT,
        "term": UINT,
        "size": UINT,
        "membership": MEMBERSHIP,
    },
}
# Without the op, each field by its rule in any op; "leader" is an id in transfer's result and
# id|null elsewhere, so the union takes the looser.
_ANY_RESULT: Schema = {
    **{name: rule for schema in RESULTS.values() for name, rule in schema.items()},
    "leader": OPT_ID,
}


def _check_result(raw: Mapping[str, object], op: str | None, where: str) -> Args:
    out = check_fields(raw, _ANY_RESULT if op is None else RESULTS[op], where, partial=op is None)
    voters, reachable = out.get("voters"), out.get("reachable")
    if isinstance(voters, int) and isinstance(reachable, int) and reachable > voters:
        raise ProtocolError(f"{where}: reachable {reachable} is above voters {voters}")
    return out


def _lookup(table: Table, op: object, what: str) -> tuple[str, Schema]:
    """The op and its fields; `op` came from a peer and may be anything."""
    if type(op) is not str or op not in table:
        raise ProtocolError(f"{what}: unknown op {show(op)}")
    return op, table[op]


# -- requests -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MgmtRequest:
    id: int  #: the client's number for it, echoed in the response
    op: str
    args: Args
    traceparent: str | None = None


def encode_mgmt_request(
    op: str,
    args: Mapping[str, object] | None = None,
    *,
    id: int,
    traceparent: str | None = None,
) -> bytes:
    """Request `id` for `op`; ProtocolError if the server would refuse it."""
    op, schema = _lookup(REQUESTS, op, "mgmt request")
    where = f"mgmt request {op}"
    if args is None:
        args = {}
    if not isinstance(args, Mapping):
        raise wrong(where, "'args'", args, "a map")
    out: dict[str, object] = {
        "v": VERSION,
        "id": as_uint(id, where, "'id'"),
        "op": op,
        "args": check_map(dict(args), where, "'args'", schema),
    }
    if traceparent is not None:
        out["tp"] = as_traceparent(traceparent, where)
    return encode_item(out)


def decode_mgmt_request(data: bytes) -> MgmtRequest:
    """The request in `data`: ProtocolError if not even its id can be read, BadRequest if its
    id can but the rest does not hold."""
    raw = open_envelope(
        data, "mgmt request", frozenset({"id", "op", "args"}), max_items=MAX_REQUEST_ITEMS
    )
    request_id = get_uint(raw, "id", "mgmt request")
    try:
        op, schema = _lookup(REQUESTS, need(raw, "op", "mgmt request"), "mgmt request")
        where = f"mgmt request {op}"
        args = check_map(need(raw, "args", where), where, "'args'", schema)
        return MgmtRequest(request_id, op, args, get_traceparent(raw, where))
    except ProtocolError as err:
        raise BadRequest(str(err), request_id) from None


# -- responses ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MgmtErrorInfo:
    code: str  #: one of MGMT_ERROR_CODES
    message: str  #: for a person to read
    leader: str | None = None  #: the leader's node id, when known (not_leader)
    leader_addr: str | None = None  #: where to reach it, "host:port"
    hint: str | None = None  #: one line suggesting what to do ("leader is n2 at 10.0.0.2:7400")


_ERROR: Schema = {
    "code": choice(MGMT_ERROR_CODES, "code"),
    "message": Field("str", str_check(MAX_ERROR_MESSAGE)),
    "leader": OPT_ID,
    "leader_addr": OPT_ADDRESS,
    "hint": nullable(Field("line", as_line)),
}


@dataclass(frozen=True, slots=True)
class MgmtResponse:
    """Exactly one of `result` (success) and `error` is set."""

    id: int  #: the id of the request it answers
    result: Args | None = None
    error: MgmtErrorInfo | None = None
    traceparent: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _error(value: object, where: str) -> MgmtErrorInfo:
    raw = as_map(value, where, "'error'", frozenset(_ERROR))
    return MgmtErrorInfo(**check_fields(raw, _ERROR, f"{where} error"))


def _error_map(e: MgmtErrorInfo) -> dict[str, object]:
    return {
        "code": e.code,
        "message": e.message,
        "leader": e.leader,
        "leader_addr": e.leader_addr,
        "hint": e.hint,
    }


def _result(value: object, op: str | None, where: str) -> Args:
    schema = _ANY_RESULT if op is None else _lookup(RESULTS, op, where)[1]
    return _check_result(as_map(value, where, "'result'", frozenset(schema)), op, where)


def encode_mgmt_response(
    *,
    id: int,
    ok: bool,
    result: Mapping[str, object] | None = None,
    error: MgmtErrorInfo | Mapping[str, object] | None = None,
    op: str | None = None,
    traceparent: str | None = None,
) -> bytes:
    """The response to request `id`: a success (`ok`, with `result`, checked against `op`'s
    when given) or a failure (with `error`: an MgmtErrorInfo or the same fields as a map);
    ProtocolError if a client would refuse it.
    """
    where = "mgmt response" if op is None else f"mgmt response to {op}"

    def checked_error(value: object) -> object:
        if isinstance(value, MgmtErrorInfo):
            value = _error_map(value)
        return _error_map(_error(value, where))

    return encode_answer(
        where, id, ok, result, error, traceparent, lambda r: _result(r, op, where), checked_error
    )


RESPONSE_FIELDS = frozenset({"id", "ok", "result", "error"})


def response_from_map(raw: Mapping[str, object], op: str | None, where: str) -> MgmtResponse:
    """The response in an opened envelope (limited to RESPONSE_FIELDS and "tp")."""
    trace = get_traceparent(raw, where)
    request_id = get_uint(raw, "id", where)
    if get_bool(raw, "ok", where):
        if "error" in raw:
            raise ProtocolError(f"{where}: a success carries no 'error'")
        result = _result(need(raw, "result", where), op, where)
        return MgmtResponse(request_id, result, traceparent=trace)
    if "result" in raw:
        raise ProtocolError(f"{where}: a failure carries no 'result'")
    return MgmtResponse(
        request_id, error=_error(need(raw, "error", where), where), traceparent=trace
    )


def decode_mgmt_response(data: bytes, op: str | None = None) -> MgmtResponse:
    """The response in `data`; its result is checked against `op`'s when given."""
    where = "mgmt response" if op is None else f"mgmt response to {op}"
    return response_from_map(open_envelope(data, where, RESPONSE_FIELDS), op, where)
