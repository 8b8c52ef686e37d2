"""Subscribing to a cluster's events (`quicraft-events/1`) from Python:

    async with quicraft.connect(endpoints=["127.0.0.1:7401"], cluster="c1") as c:
        async for event in c.events(kinds=["kv"], prefix="config/"):
            print(event.pos, event.kind, event.data)

Rules:
- A subscription has its own QUIC connection and stream (an events connection lives for hours
  and must not hold up requests); it uses the client's endpoints and identity.
- It resumes by itself: after a lost connection, a node stopping or a slow_subscriber cut-off,
  it subscribes again on the next endpoint with since = the last position it yielded or was
  told by a progress frame, so the caller sees every event once, in order
  (EventStreamReader checks that of every node).
  A live subscription (since=None) is told where it starts by a progress frame, and
  resumes from there; one that lost its node before that resumes live (it has no position).
- compacted from one node sends it to the others, which may hold more; once a whole round of
  endpoints said so (or could not be reached) it raises EventsCompacted (a ClientError, code
  "compacted", with `oldest`): re-read the state, then subscribe with since=oldest.
  bad_request and forbidden from a node are raised at once; a refused connection (a node of
  another cluster listed by mistake) is passed by, forbidden once every endpoint refused.
  A node that refuses it for too many connections of this identity from this host
  (too_many_connections) is not final: a slot frees as soon as one of them closes, so that
  is waited for, as for a node that cannot be reached, with a warning (below).
  Nothing else ends it: it retries, backing off to RETRY_MAX_S, until the caller stops
  iterating.
- When no node could be reached for UNREACHABLE_WARN_S, it logs one warning (and one more
  once a node answers again), so that a wrong address does not look like a quiet cluster.
  A node refusing it for too many connections is told at once, in a warning of its own:
  each is said once while it lasts, and again only after the other was said (one warning
  could not tell, after a restart of every node, that they now answer with that refusal).
- The idle timeout is short (IDLE_TIMEOUT_S) so that a node that died without a word is
  noticed in seconds, not after the transport's default half minute; a node that does not
  answer a connect is left as the request clients leave it (channel.py ConnectPace).
- It ends when its client closes (`life`, channel.py Lifetime): the client closes its
  connection and wakes it from a connect or a backoff sleep.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Iterable
from typing import Any

from opentelemetry.context import get_current
from opentelemetry.trace import SpanKind

from quicraft.telemetry import global_tracing, traceparent
from quicraft.transport import ALPN_EVENTS, Connection, Identity, RefusedError, TransportError
from quicraft.transport import connect as quic_connect
from quicraft.transport.address import Address, format_address
from quicraft.transport.per_identity import TOO_MANY_CONNECTIONS
from quicraft.wire import (
    Event,
    EventStreamEnd,
    EventStreamReader,
    ProtocolError,
    Subscription,
    decode_subscribe,
    encode_subscribe,
)

from .channel import ConnectPace, Lifetime, failure_at
from .client import ClientError, InvalidRequest
from .kv import sendable_text

log = logging.getLogger("quicraft.client")

IDLE_TIMEOUT_S = 5.0
RETRY_MIN_S = 0.05
RETRY_MAX_S = 2.0
UNREACHABLE_WARN_S = 3.0


class EventsCompacted(ClientError):
    """The events after `since` are gone from every node: re-read the state first."""

    def __init__(self, message: str, oldest: int | None):
        super().__init__("compacted", message)
        self.oldest = oldest

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.message, self.oldest), self.__dict__


def check_subscription(
    kinds: Iterable[str] | None, prefix: str | None, since: int | None
) -> Subscription:
    """What these arguments subscribe to; InvalidRequest if a node would refuse them.
    Client.events calls it, so that a mistake fails where it was made, not at the first
    `async for` step."""
    if isinstance(kinds, str | bytes):  # iterable, but of characters: "kv" is not {"k", "v"}
        raise InvalidRequest(
            "bad_request", f"kinds must be a list of event kinds, such as ['kv'], not {kinds!r}"
        )
    try:
        listed = None if kinds is None else list(kinds)
    except TypeError:
        raise InvalidRequest(
            "bad_request", f"kinds must be None or a list of event kinds, not {kinds!r}"
        ) from None
    if prefix is not None:
        prefix = sendable_text(prefix, "prefix")  # not UTF-8: say so, as kv calls do
    try:
        return decode_subscribe(encode_subscribe(listed, prefix, since))
    except ProtocolError as err:
        raise InvalidRequest("bad_request", str(err)) from None


async def subscribe(
    endpoints: list[Address],
    identity: Identity,
    kinds: Iterable[str] | None = None,
    prefix: str | None = None,
    since: int | None = None,
    *,
    start: int = 0,
    life: Lifetime | None = None,
) -> AsyncGenerator[Event, None]:
    """Every event after `since` that `kinds` and `prefix` select, across reconnections,
    until `life` (the client's) closes.

    Raises InvalidRequest at its first step if the node would refuse the subscription.
    """
    life = life or Lifetime()
    life.check()
    wanted = check_subscription(kinds, prefix, since).kinds
    last = since
    current = start % len(endpoints)
    tracing = global_tracing("quicraft.client")
    # Attempts in a row that met compacted (or no node, after one did): a round of them ends it.
    refusals = compacted = 0
    refused: set[str] = set()  # endpoints that refused the connection since one took it
    delay = RETRY_MIN_S
    loop = asyncio.get_running_loop()
    unreachable_since: float | None = None  # the first of the attempts in a row that failed
    warned: str | None = None  # what the last warning said it waits for: "a node", "a slot"
    pace = ConnectPace()  # a node that answers nothing is left after a second, not five
    while not life.closed:
        address = endpoints[current]
        where = format_address(address)
        reader = EventStreamReader(Subscription(wanted, prefix, last))
        end: EventStreamEnd | None = None
        connected = False
        try:
            dial = quic_connect(
                address[0], address[1], identity, ALPN_EVENTS, idle_timeout=IDLE_TIMEOUT_S
            )
            conn = await life.unless_closed(pace.connect(dial, where), drop=_close_unused)
            if conn is None:
                return  # the client closed
            life.track(conn)
        except RefusedError as err:
            if err.reason == TOO_MANY_CONNECTIONS:  # waited for (module rules)
                unreachable_since = None  # a node answered
                if warned != "a slot":
                    log.warning("events: %s; waiting for a free slot", failure_at(where, err))
                    warned = "a slot"
                else:
                    log.info("events: %s", failure_at(where, err))
            else:  # passed by, as the request clients do (channel.py)
                refused.add(where)
                if refused >= {format_address(a) for a in endpoints}:
                    raise ClientError("forbidden", f"refused by {where}: {err}") from None
                log.info("events: refused by %s: %s", where, err)
        except TransportError as err:
            log.info("events: cannot reach %s: %s", where, err)
            now = loop.time()
            unreachable_since = unreachable_since or now
            if warned != "a node" and now - unreachable_since >= UNREACHABLE_WARN_S:
                log.warning("events: no node answers (%s); still trying", failure_at(where, err))
                warned = "a node"
        else:
            connected = True
            refused.clear()
            if warned:
                log.warning("events: %s answers; following the events again", where)
            unreachable_since, warned = None, None
            try:
                # Traced, each subscribe is a short client span: the subscription is not.
                with tracing.rpc(
                    "quicraft.events", "subscribe", SpanKind.CLIENT, get_current()
                ) as span:
                    stream = await conn.open_stream()
                    stream.write_frame(encode_subscribe(wanted, prefix, last, traceparent(span)))
                while (frame := await stream.read_frame()) is not None:
                    item = reader.feed(frame)
                    if isinstance(item, EventStreamEnd):
                        end = item
                        break
                    last = item.pos
                    delay = RETRY_MIN_S
                    refusals = compacted = 0
                    if isinstance(item, Event):
                        yield item
                else:
                    log.info("events: %s ended the stream without a word", where)
            except (TransportError, ProtocolError, ConnectionError) as err:
                log.info("events: lost %s: %s", where, err)
            finally:
                conn.close("subscription over")
        if life.closed:
            return
        if end is not None:
            if end.code in ("forbidden", "bad_request"):
                raise ClientError(end.code, end.message)
            log.info("events: %s ended the subscription: %s (%s)", where, end.code, end.message)
        if end is not None and end.code == "compacted":
            refusals, compacted = refusals + 1, compacted + 1
            if refusals >= len(endpoints):
                raise EventsCompacted(end.message, end.oldest)
        elif not connected and compacted:
            refusals += 1  # unknown; counted so that dead nodes cannot keep it spinning
        else:
            refusals = compacted = 0
        current = (current + 1) % len(endpoints)
        if end is None or end.code != "compacted":
            await life.unless_closed(asyncio.sleep(delay))
            delay = min(delay * 2, RETRY_MAX_S)


def _close_unused(conn: Connection) -> None:
    """Close a connection made as its subscription was being cancelled."""
    conn.close("subscription cancelled")
