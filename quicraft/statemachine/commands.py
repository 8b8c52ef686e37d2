"""Commands: what a key-value write becomes in the Raft log.

Rules:
- A command is a CBOR map `{"v": 1, "op": str, "ts": int, "args": {...}}`. `ts` is the
  leader's wall clock in milliseconds, stamped when it proposed the command; it is the only
  clock any replica's state machine ever looks at.
- Ops and args follow the quicraft-client/1 protocol (wire/client.py) for writes, plus
  `register`, plus the reserved `found` {cluster_id}: the founder of a cluster formed on a LAN
  proposes it once to give the cluster its id. It is not in the client protocol's op table,
  so no client can send it; the store applies it only while it has no cluster id.
- The reserved `address` {node, address, name}: the leader publishes where a member serves
  and the name its certificate gives (node/address_book.py), so every member, and every
  later joiner, can dial every other and name it, even once it is gone. An empty address
  forgets the node; `name` is optional (older entries lack it). A hint only: the store keeps
  text it does not parse.
- Session args: `session` and `seq` come together; the optional `ack` is the lowest seq the
  client still awaits, so it is never above `seq`.
- encode_command validates before anything enters the log (checked_command relies on the
  client protocol's decoder having done it, with the same rules). decode_command validates again:
  a replica treats log bytes as untrusted (a bug or another version could have put anything
  there) and turns whatever is wrong into CommandError, never another exception.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import cbor2

from ._cbor import canonical_order, strict_loads

VERSION = 1
MAX_KEY_BYTES = 4 * 1024  #: a key's UTF-8 encoding
MAX_VALUE_BYTES = 1024 * 1024
#: cas carries two values; the rest is small change.
MAX_COMMAND_BYTES = 2 * MAX_VALUE_BYTES + MAX_KEY_BYTES + 1024
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
UINT64_MAX = (1 << 64) - 1  #: session ids (log indexes), seqs and acks, as on the wire

WRITE_OPS = frozenset({"cas", "delete", "incr", "set"})
#: Reserved: proposed by the node itself (node/lan.py, node/address_book.py), never by a client.
FOUND_OP = "found"
ADDRESS_OP = "address"
OPS = WRITE_OPS | {"register", FOUND_OP, ADDRESS_OP}
MAX_NODE_ID = 128
MAX_ADDRESS = 256
MAX_NAME = 64  #: a certificate's name (transport/identity.py)
_CLUSTER_ID = re.compile(r"[0-9a-f]{8,64}")


class CommandError(ValueError):
    """A command that is not well formed; the message says what is wrong, in one line."""


class Command(NamedTuple):
    """A validated command. Fields an op does not use keep their defaults. (A tuple: every
    write builds one, where a frozen dataclass costs three times as much.)"""

    op: str
    ts_ms: int
    key: str = ""
    value: bytes = b""  #: set
    by: int = 1  #: incr
    expected: bytes | None = None  #: cas: None means "the key must be absent"
    new: bytes = b""  #: cas
    session: int | None = None
    seq: int | None = None
    ack: int | None = None
    cluster_id: str = ""  #: found
    node: str = ""  #: address
    address: str = ""  #: address ("" forgets the node)
    name: str = ""  #: address: the member's name ("" when not known)

    def args(self) -> dict[str, object]:
        """The args map that encodes this command (defaults written out), its keys in
        canonical CBOR order."""
        args: dict[str, object] = {}
        for name in _ORDER[self.op]:
            value = getattr(self, name)
            if value is not None or name not in _SESSION:
                args[name] = value
        return args

    def encode(self) -> bytes:
        """The log payload of this command: canonical CBOR. Every map is built in canonical
        key order, so a plain encode gives the canonical bytes without sorting them."""
        envelope = {"v": VERSION, "op": self.op, "ts": self.ts_ms, "args": self.args()}
        return cbor2.dumps(envelope)


def encode_command(op: str, args: Mapping[str, object], ts_ms: int) -> bytes:
    """The log payload for `op` with `args`, proposed at leader time `ts_ms`.

    Raises CommandError if the command is not valid (the proposer answers bad_request).
    """
    return build_command(op, args, ts_ms).encode()


def build_command(op: str, args: Mapping[str, object], ts_ms: int) -> Command:
    """The validated command for `op` with `args` at leader time `ts_ms` (encode() gives its
    log payload). Raises CommandError if it is not valid."""
    command = _build(op, args, ts_ms)
    # New commands only, as the client protocol: a log entry with an empty key (an earlier
    # build proposed them) must still apply alike on every replica, so decoding takes it.
    if "key" in args and not command.key:
        raise CommandError(f"{op} needs a key that is not empty")
    return command


def checked_command(op: str, args: Mapping[str, Any], ts_ms: int) -> Command:
    """The command for a client's write (`op` one of WRITE_OPS or register) whose args the
    client protocol's decoder has already checked and normalised (wire/client.py,
    decode_request). Its rules for a write's args are this module's (a test holds them to
    it), so the leader does not check every write twice; encode() gives the same bytes as
    build_command would."""
    return Command(op, ts_ms, **args)


def decode_command(data: bytes) -> Command:
    """Parse and validate a log payload. Raises CommandError and nothing else."""
    if type(data) is not bytes:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise CommandError(f"command must be bytes, not {type(data).__name__}")
        data = bytes(data)
    if len(data) > MAX_COMMAND_BYTES:
        raise CommandError(f"command of {len(data)} bytes exceeds {MAX_COMMAND_BYTES}")
    try:
        envelope = strict_loads(data, max_depth=3)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    if type(envelope) is not dict:
        raise CommandError("command is not a CBOR map")
    if envelope.keys() != _ENVELOPE:
        got = ", ".join(sorted(map(str, envelope)))
        raise CommandError(f"command fields must be v, op, ts, args; got {got}")
    if type(envelope["v"]) is not int or envelope["v"] != VERSION:
        raise CommandError(f"unsupported command version {envelope['v']!r}")
    op, args = envelope["op"], envelope["args"]
    if type(op) is not str:
        raise CommandError("op must be text")
    if type(args) is not dict:
        raise CommandError("args must be a map")
    return _build(op, args, envelope["ts"])


_ENVELOPE = frozenset({"v", "op", "ts", "args"})


# -- validation ---------------------------------------------------------------------------------


def _key(name: str, value: object) -> str:
    if type(value) is str and len(value) <= MAX_KEY_BYTES and value.isascii():
        return value  # one byte per character, all valid: nothing to encode to know
    if not isinstance(value, str):
        raise CommandError(f"{name} must be text")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise CommandError(f"{name} is not valid Unicode text") from None
    if size > MAX_KEY_BYTES:
        raise CommandError(f"{name} of {size} bytes exceeds {MAX_KEY_BYTES}")
    return value


def _bytes(name: str, value: object) -> bytes:
    if type(value) is bytes and len(value) <= MAX_VALUE_BYTES:
        return value
    if not isinstance(value, bytes):
        raise CommandError(f"{name} must be bytes")
    if len(value) > MAX_VALUE_BYTES:
        raise CommandError(f"{name} of {len(value)} bytes exceeds {MAX_VALUE_BYTES}")
    return value


def _bytes_or_none(name: str, value: object) -> bytes | None:
    return None if value is None else _bytes(name, value)


def _cluster_id(name: str, value: object) -> str:
    if not isinstance(value, str) or not _CLUSTER_ID.fullmatch(value):
        raise CommandError(f"{name} must be 8 to 64 lowercase hex digits")
    return value


def _text(name: str, value: object, low: int, high: int) -> str:
    if not isinstance(value, str) or not low <= len(value) <= high:
        raise CommandError(f"{name} must be text of {low} to {high} characters")
    return value


def _node_id(name: str, value: object) -> str:
    return _text(name, value, 1, MAX_NODE_ID)


def _address(name: str, value: object) -> str:
    return _text(name, value, 0, MAX_ADDRESS)


def _member_name(name: str, value: object) -> str:
    return _text(name, value, 0, MAX_NAME)


def _int(name: str, value: object, low: int, high: int) -> int:
    # type() rather than isinstance(): True is an int to Python but not to the protocol.
    if type(value) is int and low <= value <= high:
        return value
    if type(value) is not int:
        raise CommandError(f"{name} must be an integer")
    if not low <= value <= high:
        raise CommandError(f"{name} {value} is out of range {low}..{high}")
    return value


def _int64(name: str, value: object) -> int:
    return _int(name, value, INT64_MIN, INT64_MAX)


def _positive(name: str, value: object) -> int:
    return _int(name, value, 1, UINT64_MAX)


def _natural(name: str, value: object) -> int:
    return _int(name, value, 0, UINT64_MAX)


_Check = Callable[[str, object], object]
_ABSENT = object()
_SESSION: dict[str, tuple[bool, _Check]] = {
    "session": (False, _positive),
    "seq": (False, _natural),
    "ack": (False, _natural),
}
#: op -> arg name -> (required, check)
_ARGS: dict[str, dict[str, tuple[bool, _Check]]] = {
    "register": {},
    FOUND_OP: {"cluster_id": (True, _cluster_id)},
    ADDRESS_OP: {
        "node": (True, _node_id),
        "address": (True, _address),
        "name": (False, _member_name),
    },
    "set": {"key": (True, _key), "value": (True, _bytes), **_SESSION},
    "delete": {"key": (True, _key), **_SESSION},
    "incr": {"key": (True, _key), "by": (False, _int64), **_SESSION},
    "cas": {
        "key": (True, _key),
        "expected": (True, _bytes_or_none),
        "new": (True, _bytes),
        **_SESSION,
    },
}


#: op -> its arg names in canonical order (Command.args)
_ORDER = {op: canonical_order(spec) for op, spec in _ARGS.items()}


def _build(op: str, args: Mapping[str, object], ts_ms: object) -> Command:
    spec = _ARGS.get(op)
    if spec is None:
        raise CommandError(f"unknown op {op!r}; commands are {', '.join(sorted(OPS))}")
    ts = _int("ts", ts_ms, 0, INT64_MAX)
    if not spec.keys() >= args.keys():
        unknown = sorted(str(name) for name in args if name not in spec)
        raise CommandError(f"unknown args for {op}: {', '.join(unknown)}")
    fields: dict[str, Any] = {}
    for name, (required, check) in spec.items():
        value = args.get(name, _ABSENT)
        if value is not _ABSENT:
            fields[name] = check(name, value)
        elif required:
            raise CommandError(f"{op} needs the arg {name!r}")
    session, seq, ack = fields.get("session"), fields.get("seq"), fields.get("ack")
    if (session is None) != (seq is None):
        raise CommandError("session and seq go together")
    if ack is not None:
        if seq is None:
            raise CommandError("ack needs a session and seq")
        if ack > seq:
            raise CommandError(f"ack {ack} is above seq {seq}: this write is still awaited")
    return Command(op, ts, **fields)
