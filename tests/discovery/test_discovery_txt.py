"""The TXT record: what we announce reads back the same, and whatever comes off the wire either
parses into a valid Announcement or raises RecordError (never anything else)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quicraft.discovery import (
    MAX_TXT_BYTES,
    Announcement,
    RecordError,
    decode_txt,
    encode_txt,
    parse_txt,
)

FUZZ = settings(max_examples=300)
ID = "0123456789abcdef"
CID = "feedc0defeedc0de"

names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", fullmatch=True)
node_ids = st.from_regex(r"[0-9a-f]{16,64}", fullmatch=True)
cluster_ids = st.none() | st.from_regex(r"[0-9a-f]{8,64}", fullmatch=True)
announcements = st.builds(
    Announcement,
    cluster=names,
    node_id=node_ids,
    name=names,
    port=st.integers(1, 65535),
    cluster_id=cluster_ids,
    version=st.integers(1, 999),
)


def txt(*items: bytes) -> bytes:
    """Length-prefixed TXT strings, written by hand."""
    return b"".join(bytes((len(item),)) + item for item in items)


VALID = [b"cluster=c1", b"id=" + ID.encode(), b"name=n1", b"v=1", b"formed=0"]


def test_what_we_announce() -> None:
    me = Announcement("c1", ID, "n1", 7400)
    assert not me.formed
    assert encode_txt(me.txt()) == txt(*VALID)
    formed = Announcement("c1", ID, "n1", 7400, cluster_id=CID)
    assert formed.formed
    assert formed.txt() == {
        "cluster": "c1", "id": ID, "name": "n1", "v": "1", "formed": "1", "cid": CID,
    }  # fmt: skip


@given(announcements)
def test_an_announcement_reads_back_the_same(me: Announcement) -> None:
    encoded = encode_txt(me.txt())
    assert len(encoded) <= MAX_TXT_BYTES
    assert parse_txt(encoded, me.port) == me


@FUZZ
@given(st.binary(max_size=MAX_TXT_BYTES + 200), st.integers(-1, 70000))
def test_random_bytes_parse_or_raise_record_error(text: bytes, port: int) -> None:
    try:
        parsed = parse_txt(text, port)
    except RecordError:
        return
    assert parse_txt(encode_txt(parsed.txt()), parsed.port) == parsed


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["cluster", "id", "name", "v", "formed", "cid", "CID", "x"]),
            st.binary(max_size=80) | st.sampled_from([b"blue", ID.encode(), b"1", b"0"]),
        ),
        max_size=8,
    )
)
def test_random_records_of_our_keys_parse_or_raise_record_error(
    pairs: list[tuple[str, bytes]],
) -> None:
    """Closer to valid than random bytes: well-formed strings of our keys with odd values."""
    items = [key.encode() + b"=" + value for key, value in pairs]
    text = txt(*(item[:255] for item in items))
    try:
        parsed = parse_txt(text, 7400)
    except RecordError:
        return
    assert parse_txt(encode_txt(parsed.txt()), 7400) == parsed


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (txt(*VALID)[:-3], "overruns the record"),
        (b"\x05ab", "overruns the record"),
        (txt(*VALID[:4]), r"no formed flag \(formed=\)"),
        (txt(*VALID[1:]), "no cluster name"),
        (txt(b"cluster", *VALID[1:]), "cluster has no value"),
        (txt(b"=x", *VALID), "bad TXT key"),
        (txt(b"k\x00y=1", *VALID), "bad TXT key"),
        (txt(b"cl\xc3\xa9=1", *VALID), "bad TXT key"),
        (txt(b"cluster=bl\xc3\xbce", *VALID[1:]), "cluster name is not ASCII"),
        (txt(b"cluster=-x", *VALID[1:]), "bad cluster name"),
        (txt(b"cluster=" + b"c" * 65, *VALID[1:]), "bad cluster name"),
        (txt(VALID[0], b"id=0123456789ABCDEF", *VALID[2:]), "bad node id"),
        (txt(VALID[0], b"id=0123456789abcde", *VALID[2:]), "bad node id"),
        (txt(VALID[0], b"id=" + b"a" * 65, *VALID[2:]), "bad node id"),
        (txt(VALID[0], b"id=0123456789abcdef\n", *VALID[2:]), "bad node id"),
        (txt(*VALID[:2], b"name=", *VALID[3:]), "bad node name"),
        (txt(*VALID[:3], b"v=0", VALID[4]), "bad protocol version"),
        (txt(*VALID[:3], b"v=01", VALID[4]), "bad protocol version"),
        (txt(*VALID[:3], b"v=1000", VALID[4]), "bad protocol version"),
        (txt(*VALID[:4], b"formed=2"), "bad formed flag"),
        (txt(*VALID[:4], b"formed=1"), r"no cluster id \(cid=\)"),
        (txt(*VALID[:4], b"formed=1", b"cid=abc"), "bad cluster id"),
        (txt(*VALID[:4], b"formed=1", b"cid=" + b"f" * 65), "bad cluster id"),
        (txt(*VALID, b"cid=" + CID.encode()), "a cluster id .* not formed"),
        (txt(*VALID, *[b"pad=" + b"x" * 250] * 6), "at most 1300"),
    ],
)
def test_garbage_is_refused_with_a_reason(text: bytes, error: str) -> None:
    with pytest.raises(RecordError, match=error):
        parse_txt(text, 7400)


def test_a_bad_port_is_refused() -> None:
    for port in (0, -1, 65536):
        with pytest.raises(RecordError, match="bad port"):
            parse_txt(txt(*VALID), port)


def test_rfc_6763_details() -> None:
    """First occurrence wins, keys are case-insensitive, empty strings and unknown keys are
    skipped, and a key with no `=` is present without a value."""
    text = txt(b"", b"CLUSTER=c1", b"cluster=c2", *VALID[1:], b"future=yes", b"flag", b"")
    assert decode_txt(text)["cluster"] == b"c1"
    assert decode_txt(text)["flag"] is None
    assert decode_txt(b"\x00") == {}
    parsed = parse_txt(text, 7400)
    assert (parsed.cluster, parsed.node_id, parsed.name) == ("c1", ID, "n1")
    assert parse_txt(txt(*VALID[:4], b"formed=1", b"CiD=" + CID.encode()), 1).cluster_id == CID


@pytest.mark.parametrize(
    "fields",
    [
        {"cluster": "a b"},
        {"cluster": ""},
        {"node_id": "XYZ"},
        {"node_id": "0123"},
        {"name": "x" * 65},
        {"port": 0},
        {"port": 65536},
        {"cluster_id": "ABCDEF01"},
        {"cluster_id": ""},
        {"version": 0},
    ],
)
def test_we_never_announce_what_others_would_refuse(fields: dict[str, object]) -> None:
    base: dict[str, object] = {"cluster": "c1", "node_id": ID, "name": "n1", "port": 7400}
    with pytest.raises(ValueError):
        Announcement(**{**base, **fields})  # type: ignore[arg-type]


def test_encode_refuses_what_does_not_fit() -> None:
    with pytest.raises(ValueError, match="at most 255"):
        encode_txt({"k": "v" * 254})
    with pytest.raises(ValueError, match="bad TXT key"):
        encode_txt({"a=b": "v"})
    with pytest.raises(ValueError, match="at most 1300"):
        encode_txt({f"k{i}": "v" * 200 for i in range(7)})
