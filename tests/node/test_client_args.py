"""Mistakes in what a program passes to the Python clients fail at once, with one error that
says what to write instead (client/arguments.py, kv.py, events.py). Found by an audit: a URL
was called a bad IPv6 address, a (host, port) tuple failed on `.strip`, `timeout="5"` failed
at the first call and `timeout=-1` gave up without trying, a wildcard endpoint waited out the
whole timeout, `kinds="kv"` was read as the kinds 'k' and 'v' (at the first `async for` step
only), and a str value with a lone surrogate raised a bare UnicodeEncodeError."""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest

import quicraft
from quicraft.client import Client, InvalidRequest, connect, connect_mgmt, connect_sync
from quicraft.client.events import subscribe
from quicraft.transport import IdentityError, init_cluster
from quicraft.transport.address import parse_address

CONNECTS: list[Callable[..., object]] = [connect, connect_mgmt, connect_sync]


@pytest.mark.parametrize("connect_to", CONNECTS)
@pytest.mark.parametrize(
    ("endpoints", "error"),
    [
        ("http://127.0.0.1:7401", "give HOST:PORT, without a scheme such as http://"),
        ([("127.0.0.1", 7401)], "('127.0.0.1', 7401) is not a str: write it '127.0.0.1:7401'"),
        (("127.0.0.1", 7401), "is one (host, port) pair: write it '127.0.0.1:7401'"),
        (None, "endpoints must be 'HOST:PORT' strings, not None"),
        ([], "no endpoints given"),
        (" , ", "no endpoints given"),
        ("0.0.0.0:7401", "'0.0.0.0:7401' is the wildcard address a node listens on"),
        (["127.0.0.1:7401", "[::]:7402"], "'[::]:7402' is the wildcard address"),
        ("127.0.0.1:7401 127.0.0.1:7402", "without spaces, and separate them with commas"),
        ("127.0.0.1:7401;127.0.0.1:7402", "without spaces, and separate them with commas"),
        ("node1 node2:7402", "without spaces, and separate them with commas"),
    ],
)  # fmt: skip
def test_endpoint_mistakes_are_refused_at_connect(
    tmp_path: Path, connect_to: Callable[..., object], endpoints: object, error: str
) -> None:
    init_cluster(tmp_path, "c1")
    with pytest.raises(ValueError, match=re.escape(error)):
        connect_to(endpoints, "c1", certs=tmp_path)


@pytest.mark.parametrize("connect_to", CONNECTS)
@pytest.mark.parametrize("timeout", ["5", -1, 0, math.nan, math.inf, True, None])
def test_a_timeout_that_is_not_seconds_above_0_is_refused_at_connect(
    tmp_path: Path, connect_to: Callable[..., object], timeout: object
) -> None:
    init_cluster(tmp_path, "c1")
    with pytest.raises(ValueError, match="timeout must be a number of seconds above 0, not "):
        connect_to("127.0.0.1:7401", "c1", certs=tmp_path, timeout=timeout)


def test_endpoints_may_be_any_sequence_of_strings(tmp_path: Path) -> None:
    init_cluster(tmp_path, "c1")
    client = connect(("127.0.0.1:7401", "[::1]:7402"), "c1", certs=tmp_path, timeout=3)
    assert client.endpoints == [("127.0.0.1", 7401), ("::1", 7402)]
    assert client.timeout == 3.0


def test_a_url_is_not_taken_for_an_ipv6_address() -> None:
    with pytest.raises(ValueError, match="without a scheme"):
        parse_address("quic://10.0.0.1:7400")


def _client() -> Client:
    return Client([("10.0.0.1", 7400)], cast(Any, None))  # never connects in these tests


@pytest.mark.parametrize(
    "write",
    [
        lambda kv: kv.set("k", "a\udc80"),
        lambda kv: kv.cas("k", "a\udc80", "b"),
        lambda kv: kv.cas("k", None, "b\udc80"),
    ],
)
def test_a_str_value_that_is_not_unicode_text_is_an_invalid_request(write: Any) -> None:
    with pytest.raises(InvalidRequest, match=r"cannot be sent as UTF-8: .* surrogates not allowed"):
        asyncio.run(write(_client().kv))


@pytest.mark.parametrize(
    ("kinds", "error"),
    [
        ("kv", "kinds must be a list of event kinds, such as ['kv'], not 'kv'"),
        (b"kv", "kinds must be a list of event kinds, such as ['kv'], not b'kv'"),
        (5, "kinds must be None or a list of event kinds, not 5"),
        ([], "'kinds' is empty: give at least one, or null for all"),
        (["kv", "kv"], "'kinds' must be kinds without repeats"),
        (iter(["kv", "nope"]), "unknown event kind 'nope'"),
    ],
)
def test_bad_kinds_are_refused_by_events_itself(kinds: Any, error: str) -> None:
    with pytest.raises(InvalidRequest, match=re.escape(error)):
        _client().events(kinds=kinds)


