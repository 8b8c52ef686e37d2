"""What the QUIC stack costs a Raft-shaped round: the same app over three transports.

    .venv/bin/pip install qh3
    .venv/bin/python benchmarks/quic_stacks.py --rounds 5 --duration 5 --clients 16

Four processes, as in `quicraft bench --local 3`: a client keeps `--clients` writes in flight
to a leader, which sends every batch that arrived in one loop turn to two followers; each
follower appends the batch to a file, syncs it and acknowledges; the leader, which appends and
syncs its own copy in a thread meanwhile, answers a batch's writes once its own copy and one
follower's are on disk. No Raft, no CBOR, no checks: only the round's shape, the sync and the
transport. The transports (STACKS): aioquic as shipped; aioquic tuned as quicraft runs it
(quicraft/transport/_aioquic_private.py); qh3, a fork of aioquic whose connection core is
written in Rust. Each runs the same code through its own asyncio glue (`serve`, `connect`,
`QuicConnectionProtocol`), with 16 KiB datagrams where the stack takes them and the server
authenticated by a throwaway certificate. The stacks take turns going first; each run is
reported with its writes/s as a share of plain aioquic's in the same round, and so are the
medians.

qh3 is not a dependency of quicraft: see docs/performance-log.md, "The transport's share".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import importlib
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from vs_pysyncobj import free_ports

from quicraft.node.local import cpu_seconds_of

HEADER = struct.Struct(">IQ")  # payload length, id (a write's id, or a batch's)
VALUE = b"x" * 100


def frames(buffer: bytearray) -> list[tuple[int, bytes]]:
    """Cut the complete frames off the front of `buffer`."""
    out = []
    while len(buffer) >= HEADER.size:
        length, ident = HEADER.unpack_from(buffer)
        end = HEADER.size + length
        if len(buffer) < end:
            break
        out.append((ident, bytes(buffer[HEADER.size : end])))
        del buffer[:end]
    return out


def frame(ident: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(len(payload), ident) + payload


def stack_api(stack: str) -> tuple[Any, Any, Any, Any]:
    name = stack.removesuffix("-tuned")
    asyncio_api = importlib.import_module(f"{name}.asyncio")
    configuration = importlib.import_module(f"{name}.quic.configuration").QuicConfiguration
    received = importlib.import_module(f"{name}.quic.events").StreamDataReceived
    return asyncio_api, configuration, received, asyncio_api.QuicConnectionProtocol


def make_certificate(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def configuration(stack: str, is_client: bool, certs: tuple[Path, Path] | None = None) -> Any:
    import ssl

    config = stack_api(stack)[1](is_client=is_client, alpn_protocols=["bench"])
    config.max_datagram_size = 16384  # loopback, as quicraft's path.py does
    config.idle_timeout = 60.0
    if is_client:
        config.verify_mode = ssl.CERT_NONE
    else:
        assert certs is not None
        config.load_cert_chain(str(certs[0]), str(certs[1]))
    return config


def protocol_class(stack: str) -> Any:
    """The stack's QuicConnectionProtocol, handing each stream's frames to `on_frames` and
    transmitting once per loop turn after writes. With "aioquic-tuned", aioquic as quicraft
    runs it (quicraft/transport/_aioquic_private.py): ACKs delayed, or due at the second
    packet, riding with data; no transmit where nothing would be sent; one transmit per loop
    turn after datagrams too."""
    received = stack_api(stack)[2]
    base = stack_api(stack)[3]
    tuned = stack == "aioquic-tuned"
    if tuned:
        from quicraft.transport import _aioquic_private as private

    class Protocol(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.buffers: dict[int, bytearray] = {}
            self.on_frames: Any = None
            self.wrote = False
            if tuned:
                private.delay_acks(self._quic)

        def datagram_received(self, data: Any, addr: Any) -> None:
            if not tuned:
                super().datagram_received(data, addr)
                return
            private.receive_acking_every_second(self._quic, data, addr, self._loop.time())
            self._process_events()
            self._transmit_soon()

        def transmit(self) -> None:
            if tuned:  # the same call as quicraft's PeerProtocol.transmit
                private.transmit(self, self.wrote, self._loop.time(), super().transmit)
            else:
                super().transmit()
            self.wrote = False

        def quic_event_received(self, event: Any) -> None:
            if isinstance(event, received) and self.on_frames is not None:
                buffer = self.buffers.setdefault(event.stream_id, bytearray())
                buffer += event.data
                got = frames(buffer)
                if got:
                    self.on_frames(self, event.stream_id, got)

        def write(self, stream_id: int, data: bytes) -> None:
            # The client leaves with writes in flight at the end of a round: qh3 then raises.
            with contextlib.suppress(Exception):
                self._quic.send_stream_data(stream_id, data)
                self.wrote = True
                self._transmit_soon()

    return Protocol


def serving(stack: str, on_frames: Any) -> Any:
    """serve()'s create_protocol: the stack's Protocol, handing its frames to `on_frames`."""
    protocol = protocol_class(stack)

    def create(*args: Any, **kwargs: Any) -> Any:
        made = protocol(*args, **kwargs)
        made.on_frames = on_frames
        return made

    return create


class AppendOnly:
    """A file that each batch is appended to and synced, like a log's write batch."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def append(self, data: bytes) -> None:
        os.write(self._fd, data)
        os.fdatasync(self._fd)


