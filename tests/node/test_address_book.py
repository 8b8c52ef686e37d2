"""The member address book (quicraft/node/address_book.py): the reserved `address` command,
its place in snapshots, what a leader publishes and what a node takes from the book, and the
members' names that travel with the addresses."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from quicraft.node.address_book import AddressBook, next_publication
from quicraft.statemachine import ADDRESS_OP, CommandError, KVStore, encode_command
from quicraft.transport.address import Address
from quicraft.wire import OPS as CLIENT_OPS

A, B, C = "a" * 16, "b" * 16, "c" * 16


def _publish(store: KVStore, index: int, node: str, address: str, name: str | None = None) -> None:
    args = {"node": node, "address": address} | ({} if name is None else {"name": name})
    store.apply(index, encode_command(ADDRESS_OP, args, index))


def test_the_store_keeps_the_latest_address_forgets_on_empty_and_snapshots_keep_it() -> None:
    store = KVStore()
    _publish(store, 1, A, "10.0.0.1:7400")
    _publish(store, 2, B, "10.0.0.2:7400")
    _publish(store, 3, A, "10.0.0.9:7400")  # A moved
    _publish(store, 4, C, "10.0.0.3:7400")
    _publish(store, 5, C, "")  # C was removed
    assert dict(store.addresses) == {A: "10.0.0.9:7400", B: "10.0.0.2:7400"}
    # Keys and revisions are untouched: the address book is not key-value data.
    assert store.keys() == []
    restored = KVStore()
    restored.restore(store.snapshot())
    assert dict(restored.addresses) == dict(store.addresses)
    assert restored.snapshot() == store.snapshot()


def test_names_travel_with_addresses_are_forgotten_with_them_and_kept_in_snapshots() -> None:
    store = KVStore()
    _publish(store, 1, A, "10.0.0.1:7400", "n1")
    _publish(store, 2, B, "10.0.0.2:7400")  # an entry written before names were published
    _publish(store, 3, C, "10.0.0.3:7400", "n3")
    _publish(store, 4, C, "")  # C was removed: its name goes too
    _publish(store, 5, A, "10.0.0.9:7400", "")  # no name this time: the known one stays
    assert dict(store.names) == {A: "n1"}
    assert dict(store.addresses) == {A: "10.0.0.9:7400", B: "10.0.0.2:7400"}
    restored = KVStore()
    restored.restore(store.snapshot())
    assert dict(restored.names) == {A: "n1"}
    assert restored.snapshot() == store.snapshot()


def test_the_address_command_is_validated_and_no_client_can_send_it() -> None:
    assert ADDRESS_OP not in CLIENT_OPS
    for bad in ({"node": "", "address": "h:1"}, {"node": A, "address": 7},
                {"node": A, "address": "h" * 300}, {"node": A},
                {"node": A, "address": "h:1", "name": "n" * 65},
                {"node": A, "address": "h:1", "name": 1}):  # fmt: skip
        with pytest.raises(CommandError):
            encode_command(ADDRESS_OP, bad, 1)


def test_the_leader_publishes_what_it_knows_first_hand_and_forgets_former_members() -> None:
    members = {A, B, C}
    first_hand = {A: ("10.0.0.1:7400", "n1"), B: ("10.0.0.2:7400", "n2")}  # C: not connected
    assert next_publication(members, {}, first_hand) == (A, ("10.0.0.1:7400", "n1"))
    book = {A: ("10.0.0.1:7400", "n1"), B: ("10.0.0.2:7400", "n2"), C: ("10.0.0.3:7400", "n3")}
    assert next_publication(members, book, first_hand) is None  # C stays as published
    moved = {**first_hand, B: ("10.0.0.7:7400", "n2")}
    assert next_publication(members, book, moved) == (B, ("10.0.0.7:7400", "n2"))
    unnamed = {**book, B: ("10.0.0.2:7400", "")}  # published before names were
    assert next_publication(members, unnamed, first_hand) == (B, ("10.0.0.2:7400", "n2"))
    assert next_publication({A, B}, book, first_hand) == (C, ("", ""))


@dataclass
class _Pool:
    id: str
    connected: set[str] = field(default_factory=set)
    addresses: dict[str, Address] = field(default_factory=dict)

    def connection(self, node: str) -> object | None:
        return object() if node in self.connected else None


def test_a_node_takes_news_from_the_book_but_not_the_same_news_twice() -> None:
    store, saved = KVStore(), []
    pool = _Pool(A, connected={B}, addresses={B: ("127.0.0.1", 2)})
    book = AddressBook(
        cast(Any, None), store, cast(Any, pool), lambda: ("0.0.0.0", 1),
        lambda: saved.append(1), 5.0,
    )  # fmt: skip
    _publish(store, 1, A, "10.0.0.1:1")  # ourselves: never dialed
    _publish(store, 2, B, "10.0.0.2:2")  # connected now: the live connection wins
    _publish(store, 3, C, "10.0.0.3:3")  # never met: the book tells where
    book.read()
    assert pool.addresses == {B: ("127.0.0.1", 2), C: ("10.0.0.3", 3)}
    assert saved == [1]
    # C is then found elsewhere (mDNS, say): the old news does not overwrite it.
    pool.addresses[C] = ("10.0.0.33", 3)
    book.read()
    assert pool.addresses[C] == ("10.0.0.33", 3) and saved == [1]
    # New news does, and an unreadable address is ignored.
    _publish(store, 4, C, "10.0.0.4:3")
    _publish(store, 5, B, "not an address")
    pool.connected.clear()
    book.read()
    assert pool.addresses == {B: ("127.0.0.1", 2), C: ("10.0.0.4", 3)}
