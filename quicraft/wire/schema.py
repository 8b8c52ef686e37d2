"""Field schemas: the rule of each field of a map, and the field types the protocols share.

mgmt.py, events.py and backup.py each describe their maps as a Schema (field name -> Field) and
check them with check_fields or check_map. Rules:
- A Field is one field's rule: its type as the docs write it ("uint", "id|null", "[member]"),
  a check (value, where, name) -> the checked value, ProtocolError on anything else, and a
  default; a field without a default is required. nullable(rule) is rule or null, absent null.
- A decoded map holds every field of its schema, each value as its check returned it, absent
  fields filled with their defaults (nulls included). Keys outside the schema were refused
  already (as_map, open_envelope), so no other key is there.
- Unnamed fields are uint (unsigned 64-bit); strings and lists are bounded (the MAX_* below);
  a list of ids is sorted without repeats, so equal sets encode equally.
- Wire may not import transport (it sits below it: tests/test_layers.py), so as_address is a
  small strict address checker of its own, for addresses as transport writes them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from .errors import ProtocolError
from .fields import (
    MAX_NODE_ID,
    as_bool,
    as_list,
    as_map,
    as_str,
    as_uint,
    show,
    wrong,
)

MAX_ADDRESS = 256
MAX_NAME = 255
MAX_CLUSTER_ID = 128
MAX_MEMBERS = 1024
MAX_LINE = 1024
MAX_ERROR_MESSAGE = 4096
#: What a node can be; a member's role in status may also be "unknown" (not heard from).
NODE_ROLES = frozenset({"candidate", "follower", "leader", "learner", "pre_candidate"})

#: A checked map. Values are Any: each is exactly what its Field's check returned.
Args = dict[str, Any]
Check = Callable[[object, str, str], Any]  # (value, where, name) -> the checked value
_REQUIRED: Any = object()


@dataclass(frozen=True, slots=True)
class Field:
    """The rule of one field of a map."""

    type: str  #: its type as the docs write it: "uint", "id|null", "[member]", ...
    check: Check  #: (value, where, name) -> the checked value; ProtocolError if it is not one
    default: object = _REQUIRED  #: the value when absent; required when not given

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED


Schema = Mapping[str, Field]


def check_fields(
    raw: Mapping[str, object], schema: Schema, where: str, *, partial: bool = False
) -> Args:
    """Every field of `schema` checked, defaults filled (`partial`: absent fields stay absent).

    `raw` holds no other keys: as_map (or open_envelope) refused them already.
    """
    out: Args = {}
    for name, rule in schema.items():
        if name in raw:
            out[name] = rule.check(raw[name], where, repr(name))
        elif partial:
            continue
        elif rule.required:
            raise ProtocolError(f"{where}: missing field {name!r}")
        else:
            out[name] = rule.default
    return out


def check_map(value: object, where: str, name: str, schema: Schema) -> Args:
    return check_fields(as_map(value, where, name, frozenset(schema)), schema, where)


# -- value checkers and the field types built on them -------------------------------------------


def as_node_id(value: object, where: str, name: str) -> str:
    return as_str(value, where, name, max_len=MAX_NODE_ID, min_len=1)


_DIGITS = frozenset("0123456789")
_HOST = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._%")
_IPV6 = _HOST | {":"}


def as_address(value: object, where: str, name: str) -> str:
    """An address, "host:port" or "[ipv6]:port" with a port of 1 to 65535, as transport writes it.

    Wire may not import transport (it sits below it: tests/test_layers.py), so this is a small
    strict checker of its own. Hosts are DNS names and IP literals (an IPv6 zone after %), so
    anything else (spaces, slashes, "user@", a bare IPv6 without brackets) is refused here.
    """
    if type(value) is str and 3 <= len(value) <= MAX_ADDRESS:
        if value.startswith("["):
            host, sep, port = value[1:].partition("]:")
            chars, ok = _IPV6, ":" in host
        else:
            host, sep, port = value.rpartition(":")
            # DNS labels of 1 to 63 characters (one trailing dot allowed), as resolvers need.
            labels = host.removesuffix(".").split(".")
            chars, ok = _HOST, all(0 < len(label) <= 63 for label in labels)
        if (
            ok
            and sep
            and host
            and chars.issuperset(host)
            and 1 <= len(port) <= 5
            and _DIGITS.issuperset(port)
            and 1 <= int(port) <= 65535
        ):
            return value
    raise wrong(where, name, value, "an address host:port or [ipv6]:port (port 1 to 65535)")


def as_line(value: object, where: str, name: str) -> str:
    """A line of text for a person: bounded, without line breaks."""
    text = as_str(value, where, name, max_len=MAX_LINE)
    if "\n" in text or "\r" in text:
        raise wrong(where, name, value, "one line of text")
    return text


def as_ids(value: object, where: str, name: str) -> list[str]:
    """A sorted list of node ids without repeats (one order, so equal sets encode equally)."""
    items = as_list(value, where, name, max_len=MAX_MEMBERS)
    ids = [as_node_id(i, where, f"an id in {name}") for i in items]
    if any(a >= b for a, b in pairwise(ids)):
        raise ProtocolError(f"{where}: {name} must be sorted without repeats")
    return ids


_IDS = Field("[id]", as_ids)
_MEMBERSHIP: Schema = {"voters": _IDS, "learners": _IDS}


def as_membership(value: object, where: str, name: str) -> Args:
    """{voters: [id], learners: [id]}: disjoint, with at least one voter."""
    out = check_map(value, where, name, _MEMBERSHIP)
    voters, learners = out["voters"], out["learners"]
    if not voters:
        raise ProtocolError(f"{where}: {name} has no voter")
    both = set(voters) & set(learners)
    if both:
        raise ProtocolError(f"{where}: {show(sorted(both))} both voter and learner in {name}")
    return out


def nullable(rule: Field) -> Field:
    """`rule`, or null; absent is null."""
    check = rule.check
    return Field(f"{rule.type}|null", lambda v, w, n: None if v is None else check(v, w, n), None)


def choice(options: frozenset[str], type_name: str) -> Field:
    def check(value: object, where: str, name: str) -> str:
        if type(value) is str and value in options:
            return value
        raise wrong(where, name, value, "one of " + ", ".join(sorted(options)))

    return Field(type_name, check)


def str_check(max_len: int, min_len: int = 0) -> Check:
    """The check of a string of `min_len` to `max_len` characters."""
    return lambda v, w, n: as_str(v, w, n, max_len=max_len, min_len=min_len)


UINT = Field("uint", as_uint)
BOOL = Field("bool", as_bool)
ID = Field("id", as_node_id)
ADDRESS = Field("addr", as_address)
MEMBERSHIP = Field("membership", as_membership)
NODE_ROLE = choice(NODE_ROLES, "role")
OPT_UINT = nullable(UINT)
OPT_ID = nullable(ID)
OPT_ADDRESS = nullable(ADDRESS)
OPT_NAME = nullable(Field("str", str_check(MAX_NAME)))
OPT_CLUSTER_ID = nullable(Field("str", str_check(MAX_CLUSTER_ID, 1)))
