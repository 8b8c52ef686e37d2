"""The hello of quicraft-raft/1: what a node says about itself on every Raft connection.

Each side of a Raft connection, dialed or accepted, opens one stream, writes one hello frame on
it and ends it:

    {"v": 1, "hello": {"address": "host:port", "formed": bool, "cluster_id": str | null,
                       "leader": "host:port", "founders": [id], "remembers_you": bool,
                       "seen": [id], "seen_at": {id: "host:port"}, "joining": bool,
                       "awaits": id, "leader_id": id, "committed_without_you": uint}}

Rules:
- `address` is where the sender serves QUIC (it may be a wildcard such as 0.0.0.0:7400: the
  receiver then uses the connection's source host with that port). It is a hint of where to
  dial, never an identity: the identity is the key that authenticated the connection.
- `formed`: the sender is a member of a cluster; `cluster_id`: the id of that cluster when it
  knows one (so a cluster id without `formed` is refused).
- `leader` (optional, only with `formed`): where the sender's leader serves, when that is
  another node. A node that wants to join and dialed a follower (--join) dials the leader
  there: only the leader adds members.
- `leader_id` (optional, only with `leader`): that leader's node id. A member whose log is
  behind may not know the leader as a member yet; it admits the leader that a member of its
  own configuration says it follows (node/server.py), so that the leader can catch it up.
  A node says hello again when its leader changes.
- `founders` (optional): the founding set this node founds, or founded, its cluster with from
  static `--peers` (sorted node ids, this node included). A node says it again, on a new
  stream, once it has reached all its peers and knows the set (node/server.py): founders
  compare sets before anyone writes a founding entry.
- `remembers_you` (optional, only with `formed`; said per connection): the sender has heard
  the receiver act as a member of its cluster (vote, lead or acknowledge entries) and has not
  seen it removed. A receiver with no stored state has then lost its data and must not found
  or join as if new.
- `committed_without_you` (optional, only with `formed`; said per connection): the sender's
  membership committed as of this log index leaves the receiver out. A node that was a member
  learns from such hellos (with refusals, node/removal.py) that it was removed; on a LAN,
  members admit non-members, so a removed node started again hears it only this way.
- A first frame of a stream is a hello when its map has the key "hello" (peek_hello): Raft
  messages and snapshot headers have "type" and never "hello", so one look at the keys tells
  the three apart, and a malformed hello is reported as a hello, not as a bad Raft message.
- `seen` (optional, only without `formed`): a fresh node waiting for its forming verdict on a
  LAN (node/forming.py) says which unformed nodes it has verified, itself included, so that
  nodes that see each other only through it (--join to one seed) decide on the same set.
- `seen_at` (optional, only with `seen`; its keys are ids of `seen`): where the sender
  reaches the other nodes it sees. The receiver dials those it is not connected to (each must
  prove the id it is listed under), so nodes that met through different seeds all come to
  see each other, as mDNS would have them (node/lan.py).
- `joining` (optional, only without `formed` and `seen`): the sender decided to wait for a
  leader to add it because it saw a formed cluster (or a node joining one): there is a
  cluster, so a node that sees it must not found another.
- `awaits` (optional, only without `formed`, `seen` and `joining`): the sender decided to wait
  for this node to found the cluster and add it; a node that sees it and is not that one
  waits for it too.
- Strict like every codec here: exactly these fields (all but `address`, `formed` and
  `cluster_id` may be left out), checked types and bounds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .errors import ProtocolError
from .fields import (
    VERSION,
    as_map,
    as_uint,
    decode_item,
    encode_item,
    get_bool,
    get_nullable_str,
    need,
    open_envelope,
)
from .schema import MAX_CLUSTER_ID, MAX_MEMBERS, as_address, as_ids, as_node_id

_WHERE = "hello"
_FIELDS = frozenset({"hello"})
_HELLO_FIELDS = frozenset(
    {
        "address",
        "formed",
        "cluster_id",
        "leader",
        "founders",
        "remembers_you",
        "seen",
        "seen_at",
        "joining",
        "awaits",
        "leader_id",
        "committed_without_you",
    }
)


@dataclass(frozen=True, slots=True)
class Hello:
    address: str  #: "host:port" or "[ipv6]:port", as transport writes it
    formed: bool
    cluster_id: str | None = None
    leader: str | None = None  #: "host:port" of the sender's leader, when another node
    founders: tuple[str, ...] | None = None  #: sorted ids of its static founding set
    remembers_you: bool = False  #: the receiver has acted as a member of the sender's cluster
    seen: tuple[str, ...] | None = None  #: sorted unformed nodes it sees while deciding
    seen_at: Mapping[str, str] | None = None  #: node of `seen` -> "host:port" it dials
    joining: bool = False  #: it waits to be added to a formed cluster
    awaits: str | None = None  #: it waits for this node to found the cluster
    leader_id: str | None = None  #: the id of the leader at `leader`
    #: the sender's committed membership leaves the receiver out as of this index
    committed_without_you: int | None = None


def encode_hello(hello: Hello) -> bytes:
    """The hello frame; ProtocolError for a value the decoder would refuse."""
    body: dict[str, object] = {
        "address": hello.address,
        "formed": hello.formed,
        "cluster_id": hello.cluster_id,
    }
    if hello.leader is not None:
        body["leader"] = hello.leader
    if hello.founders is not None:
        body["founders"] = list(hello.founders)
    if hello.remembers_you:
        body["remembers_you"] = True
    if hello.seen is not None:
        body["seen"] = list(hello.seen)
    if hello.seen_at is not None:
        body["seen_at"] = dict(sorted(hello.seen_at.items()))
    if hello.joining:
        body["joining"] = True
    if hello.awaits is not None:
        body["awaits"] = hello.awaits
    if hello.leader_id is not None:
        body["leader_id"] = hello.leader_id
    if hello.committed_without_you is not None:
        body["committed_without_you"] = hello.committed_without_you
    raw: dict[str, object] = {"v": VERSION, "hello": body}
    _hello(raw)  # refuse here what the other side would refuse
    return encode_item(raw)


def decode_hello(data: bytes) -> Hello:
    raw = open_envelope(data, _WHERE, _FIELDS)
    if "tp" in raw:
        raise ProtocolError(f"{_WHERE}: a hello carries no trace context")
    return _hello(raw)


def peek_hello(data: bytes) -> Hello | None:
    """The hello in a stream's first frame; None if the frame is not one (the other decoders
    say what is wrong with it, if anything); ProtocolError for a malformed hello."""
    try:
        raw = decode_item(data)
    except ProtocolError:
        return None
    if type(raw) is not dict or "hello" not in raw:
        return None
    return decode_hello(data)


def _hello(raw: dict[str, object]) -> Hello:
    body = as_map(need(raw, "hello", _WHERE), _WHERE, "'hello'", _HELLO_FIELDS)
    address = as_address(need(body, "address", _WHERE), _WHERE, "'address'")
    formed = get_bool(body, "formed", _WHERE)
    cluster_id = get_nullable_str(body, "cluster_id", _WHERE, max_len=MAX_CLUSTER_ID)
    if "cluster_id" not in body:
        raise ProtocolError(f"{_WHERE}: missing field 'cluster_id'")
    if cluster_id is not None and not cluster_id:
        raise ProtocolError(f"{_WHERE}: 'cluster_id' must not be empty")
    if cluster_id is not None and not formed:
        raise ProtocolError(f"{_WHERE}: a cluster id without 'formed'")
    leader = None
    if "leader" in body:
        leader = as_address(body["leader"], _WHERE, "'leader'")
        if not formed:
            raise ProtocolError(f"{_WHERE}: a leader without 'formed'")
    leader_id = (
        as_node_id(body["leader_id"], _WHERE, "'leader_id'") if "leader_id" in body else None
    )
    if leader_id is not None and leader is None:
        raise ProtocolError(f"{_WHERE}: a leader id without 'leader'")
    founders = _optional_ids(body, "founders")
    remembers_you = get_bool(body, "remembers_you", _WHERE, default=False)
    if remembers_you and not formed:
        raise ProtocolError(f"{_WHERE}: 'remembers_you' without 'formed'")
    without_you = None
    if "committed_without_you" in body:
        without_you = as_uint(body["committed_without_you"], _WHERE, "'committed_without_you'")
        if not formed:
            raise ProtocolError(f"{_WHERE}: 'committed_without_you' without 'formed'")
    seen = _optional_ids(body, "seen")
    seen_at = _seen_at(body["seen_at"], seen) if "seen_at" in body else None
    joining = get_bool(body, "joining", _WHERE, default=False)
    awaits = as_node_id(body["awaits"], _WHERE, "'awaits'") if "awaits" in body else None
    deciding = [name for name, on in (("seen", seen is not None), ("joining", joining),
                                      ("awaits", awaits is not None)) if on]  # fmt: skip
    if formed and deciding:
        raise ProtocolError(f"{_WHERE}: '{deciding[0]}' with 'formed'")
    if len(deciding) > 1:
        raise ProtocolError(f"{_WHERE}: '{deciding[0]}' with '{deciding[1]}'")
    return Hello(
        address, formed, cluster_id, leader, founders, remembers_you, seen, seen_at, joining,
        awaits, leader_id, without_you,
    )  # fmt: skip


def _seen_at(value: object, seen: tuple[str, ...] | None) -> dict[str, str]:
    name = "'seen_at'"
    if seen is None:
        raise ProtocolError(f"{_WHERE}: {name} without 'seen'")
    if type(value) is not dict or len(value) > MAX_MEMBERS:
        raise ProtocolError(f"{_WHERE}: {name} must be a map of at most {MAX_MEMBERS} entries")
    found: dict[str, str] = {}
    for node, address in value.items():
        node_id = as_node_id(node, _WHERE, f"an id in {name}")
        if node_id not in seen:
            raise ProtocolError(f"{_WHERE}: {name} names {node_id}, which is not in 'seen'")
        found[node_id] = as_address(address, _WHERE, f"an address in {name}")
    return found


def _optional_ids(body: dict[str, object], key: str) -> tuple[str, ...] | None:
    return tuple(as_ids(body[key], _WHERE, repr(key))) if key in body else None