def test_events_reads_an_iterator_of_kinds_once(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[object] = []
    monkeypatch.setattr(
        "quicraft.client.events.subscribe", lambda _e, _i, kinds, *_, **_kw: asked.append(kinds)
    )
    _client().events(kinds=iter(["kv"]))  # read twice, it would be empty the second time
    assert asked == [frozenset({"kv"})]


def test_subscribe_itself_refuses_a_str_of_kinds() -> None:
    async def scenario() -> None:
        events = subscribe([("10.0.0.1", 7400)], cast(Any, None), kinds="kv")
        with pytest.raises(InvalidRequest, match=re.escape("such as ['kv'], not 'kv'")):
            await anext(events)

    asyncio.run(scenario())


def test_a_cluster_not_in_the_certs_folder_is_an_identity_error_naming_those_there(
    tmp_path: Path,
) -> None:
    init_cluster(tmp_path, "c1")
    with pytest.raises(IdentityError, match=r"no cluster 'nosuch' under .* \(found: c1\)"):
        connect("127.0.0.1:7401", "nosuch", certs=tmp_path)


@pytest.mark.parametrize("connect_to", CONNECTS)
@pytest.mark.parametrize(
    ("given", "error"),
    [
        ({"cluster": None}, "cluster must be the cluster's name (a str), not None"),
        ({"name": None}, "name must be the name of an identity in "),
        ({"name": b"admin"}, "(a str, such as 'admin'), not b'admin'"),
        ({"certs": 5}, "certs must be a folder (a str or a Path), not 5"),
        ({"certs": ""}, "certs must be a folder, not '' (an unset variable?)"),
    ],
)
def test_a_cluster_name_or_certs_of_another_type_is_refused_at_connect(
    tmp_path: Path, connect_to: Callable[..., object], given: dict[str, Any], error: str
) -> None:
    """Before: a TypeError from deep inside ("expected string or bytes-like object")."""
    init_cluster(tmp_path, "c1")
    arguments = {"cluster": "c1", "certs": tmp_path, **given}
    with pytest.raises(ValueError, match=re.escape(error)):
        connect_to("127.0.0.1:7401", **arguments)


def test_the_identity_error_of_connect_is_exported_with_the_client(tmp_path: Path) -> None:
    assert quicraft.IdentityError is quicraft.client.IdentityError is IdentityError
    with pytest.raises(quicraft.IdentityError, match="no cluster 'c1' under"):
        connect("127.0.0.1:7401", "c1", certs=tmp_path)


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda kv: kv.set("k\udc80", b"v"), "key"),
        (lambda kv: kv.get("k\udc80"), "key"),
        (lambda kv: kv.incr("k\udc80"), "key"),
        (lambda kv: kv.keys("p\udc80"), "prefix"),
    ],
)
def test_a_key_that_is_not_unicode_text_is_an_invalid_request_naming_it(
    call: Any, field: str
) -> None:
    with pytest.raises(InvalidRequest, match=f"^'{field}' cannot be sent as UTF-8: "):
        asyncio.run(call(_client().kv))


def test_a_bytearray_or_memoryview_value_is_sent_as_its_bytes() -> None:
    """Type checkers let them pass for bytes; the wire refused them."""
    client = _client()
    sent: list[dict[str, Any]] = []

    async def write(op: str, args: dict[str, Any]) -> dict[str, Any]:
        sent.append(args)
        return {"revision": 1, "ok": True}

    client.write = write  # type: ignore[method-assign]

    async def scenario() -> None:
        # Not bytes to mypy (strict bytes): the test is that they are sent all the same.
        await client.kv.set("k", bytearray(b"ab"))  # type: ignore[arg-type]
        await client.kv.cas("k", memoryview(b"ab"), bytearray(b"cd"))  # type: ignore[arg-type]

    asyncio.run(scenario())
    assert sent == [
        {"key": "k", "value": b"ab"},
        {"key": "k", "expected": b"ab", "new": b"cd"},
    ]
    assert all(type(v) is bytes for args in sent for k, v in args.items() if k != "key")


def test_endpoints_is_a_copy_the_caller_may_change() -> None:
    client = _client()
    client.endpoints.append(("10.0.0.9", 7400))
    client.endpoints.clear()
    assert client.endpoints == [("10.0.0.1", 7400)]
