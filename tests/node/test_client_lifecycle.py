"""A client's life (client/channel.py Lifetime, client/sync.py): closing it leaves no socket
open and ends its subscriptions, a closed client says so instead of reconnecting, a client
stays in the event loop it first ran in, and the sync client refuses a running loop and
cancels a call that Ctrl-C interrupts."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from cluster_harness import Cluster, free_base_port, one_node_cluster

from quicraft.client import (
    ClientError,
    InvalidRequest,
    MgmtError,
    connect,
    connect_mgmt,
    connect_sync,
)
from quicraft.client.channel import Lifetime
from quicraft.client.events import IDLE_TIMEOUT_S
from quicraft.client.sync import SyncClient
from quicraft.transport import TransportError
from quicraft.wire import Event

CLUSTER = "t1"


@pytest.fixture(scope="module")
def one_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from one_node_cluster(tmp_path_factory.mktemp("lifecycle") / "cluster")


def endpoint(cluster: Cluster) -> str:
    return cluster.nodes[0].address


def dead_endpoint() -> str:
    """A loopback port nothing listens on: every attempt fails, until the timeout."""
    return f"127.0.0.1:{free_base_port(1) + 1}"


async def running_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


def run_script(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `code` as a user's script would be, with every ResourceWarning shown."""
    return subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error::ResourceWarning", "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


