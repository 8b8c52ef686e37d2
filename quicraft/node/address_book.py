"""The member address book: where every member serves, and its name, replicated through the log.

Why: otherwise addresses are learned one pair of nodes at a time (mDNS, --peers, --join,
hellos). A node added by address while mDNS is off would be known only to the leader that
added it: its votes could not reach the other members, nor theirs it.

Rules:
- Only the leader publishes, one reserved `address` command at a time (statemachine/commands.py),
  and only what it knows first hand: its own advertised address (not a wildcard) and name, and
  the address of each member it is connected to right now (an address it dialed that answered,
  or the one the member's hello gave) with the name the member's certificate gives. A
  published node that is no longer a member is forgotten.
- Names are for people (`quicraft mgmt remove-member NAME`): published with the address, every
  node can name every member, even one that is down and was never connected to this node.
- Every node reads the book now and then. An entry it has not seen before is news: it becomes
  the pool's address of that member, unless this node is connected to the member right now (a
  live connection is better proof than any report). An entry already seen is not applied
  again, so an address this node learned since by itself (mDNS, a hello) is not overwritten
  by older news.
- A node that starts has seen nothing yet: the book fills in, or corrects, the stored
  addresses of the members it is not connected to.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Set

from quicraft.core import NodeId, RaftError, Role
from quicraft.statemachine import ADDRESS_OP, KVStore, encode_command
from quicraft.transport.address import Address, format_address, is_unspecified, parse_address

from .peers import PeerPool
from .runtime import NodeError, RaftNode

log = logging.getLogger("quicraft.addresses")

READ_EVERY_S = 1.0


#: What the book says of a member: (address, name); name "" when not known.
Entry = tuple[str, str]


def next_publication(
    members: Set[NodeId], book: Mapping[NodeId, Entry], first_hand: Mapping[NodeId, Entry]
) -> tuple[NodeId, Entry] | None:
    """The (node, entry) the leader should publish next, or None; an address "" forgets the
    node."""
    for node in sorted(members):
        entry = first_hand.get(node)
        if entry is not None and book.get(node) != entry:
            return node, entry
    for node in sorted(book):
        if node not in members:
            return node, ("", "")
    return None


class AddressBook:
    def __init__(
        self,
        raft: RaftNode,
        kv: KVStore,
        pool: PeerPool,
        advertised: Callable[[], Address],
        save_addresses: Callable[[], None],
        request_timeout: float,
    ):
        self.id = pool.id
        self._raft, self._kv, self._pool = raft, kv, pool
        self._advertised = advertised
        self._save_addresses = save_addresses
        self._timeout = request_timeout
        self._seen: dict[NodeId, str] = {}

    async def run(self) -> None:
        while True:
            await asyncio.sleep(READ_EVERY_S)
            try:
                self.read()
                await self.publish()
            except Exception:
                log.exception("the address book failed a step")

    def read(self) -> None:
        """Take what is new in the book (see the rules)."""
        changed = False
        for node, text in list(self._kv.addresses.items()):
            if self._seen.get(node) == text:
                continue
            self._seen[node] = text
            if node == self.id or self._pool.connection(node) is not None:
                continue
            try:
                address = parse_address(text)
            except ValueError as err:
                log.warning("ignoring the published address %r of %s: %s", text, node, err)
                continue
            if self._pool.addresses.get(node) != address:
                log.info("%s serves at %s (published by a leader)", node, text)
                self._pool.addresses[node] = address
                changed = True
        if changed:
            self._save_addresses()

    async def publish(self) -> None:
        """As leader, publish what the book lacks, one command at a time."""
        while (core := self._raft.core) is not None and core.role is Role.LEADER:
            change = next_publication(core.membership.members(), self._book(), self._first_hand())
            if change is None:
                return
            node, (address, name) = change
            command = {"node": node, "address": address, "name": name}
            data = encode_command(ADDRESS_OP, command, int(time.time() * 1000))
            try:
                await self._raft.start_proposal(data, self._timeout)
            except (RaftError, NodeError) as err:
                log.debug("publishing the address of %s failed: %s", node, err)
                return

    def _book(self) -> dict[NodeId, Entry]:
        names = self._kv.names
        return {node: (text, names.get(node, "")) for node, text in self._kv.addresses.items()}

    def _first_hand(self) -> dict[NodeId, Entry]:
        known = {}
        for node, address in self._pool.addresses.items():
            conn = self._pool.connection(node)
            if conn is not None:
                known[node] = (format_address(address), conn.peer.name)
        host, port = self._advertised()
        if not is_unspecified(host):
            known[self.id] = (format_address((host, port)), self._pool.identity.name)
        return known