async def follower(stack: str, port: int, data: Path, certs: tuple[Path, Path]) -> None:
    log = AppendOnly(data)

    def on_frames(protocol: Any, stream_id: int, got: list[tuple[int, bytes]]) -> None:
        for batch, payload in got:
            log.append(payload)
            protocol.write(stream_id, frame(batch))

    await stack_api(stack)[0].serve(
        "127.0.0.1",
        port,
        configuration=configuration(stack, False, certs),
        create_protocol=serving(stack, on_frames),
    )
    await asyncio.Event().wait()


async def leader(
    stack: str, port: int, followers: list[int], data: Path, certs: tuple[Path, Path]
) -> None:
    loop = asyncio.get_running_loop()
    api = stack_api(stack)[0]
    links = []
    async with contextlib.AsyncExitStack() as stack_of:
        for follower_port in followers:
            link = await stack_of.enter_async_context(
                api.connect(
                    "127.0.0.1",
                    follower_port,
                    configuration=configuration(stack, True),
                    create_protocol=protocol_class(stack),
                )
            )
            links.append((link, link._quic.get_next_available_stream_id()))
        log = AppendOnly(data)
        pending: list[tuple[Any, int, int, bytes]] = []  # client protocol, stream, id, value
        batches: dict[int, list[tuple[Any, int, int, bytes]]] = {}
        durable: dict[int, int] = {}  # batch -> copies on disk (the leader's and followers')
        next_batch = [0]
        writes: list[tuple[int, bytes]] = []
        wake = threading.Event()

        def writer() -> None:  # the leader's own appends, in a thread, as quicraft's
            while True:
                wake.wait()
                wake.clear()
                while writes:
                    batch, payload = writes.pop(0)
                    log.append(payload)
                    loop.call_soon_threadsafe(on_durable, batch)

        threading.Thread(target=writer, daemon=True).start()

        def on_durable(batch: int) -> None:
            if batch not in batches:
                return  # answered already: this is the third copy
            durable[batch] = durable.get(batch, 0) + 1
            if durable[batch] == 2:  # a majority of three
                for protocol, stream_id, ident, _ in batches.pop(batch):
                    protocol.write(stream_id, frame(ident))
                del durable[batch]

        def flush() -> None:
            batch = next_batch[0]
            next_batch[0] += 1
            batches[batch] = list(pending)
            pending.clear()
            payload = b"".join(value for _, _, _, value in batches[batch])
            for link, stream_id in links:
                link.write(stream_id, frame(batch, payload))
            writes.append((batch, payload))
            wake.set()

        def on_request(protocol: Any, stream_id: int, got: list[tuple[int, bytes]]) -> None:
            if not pending:
                loop.call_soon(flush)
            pending.extend((protocol, stream_id, ident, value) for ident, value in got)

        def on_ack(_: Any, __: int, got: list[tuple[int, bytes]]) -> None:
            for batch, _payload in got:
                on_durable(batch)

        for link, _ in links:
            link.on_frames = on_ack

        await api.serve(
            "127.0.0.1",
            port,
            configuration=configuration(stack, False, certs),
            create_protocol=serving(stack, on_request),
        )
        print("ready", flush=True)  # connected to both followers, serving the client
        await asyncio.Event().wait()


async def client(stack: str, port: int, in_flight: int, duration: float) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    sent: dict[int, float] = {}
    next_id = [0]
    measuring = [False]
    async with stack_api(stack)[0].connect(
        "127.0.0.1",
        port,
        configuration=configuration(stack, True),
        create_protocol=protocol_class(stack),
    ) as link:
        stream_id = link._quic.get_next_available_stream_id()

        def send() -> None:
            ident = next_id[0]
            next_id[0] += 1
            sent[ident] = loop.time()
            link.write(stream_id, frame(ident, VALUE))

        def on_answers(_: Any, __: int, got: list[tuple[int, bytes]]) -> None:
            now = loop.time()
            for ident, _payload in got:
                started = sent.pop(ident)
                if measuring[0]:
                    latencies.append(now - started)
                send()

        link.on_frames = on_answers
        for _ in range(in_flight):
            send()
        await asyncio.sleep(1.0)  # warm up
        measuring[0] = True
        cpu, datagrams = cpu_seconds(), udp_datagrams_sent()
        started = time.monotonic()
        await asyncio.sleep(duration)
        measuring[0] = False
        seconds = time.monotonic() - started
        cpu, datagrams = cpu_seconds() - cpu, udp_datagrams_sent() - datagrams
    ordered = sorted(latencies)
    return {
        "writes_per_s": len(ordered) / seconds,
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[int(len(ordered) * 0.99)] * 1000,
        "cpu_us_per_write": cpu / max(1, len(ordered)) * 1e6,
        "datagrams_per_write": datagrams / max(1, len(ordered)),
    }