README_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    import quicraft

    endpoints, certs = sys.argv[1], sys.argv[2]

    async def main():
        async with quicraft.connect(endpoints=endpoints, cluster="t1", certs=certs) as c:
            await c.kv.set("readme", b"1")
            events = []

            async def follow():
                async for event in c.events(kinds=["kv"], prefix="readme"):
                    events.append(event)

            following = asyncio.create_task(follow())
            while not events:
                await c.kv.set("readme", b"2")
                await asyncio.sleep(0.1)
        await asyncio.wait_for(following, 10)
        print("async done")

    asyncio.run(main())
    with quicraft.connect_sync(endpoints=endpoints, cluster="t1", certs=certs) as c:
        c.kv.set("readme", "3")
    print("sync done")
    """
)


def test_a_readme_script_leaves_no_socket_open(one_node: Cluster) -> None:
    # Before, each connection's UDP socket stayed open until aioquic's closing period ended,
    # after the script did: "ResourceWarning: unclosed transport" at exit.
    done = run_script(README_SCRIPT, endpoint(one_node), str(one_node.local.certs))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["async done", "sync done"]
    assert "ResourceWarning" not in done.stderr and "unclosed" not in done.stderr, done.stderr


def test_a_closed_client_raises_and_does_not_reconnect(one_node: Cluster) -> None:
    async def scenario() -> None:
        client = one_node.client()
        async with client:
            await client.kv.set("closed/a", b"1")
        for use in (client.kv.get("closed/a"), client.kv.set("closed/a", b"2")):
            with pytest.raises(ClientError, match="the client is closed") as raised:
                await use
            assert raised.value.code == "closed"
        with pytest.raises(ClientError, match="the client is closed"):
            await anext(client.events())
        await client.close()  # twice: harmless
        assert asyncio.all_tasks() == {asyncio.current_task()}  # no new connection lives on

    asyncio.run(scenario())


def test_a_closed_management_client_raises_its_own_error(one_node: Cluster) -> None:
    async def scenario() -> None:
        admin = connect_mgmt(endpoint(one_node), CLUSTER, one_node.local.certs)
        async with admin:
            assert (await admin.status())["leader"]
        with pytest.raises(MgmtError, match="the client is closed") as raised:
            await admin.status()
        assert raised.value.code == "closed"

    asyncio.run(scenario())


def test_a_closed_sync_client_raises_the_same(one_node: Cluster) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        client = connect_sync(endpoint(one_node), CLUSTER, one_node.local.certs)
        with client:
            client.kv.set("closed/b", "1")
        with pytest.raises(ClientError, match="the client is closed") as raised:
            client.kv.get("closed/b")
        assert raised.value.code == "closed"
        client.close()
        gc.collect()
    assert [str(w.message) for w in caught] == []  # no "coroutine ... was never awaited"


def test_the_sync_client_refuses_a_running_event_loop(one_node: Cluster) -> None:
    made_outside = connect_sync(endpoint(one_node), CLUSTER, one_node.local.certs)

    async def inside() -> None:
        with pytest.raises(RuntimeError, match=r"async with quicraft\.connect\(") as raised:
            connect_sync(endpoint(one_node), CLUSTER, one_node.local.certs)
        assert "running event loop" in str(raised.value)
        with pytest.raises(RuntimeError, match=r"async with quicraft\.connect\("):
            made_outside.kv.get("k")
        made_outside.close()  # works here too

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(inside())
        gc.collect()
    assert [str(w.message) for w in caught] == []  # no coroutine never awaited, no loop left
    with pytest.raises(ClientError, match="the client is closed"):
        made_outside.kv.get("k")


def test_a_client_from_another_event_loop_says_so(one_node: Cluster) -> None:
    client = one_node.client()
    first = asyncio.new_event_loop()
    try:
        first.run_until_complete(client.kv.set("loops/a", b"1"))

        async def elsewhere() -> None:
            with pytest.raises(RuntimeError, match="event loop it first ran in"):
                await client.kv.get("loops/a")
            with pytest.raises(RuntimeError, match="event loop it first ran in"):
                await anext(client.events())
            await client.close()  # does not crash; the first loop closes the connections

        asyncio.run(asyncio.wait_for(elsewhere(), 20))
        with pytest.raises(ClientError, match="the client is closed"):
            first.run_until_complete(client.kv.get("loops/a"))
        first.run_until_complete(client.close())  # waits for them, in their own loop
        assert not asyncio.all_tasks(first)
    finally:
        first.close()


def test_a_subscription_ends_when_its_client_closes(one_node: Cluster) -> None:
    async def scenario() -> None:
        client = one_node.client()
        got: list[Event] = []

        async def follow() -> None:
            async for event in client.events(kinds=["kv"], prefix="subs/"):
                got.append(event)

        following = asyncio.create_task(follow())
        while not got:
            await client.kv.set("subs/a", b"1")
            await asyncio.sleep(0.1)
        await client.close()
        await asyncio.wait_for(following, 10)  # before: it went on until cancelled

    asyncio.run(scenario())


def test_a_subscription_retrying_ends_when_its_client_closes(one_node: Cluster) -> None:
    async def scenario() -> None:
        client = connect(dead_endpoint(), CLUSTER, one_node.local.certs)
        following = asyncio.create_task(anext(client.events()))
        await asyncio.sleep(0.5)  # connecting and backing off, again and again
        await client.close()
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(following, 10)

    asyncio.run(scenario())


@pytest.mark.parametrize("stop", [KeyboardInterrupt, SystemExit])
def test_an_interrupted_sync_call_is_cancelled(one_node: Cluster, stop: type) -> None:
    # What a signal handler of the program's own does: raise out of the loop mid-call.
    client = connect_sync(dead_endpoint(), CLUSTER, one_node.local.certs, timeout=30)
    try:
        loop = client.run(running_loop())

        def interrupt() -> None:
            raise stop()

        loop.call_later(0.3, interrupt)
        with pytest.raises(stop):
            client.kv.set("orphan", "written by an interrupted call")
        assert not asyncio.all_tasks(loop)  # before: KV.set went on, in the next call
    finally:
        client.close()


CTRL_C_SCRIPT = textwrap.dedent(
    """
    import asyncio, os, signal, sys, threading
    import quicraft

    async def running_loop():
        return asyncio.get_running_loop()

    signal.signal(signal.SIGINT, signal.default_int_handler)  # as a terminal gives
    client = quicraft.connect_sync(sys.argv[1], "t1", certs=sys.argv[2], timeout=30)
    threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
    try:
        client.kv.set("orphan", "written by an interrupted call")
    except KeyboardInterrupt:
        loop = client.run(running_loop())  # the client's own
        print("left:", sorted(t.get_name() for t in asyncio.all_tasks(loop)))
    client.close()
    """
)


def test_ctrl_c_during_a_sync_call_cancels_it(one_node: Cluster) -> None:
    done = run_script(CTRL_C_SCRIPT, dead_endpoint(), str(one_node.local.certs))
    assert done.stdout == "left: []\n", done.stdout + done.stderr
    assert "never retrieved" not in done.stderr and "Warning" not in done.stderr, done.stderr


def test_the_sync_client_has_what_the_async_one_has(one_node: Cluster) -> None:
    with connect_sync(endpoint(one_node), CLUSTER, one_node.local.certs) as client:
        revision = client.kv.set("same/a", "1")
        assert client.kv.get_with_revision("same/a") == (b"1", revision)
        swapped, token = client.kv.cas_with_revision("same/a", "1", "2")
        assert swapped and token > revision
        assert client.current_endpoint == endpoint(one_node)


def open_connections(client: SyncClient) -> int:
    return sum(not c.closed for c in client.client._link.life._connections)


def test_the_sync_client_follows_events_until_the_loop_stops(one_node: Cluster) -> None:
    with connect_sync(endpoint(one_node), CLUSTER, one_node.local.certs) as client:
        with pytest.raises(InvalidRequest, match="list of event kinds"):
            client.events(kinds="kv")  # at once, not at the first step
        revisions = [client.kv.set("sync-events/a", "1"), client.kv.set("sync-events/b", "2")]
        seen = []
        for event in client.events(kinds=["kv"], prefix="sync-events/", since=0):
            seen.append(event.data["revision"])
            if len(seen) == 2:
                break
        assert seen == revisions
        assert open_connections(client) == 1  # the client's own; the subscription's is closed


def test_closing_the_sync_client_ends_its_events(one_node: Cluster) -> None:
    client = connect_sync(endpoint(one_node), CLUSTER, one_node.local.certs)
    client.kv.set("sync-close/a", "1")
    events = client.events(kinds=["kv"], prefix="sync-close/", since=0)
    assert next(events).data["key"] == "sync-close/a"
    client.close()
    assert list(events) == []
    with pytest.raises(ClientError, match="the client is closed"):
        client.events()


EVENTS_CTRL_C_SCRIPT = textwrap.dedent(
    """
    import asyncio, os, signal, sys, threading
    import quicraft

    async def running_loop():
        return asyncio.get_running_loop()

    signal.signal(signal.SIGINT, signal.default_int_handler)  # as a terminal gives
    client = quicraft.connect_sync(sys.argv[1], "t1", certs=sys.argv[2])
    threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()
    try:
        for event in client.events(prefix="nobody-writes-here/"):
            print("event:", event)
    except KeyboardInterrupt:
        print("left:", sorted(t.get_name() for t in asyncio.all_tasks(client.run(running_loop()))))
    client.close()
    """
)


def test_ctrl_c_while_waiting_for_an_event_ends_the_subscription(one_node: Cluster) -> None:
    done = run_script(EVENTS_CTRL_C_SCRIPT, endpoint(one_node), str(one_node.local.certs))
    assert done.stdout == "left: []\n", done.stdout + done.stderr
    assert "never retrieved" not in done.stderr and "Warning" not in done.stderr, done.stderr


def test_a_slow_sync_subscriber_resumes_and_misses_nothing(one_node: Cluster) -> None:
    with connect_sync(endpoint(one_node), CLUSTER, one_node.local.certs) as client:
        client.kv.set("sync-slow/0", "0")
        events = client.events(kinds=["kv"], prefix="sync-slow/", since=0)
        assert next(events).data["key"] == "sync-slow/0"
        with connect_sync(endpoint(one_node), CLUSTER, one_node.local.certs) as writer:
            for n in range(1, 4):
                writer.kv.set(f"sync-slow/{n}", str(n))
        # Longer than the subscription's idle timeout, with its loop not running at all.
        time.sleep(IDLE_TIMEOUT_S + 1)
        rest = [next(events).data["key"] for _ in range(3)]
        assert rest == ["sync-slow/1", "sync-slow/2", "sync-slow/3"]


def test_the_sync_client_takes_calls_from_several_threads_in_turn(one_node: Cluster) -> None:
    """Before, a call made while another thread's ran failed with "This event loop is already
    running", leaving a coroutine never awaited and a task destroyed pending."""
    failures: list[BaseException] = []

    def count(client: SyncClient) -> None:
        try:
            for _ in range(10):
                client.kv.incr("threads/n")
        except BaseException as err:  # the test's thread: hand it over
            failures.append(err)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with connect_sync(endpoint(one_node), CLUSTER, one_node.local.certs) as client:
            client.kv.delete("threads/n")
            threads = [threading.Thread(target=count, args=(client,)) for _ in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert failures == []
            assert client.kv.get("threads/n") == b"40"
        gc.collect()
    assert [str(w.message) for w in caught] == []


def test_closing_the_sync_client_from_another_thread_ends_its_events(one_node: Cluster) -> None:
    """Before, close() from another thread than the one waiting for an event failed with
    "This event loop is already running" and the subscription went on."""
    client = connect_sync(endpoint(one_node), CLUSTER, one_node.local.certs)
    since = client.kv.set("other-thread/a", "1") - 1
    events = client.events(kinds=["kv"], prefix="other-thread/", since=since * 1024)
    first, ended = threading.Event(), threading.Event()

    def follow() -> None:
        for _ in events:
            first.set()  # then it waits for the next, which never comes
        ended.set()

    following = threading.Thread(target=follow, daemon=True)  # should it never end
    following.start()
    try:
        assert first.wait(10)
        client.close()
        assert ended.wait(10)
    finally:
        following.join(10)
    with pytest.raises(ClientError, match="the client is closed"):
        client.kv.get("k")


UNCLOSED_SCRIPT = textwrap.dedent(
    """
    import sys
    import quicraft

    client = quicraft.connect_sync(sys.argv[1], "t1", certs=sys.argv[2])
    client.kv.set("unclosed", "1")
    print("done")
    """
)


def test_a_sync_client_left_open_is_closed_at_exit(one_node: Cluster) -> None:
    """Before, a script that did not close its client ended with "Task was destroyed but it
    is pending!" twice, even without -X dev; now it gets a ResourceWarning, as for a file."""
    done = run_script(UNCLOSED_SCRIPT, endpoint(one_node), str(one_node.local.certs))
    assert done.stdout == "done\n", done.stderr
    assert "Task was destroyed" not in done.stderr, done.stderr
    assert "unclosed transport" not in done.stderr and "event loop" not in done.stderr
    assert "ResourceWarning: unclosed quicraft SyncClient of 127.0.0.1:" in done.stderr


UNCLOSED_EVENTS_SCRIPT = textwrap.dedent(
    """
    import sys
    import quicraft

    client = quicraft.connect_sync(sys.argv[1], "t1", certs=sys.argv[2])
    client.kv.set("unclosed-events/a", "1")
    events = client.events(kinds=["kv"], prefix="unclosed-events/", since=0)
    print(next(events).data["key"])
    """
)


def test_events_of_a_sync_client_left_open_end_quietly_at_exit(one_node: Cluster) -> None:
    """Before, the events iterator, still held when the script ended, tried to close its
    subscription in the loop that the client's finalizer had closed already: "Exception
    ignored ... RuntimeError: Runner is closed" and "coroutine '_close' was never awaited"."""
    done = run_script(UNCLOSED_EVENTS_SCRIPT, endpoint(one_node), str(one_node.local.certs))
    assert done.stdout == "unclosed-events/a\n", done.stderr
    assert "Exception ignored" not in done.stderr, done.stderr
    assert "never awaited" not in done.stderr, done.stderr
    assert "ResourceWarning: unclosed quicraft SyncClient of 127.0.0.1:" in done.stderr


@pytest.mark.parametrize("kind", ["kv", "mgmt"])
def test_an_async_client_dropped_unclosed_closes_its_connection(
    one_node: Cluster, kind: str
) -> None:
    """Before, its reader task held its channel: each client a long-running program dropped
    unclosed kept a UDP socket, a task and keepalives until the event loop ended (100 of
    them: 100 more file descriptors and tasks)."""
    certs = one_node.local.certs

    async def scenario() -> None:
        tasks_before = len(asyncio.all_tasks())
        if kind == "kv":
            client: Any = connect(endpoint(one_node), CLUSTER, certs)
            await client.kv.get("dropped")
        else:
            client = connect_mgmt(endpoint(one_node), CLUSTER, certs)
            await client.health()
        conn = client._link.channel.conn
        with pytest.warns(ResourceWarning, match="unclosed quicraft (Client|MgmtClient) of"):
            del client
            gc.collect()
        await asyncio.wait_for(conn.wait_closed(), 2.0)
        await asyncio.sleep(0)  # the reader task's cancellation
        assert conn.ended and len(asyncio.all_tasks()) == tasks_before

    asyncio.run(scenario())


def test_a_subscription_outlives_its_client_dropped_unclosed(one_node: Cluster) -> None:
    """`async for e in connect(...).events()` holds no client: dropping it must not end the
    subscription."""
    certs = one_node.local.certs

    async def scenario() -> None:
        events = connect(endpoint(one_node), CLUSTER, certs).events(since=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
            assert (await asyncio.wait_for(anext(events), 5.0)).pos > 0
        await events.aclose()

    asyncio.run(scenario())


def test_a_connect_that_fails_as_its_caller_is_cancelled_is_not_reported_unretrieved() -> None:
    """Found by a soak's leak hunt: a subscription cancelled (an asyncio.timeout around it)
    just as its connect attempt failed left that attempt's error unretrieved, and asyncio
    printed "Task exception was never retrieved" with a traceback on the program's stderr."""
    reported: list[str] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(
            lambda _, context: reported.append(str(context["message"]))
        )
        life = Lifetime()
        failed = False

        async def connect() -> None:
            nonlocal failed
            failed = True
            raise TransportError("127.0.0.1:1 did not answer in 1s")

        caller = asyncio.ensure_future(life.unless_closed(connect()))
        while not failed:  # the attempt has failed; its caller has not resumed yet
            await asyncio.sleep(0)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        del caller
        gc.collect()  # an unretrieved task's error is reported when the task is collected

    asyncio.run(main())
    assert reported == []


def test_a_connection_made_as_its_caller_is_cancelled_is_closed_not_left_open() -> None:
    """A subscription cancelled just after its connect attempt succeeded, before it resumed
    to take the connection, left that connection open (and keeping itself alive) for as long
    as the program ran. The caller is cancelled here after every number of loop turns, so
    one of them falls in that gap: every connection made is either handed back or closed."""
    made: list[object] = []
    handed_back: list[object] = []
    closed: list[object] = []

    async def main() -> None:
        life = Lifetime()

        async def connect() -> object:
            await asyncio.sleep(0)
            made.append(conn := object())
            return conn

        async def subscription() -> object | None:
            return await life.unless_closed(connect(), closed.append)

        for turns in range(8):
            caller = asyncio.ensure_future(subscription())
            for _ in range(turns):
                await asyncio.sleep(0)
            caller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                handed_back.append(await caller)

    asyncio.run(main())
    assert closed, "no turn fell between the connect and its caller's resuming"
    assert sorted(map(id, handed_back + closed)) == sorted(map(id, made))
