"""Commands: encoding, strict validation, and decoding of hostile bytes (only CommandError)."""

from __future__ import annotations

import ast
import contextlib
import datetime
import sys
from importlib.util import resolve_name
from pathlib import Path

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

import quicraft.statemachine as sm
from quicraft.statemachine import (
    MAX_KEY_BYTES,
    MAX_VALUE_BYTES,
    WRITE_OPS,
    Command,
    CommandError,
    build_command,
    checked_command,
    decode_command,
    encode_command,
)
from quicraft.wire import ProtocolError, decode_request

VALID: list[tuple[str, dict[str, object]]] = [
    ("register", {}),
    ("set", {"key": "a", "value": b"1"}),
    ("set", {"key": "a/b", "value": b"", "session": 3, "seq": 0}),
    ("delete", {"key": "a"}),
    ("delete", {"key": "d", "session": 1, "seq": 9, "ack": 4}),
    ("incr", {"key": "n"}),
    ("incr", {"key": "n", "by": -(1 << 63), "session": 2, "seq": 7, "ack": 7}),
    ("cas", {"key": "c", "expected": None, "new": b"x"}),
    ("cas", {"key": "c", "expected": b"x", "new": b"y", "session": 5, "seq": 1}),
    ("set", {"key": "k", "value": b"", "session": (1 << 64) - 1, "seq": (1 << 64) - 1}),
]


@pytest.mark.parametrize(("op", "args"), VALID)
def test_round_trip(op: str, args: dict[str, object]) -> None:
    command = decode_command(encode_command(op, args, 1234))
    assert command.op == op
    assert command.ts_ms == 1234
    for name, value in args.items():
        assert getattr(command, name) == value
    # args() writes defaults out and re-encodes to the same command.
    assert decode_command(encode_command(op, command.args(), 1234)) == command


def test_defaults() -> None:
    assert decode_command(encode_command("incr", {"key": "n"}, 0)).by == 1
    command = decode_command(encode_command("set", {"key": "k", "value": b"v"}, 5))
    assert (command.session, command.seq, command.ack) == (None, None, None)
    assert command.args() == {"key": "k", "value": b"v"}


def test_encoding_is_deterministic() -> None:
    one = encode_command("cas", {"new": b"y", "expected": b"x", "key": "c"}, 9)
    two = encode_command("cas", {"key": "c", "expected": b"x", "new": b"y"}, 9)
    assert one == two


@pytest.mark.parametrize(("op", "args"), VALID)
def test_encoding_is_canonical(op: str, args: dict[str, object]) -> None:
    data = encode_command(op, args, 1234)
    assert data == cbor2.dumps(cbor2.loads(data), canonical=True)