def udp_datagrams_sent() -> int:
    """UDP datagrams this machine has sent (all of them: run nothing else meanwhile)."""
    lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()]
    names, values = (line for line in lines if line[0] == "Udp:")
    return int(values[names.index("OutDatagrams")])


def cpu_seconds() -> float:
    """CPU time of this process and of every benchmark process it started."""
    children = cpu_seconds_of({str(pid): pid for pid in CHILDREN})
    return sum(os.times()[:2]) + sum(children.values())


CHILDREN: list[int] = []


def one_round(stack: str, args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    leader_port, *follower_ports = free_ports(3)
    me = [sys.executable, __file__, "--stack", stack, "--workdir", str(workdir)]
    processes: list[subprocess.Popen[str]] = [
        subprocess.Popen([*me, "--role", "follower", "--port", str(port)], text=True)
        for port in follower_ports
    ]
    followers = ",".join(map(str, follower_ports))
    leader_argv = [*me, "--role", "leader", "--port", str(leader_port), "--followers", followers]
    leader = subprocess.Popen(leader_argv, stdout=subprocess.PIPE, text=True)
    processes.append(leader)
    CHILDREN[:] = [p.pid for p in processes]
    try:
        assert leader.stdout is not None
        if leader.stdout.readline().strip() != "ready":
            raise SystemExit(f"the {stack} leader did not start")
        return asyncio.run(client(stack, leader_port, args.clients, args.duration))
    finally:
        for process in processes:
            process.kill()
            process.wait()
        CHILDREN.clear()


STACKS = ["aioquic", "aioquic-tuned", "qh3"]


def _line(stack: str, run: dict[str, float], base: dict[str, float]) -> str:
    return (
        f"{stack:13s} {run['writes_per_s']:7,.0f} writes/s, p99 {run['p99_ms']:5.1f} ms, "
        f"{run['cpu_us_per_write']:4.0f} us CPU and {run['datagrams_per_write']:.2f} datagrams "
        f"a write; {run['writes_per_s'] / base['writes_per_s']:.2f} of {STACKS[0]}'s writes/s"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=16, help="writes kept in flight")
    parser.add_argument("--role", choices=["leader", "follower"], help=argparse.SUPPRESS)
    parser.add_argument("--stack", choices=STACKS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--followers", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role is not None:
        certs = (args.workdir / "cert.pem", args.workdir / "key.pem")
        data = args.workdir / f"log-{args.port}"
        if args.role == "follower":
            asyncio.run(follower(args.stack, args.port, data, certs))
        else:
            followers = [int(port) for port in args.followers.split(",")]
            asyncio.run(leader(args.stack, args.port, followers, data, certs))
        return 0
    try:
        importlib.import_module("qh3")
    except ImportError:
        print("qh3 is not installed: .venv/bin/pip install qh3", file=sys.stderr)
        return 2
    results: dict[str, list[dict[str, float]]] = {stack: [] for stack in STACKS}
    with tempfile.TemporaryDirectory() as directory:
        workdir = Path(directory)
        make_certificate(workdir)
        for number in range(args.rounds):
            # Each stack goes first, second and third in turn: the machine drifts.
            order = STACKS[number % 3 :] + STACKS[: number % 3]
            for stack in order:
                results[stack].append(one_round(stack, args, workdir))
            print(f"round {number + 1}:", flush=True)
            for stack in STACKS:
                print("   ", _line(stack, results[stack][-1], results[STACKS[0]][-1]), flush=True)
    print(f"medians of {args.rounds} rounds, {args.clients} writes in flight:")
    medians = {
        stack: {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        for stack, runs in results.items()
    }
    for stack in STACKS:
        ratios = [
            run["writes_per_s"] / base["writes_per_s"]
            for run, base in zip(results[stack], results[STACKS[0]], strict=True)
        ]
        print(
            "   ",
            _line(stack, medians[stack], medians[STACKS[0]]),
            f"(rounds' own ratios, median {statistics.median(ratios):.2f})",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