INVALID: list[tuple[str, dict[str, object], str]] = [
    ("get", {"key": "a"}, "unknown op"),
    ("keys", {}, "unknown op"),
    ("set", {"key": "a"}, "needs the arg 'value'"),
    ("set", {"value": b"1"}, "needs the arg 'key'"),
    ("set", {"key": 1, "value": b"1"}, "key must be text"),
    ("set", {"key": "a", "value": "text"}, "value must be bytes"),
    ("set", {"key": "a", "value": b"1", "extra": 1}, "unknown args for set: extra"),
    ("set", {"key": "k" * (MAX_KEY_BYTES + 1), "value": b""}, "exceeds"),
    ("set", {"key": "é" * (MAX_KEY_BYTES // 2 + 1), "value": b""}, "exceeds"),
    ("set", {"key": "\udc80", "value": b""}, "not valid Unicode"),
    ("set", {"key": "a", "value": b"x" * (MAX_VALUE_BYTES + 1)}, "exceeds"),
    ("incr", {"key": "a", "by": True}, "by must be an integer"),
    ("incr", {"key": "a", "by": 1.0}, "by must be an integer"),
    ("incr", {"key": "a", "by": 1 << 63}, "out of range"),
    ("cas", {"key": "a", "new": b"x"}, "needs the arg 'expected'"),
    ("cas", {"key": "a", "expected": "x", "new": b"x"}, "expected must be bytes"),
    ("cas", {"key": "a", "expected": None, "new": None}, "new must be bytes"),
    ("delete", {"key": "a", "session": 1}, "session and seq go together"),
    ("delete", {"key": "a", "seq": 1}, "session and seq go together"),
    ("delete", {"key": "a", "session": 0, "seq": 1}, "out of range"),
    ("delete", {"key": "a", "session": 1, "seq": -1}, "out of range"),
    ("delete", {"key": "a", "session": True, "seq": 1}, "session must be an integer"),
    ("delete", {"key": "a", "session": 1 << 64, "seq": 1}, "out of range"),
    ("delete", {"key": "a", "session": 1, "seq": 1 << 64}, "out of range"),
    ("delete", {"key": "a", "ack": 1}, "ack needs a session"),
    ("delete", {"key": "a", "session": 1, "seq": 3, "ack": 4}, "ack 4 is above seq 3"),
    ("register", {"session": 1, "seq": 1}, "unknown args for register"),
    ("set", {"key": "", "value": b"1"}, "set needs a key that is not empty"),
    ("cas", {"key": "", "expected": None, "new": b"x"}, "cas needs a key that is not empty"),
]


@pytest.mark.parametrize("op", ["set", "delete", "incr", "cas"])
def test_a_logged_command_with_an_empty_key_still_decodes(op: str) -> None:
    # New commands refuse an empty key, as the client protocol does; an earlier build
    # proposed them, and its log entries must apply alike on every replica still.
    more: dict[str, dict[str, object]] = {
        "set": {"value": b"v"},
        "cas": {"expected": None, "new": b"x"},
    }
    args = {"key": "", **more.get(op, {})}
    entry = cbor2.dumps({"v": 1, "op": op, "ts": 5, "args": args})
    assert decode_command(entry).key == ""


@pytest.mark.parametrize(("op", "args", "reason"), INVALID)
def test_encode_refuses_invalid(op: str, args: dict[str, object], reason: str) -> None:
    with pytest.raises(CommandError, match=reason):
        encode_command(op, args, 0)


@pytest.mark.parametrize("ts", [-1, True, 1.5, 1 << 63])
def test_encode_refuses_bad_ts(ts: object) -> None:
    with pytest.raises(CommandError, match="ts"):
        encode_command("register", {}, ts)  # type: ignore[arg-type]


def _raw(envelope: object) -> bytes:
    return cbor2.dumps(envelope)


NEW_YEAR = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
GOOD = {"v": 1, "op": "set", "ts": 1, "args": {"key": "a", "value": b"1"}}

MALFORMED = [
    b"",
    b"\xff",
    b"junk",
    _raw([1, 2, 3]),
    _raw({**GOOD, "v": 2}),
    _raw({**GOOD, "v": True}),
    _raw({**GOOD, "ts": -5}),
    _raw({**GOOD, "op": 7}),
    _raw({**GOOD, "args": [1]}),
    _raw({**GOOD, "extra": 1}),
    _raw({k: v for k, v in GOOD.items() if k != "ts"}),
    _raw({**GOOD, "args": {"key": "a", "value": 1.5}}),
    _raw(GOOD) + b"\x00",  # trailing bytes
    _raw({**GOOD, "args": {"key": "a", "value": NEW_YEAR}}),  # tag 0 (datetime)
    _raw({**GOOD, "ts": 1 << 80}),  # tag 2 (bignum)
    _raw({**GOOD, "args": {"key": "a", "value": cbor2.CBORTag(99999, b"x")}}),
    _raw({**GOOD, "args": {"key": "a", "value": {1, 2}}}),  # tag 258 (set)
    _raw({**GOOD, "args": {"key": "a", "value": cbor2.undefined}}),
    _raw({**GOOD, "args": {"key": "a", "value": cbor2.CBORSimpleValue(100)}}),
    _raw({1: 2}),  # non-text map key
    b"\xa2\x61v\x01\x61v\x01",  # duplicate key
    _raw([[[[[[[[[[]]]]]]]]]]),  # too deep
    b"\x5b\xff\xff\xff\xff\xff\xff\xff\xff",  # claims an enormous byte string
]


@pytest.mark.parametrize("data", MALFORMED)
def test_decode_refuses_malformed(data: bytes) -> None:
    with pytest.raises(CommandError):
        decode_command(data)


def test_decode_refuses_oversized_without_parsing() -> None:
    with pytest.raises(CommandError, match="exceeds"):
        decode_command(b"\x00" * (3 * MAX_VALUE_BYTES))


def test_decode_refuses_non_bytes() -> None:
    with pytest.raises(CommandError, match="must be bytes"):
        decode_command("text")  # type: ignore[arg-type]


@given(st.binary(max_size=200))
def test_random_bytes_raise_only_command_error(data: bytes) -> None:
    try:
        command = decode_command(data)
    except CommandError:
        return
    assert isinstance(command, Command)


@given(
    st.sampled_from(VALID),
    st.lists(
        st.tuples(st.integers(0, 400), st.integers(0, 255), st.sampled_from("xdi")), max_size=4
    ),
)
def test_mutated_commands_raise_only_command_error(
    valid: tuple[str, dict[str, object]], edits: list[tuple[int, int, str]]
) -> None:
    data = bytearray(encode_command(*valid, 77))
    for position, byte, kind in edits:
        at = position % (len(data) + 1)
        if kind == "x" and at < len(data):
            data[at] ^= byte or 1
        elif kind == "d":
            del data[at : at + 1]
        else:
            data.insert(at, byte)
    try:
        command = decode_command(bytes(data))
    except CommandError:
        return
    # A mutation that still decodes must still satisfy every rule.
    assert decode_command(encode_command(command.op, command.args(), command.ts_ms)) == command


_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5), st.binary(max_size=5)
)
_plain = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@given(
    st.sampled_from(["set", "delete", "incr", "cas", "register", "get", "nope"]),
    st.dictionaries(
        st.sampled_from(["key", "value", "by", "expected", "new", "session", "seq", "ack", "x"]),
        _plain,
        max_size=6,
    ),
    _plain,
)
def test_structured_garbage_raises_only_command_error(op: str, args: object, ts: object) -> None:
    with contextlib.suppress(CommandError):
        decode_command(cbor2.dumps({"v": 1, "op": op, "ts": ts, "args": args}))


# -- the leader's commands from checked client requests ------------------------------------------

_EDGE_TEXT = ["", "a", "k" * MAX_KEY_BYTES, "k" * (MAX_KEY_BYTES + 1), "é" * (MAX_KEY_BYTES // 2)]
_EDGE_TEXT += ["é" * (MAX_KEY_BYTES // 2 + 1), "😀" * (MAX_KEY_BYTES // 4), "😀" * 1025]
_EDGE_BYTES = [b"", b"x", b"x" * MAX_VALUE_BYTES, b"x" * (MAX_VALUE_BYTES + 1)]
_EDGE_INTS = [0, 1, 2, -1, (1 << 63) - 1, 1 << 63, -(1 << 63), -(1 << 63) - 1, (1 << 64) - 1]
_EDGE_INTS += [1 << 64]
_EDGE_VALUES: list[object] = [*_EDGE_TEXT, *_EDGE_BYTES, *_EDGE_INTS, None, True, 1.0, [], {}]
_ARG_NAMES = ["key", "value", "by", "expected", "new", "session", "seq", "ack", "x"]


def _leader_command(op: str, args: dict[str, object]) -> Command | None:
    """What the leader proposes for a write request with `args`, None if the client protocol
    refuses the request; fails if the command's own rules would refuse what it accepted."""
    try:
        frame = cbor2.dumps({"v": 1, "id": 1, "op": op, "args": args})
    except UnicodeEncodeError:  # text that is not Unicode cannot even be sent
        return None
    try:
        request = decode_request(frame)
    except ProtocolError:
        return None
    command = checked_command(request.op, request.args, 1234)
    assert command == build_command(request.op, request.args, 1234)
    assert command.encode() == encode_command(request.op, request.args, 1234)
    return command


@pytest.mark.parametrize(("op", "args"), [v for v in VALID if v[1].get("key") != ""])
def test_a_valid_write_request_becomes_the_same_command_unchecked(
    op: str, args: dict[str, object]
) -> None:
    assert _leader_command(op, args) == build_command(op, args, 1234)


_CLIENT_WRITES = WRITE_OPS | {"register"}


@pytest.mark.parametrize(("op", "args", "reason"), [v for v in INVALID if v[0] in _CLIENT_WRITES])
def test_a_write_the_command_refuses_is_refused_by_the_client_protocol(
    op: str, args: dict[str, object], reason: str
) -> None:
    assert _leader_command(op, args) is None


_GOOD_ARGS: dict[str, dict[str, object]] = {
    "register": {},
    "set": {"key": "k", "value": b"v"},
    "delete": {"key": "k"},
    "incr": {"key": "k", "by": 2},
    "cas": {"key": "k", "expected": None, "new": b"n"},
}
_LEFT_OUT = object()


def test_the_client_protocol_accepts_only_writes_the_command_rules_accept() -> None:
    """The leader builds a write's command without checking it again (checked_command): the
    client protocol's decoder must refuse everything the command's rules refuse. Every good
    request, with and without a session, with each arg in turn left out or set to each edge
    value."""
    accepted = 0
    for op, good in _GOOD_ARGS.items():
        for session in ({}, {"session": 1, "seq": 5, "ack": 3}):
            for name in _ARG_NAMES:
                for value in [_LEFT_OUT, *_EDGE_VALUES]:
                    args: dict[str, object] = {**good, **session, name: value}
                    if value is _LEFT_OUT:
                        del args[name]
                    accepted += _leader_command(op, args) is not None
    assert accepted > 100  # the edges are not all refused: the comparison ran


def test_public_api_is_sorted_and_importable() -> None:
    assert sm.__all__ == sorted(sm.__all__, key=lambda n: (not n.isupper(), n))
    for name in sm.__all__:
        assert hasattr(sm, name), name


def test_statemachine_imports_only_core_wire_and_cbor2() -> None:
    """The layer rule: statemachine builds on quicraft.core and quicraft.wire only."""
    folder = Path(sm.__file__).parent
    paths = list(folder.glob("*.py"))
    assert paths, folder
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):  # `from ..node import x` is quicraft.node
                base = resolve_name("." * node.level + (node.module or ""), sm.__name__)
                names = [base] if node.module else [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                layer = ".".join(name.split(".")[:2])
                assert (
                    top in sys.stdlib_module_names
                    or top in {"__future__", "cbor2"}
                    or layer in {"quicraft.core", "quicraft.wire", "quicraft.statemachine"}
                ), f"{path.name} imports {name}"
