"""`quicraft kv` and `quicraft kv shell` as a user meets them: what goes to stdout and stderr,
exit statuses, `cas --absent`, values from stdin, binary values, and the shell's help, errors,
Ctrl-C and history (most found by a newcomer audit on 2026-12-04)."""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import pytest
from cluster_harness import Cluster

from quicraft.cli.command import build_parser
from quicraft.cli.kv import Misuse, _change, prepare, shown
from quicraft.transport import init_cluster
from quicraft.wire import MAX_VALUE, Event

# --- without a cluster ------------------------------------------------------------------------


def _parsed(*argv: str, stdin: bytes | None = None) -> argparse.Namespace:
    args = build_parser().parse_args(["kv", *argv, "--cluster", "c1"])
    prepare(args, None if stdin is None else io.BytesIO(stdin))
    return args


def test_cas_absent_takes_no_expected_or_an_empty_one() -> None:
    both = _parsed("cas", "k", "old", "new")
    assert (both.expected, both.new) == (b"old", b"new")
    absent = _parsed("cas", "k", "new", "--absent")
    assert (absent.expected, absent.new) == (None, b"new")
    as_before = _parsed("cas", "k", "", "new", "--absent")
    assert (as_before.expected, as_before.new) == (None, b"new")
    # Before, a non-empty EXPECTED with --absent was ignored, and the cas swapped.
    with pytest.raises(Misuse, match="--absent swaps only if KEY is unset, so it takes no"):
        _parsed("cas", "k", "notempty", "new", "--absent")
    with pytest.raises(Misuse, match="give KEY EXPECTED NEW, or KEY NEW --absent"):
        _parsed("cas", "k", "new")


def test_set_dash_reads_the_value_from_stdin_up_to_the_limit() -> None:
    assert _parsed("set", "k", "v").value == b"v"
    value = os.urandom(MAX_VALUE)  # far over what argv can carry (128 KiB an argument)
    assert _parsed("set", "k", "-", stdin=value).value == value
    with pytest.raises(Misuse, match=f"over {MAX_VALUE} bytes"):
        _parsed("set", "k", "-", stdin=value + b"!")
    with pytest.raises(Misuse, match=r"'-' .* works in 'quicraft kv set', not here"):
        _parsed("set", "k", "-")  # the shell: its stdin is its own script


def test_a_value_that_is_not_utf8_is_shown_with_the_base64_marker() -> None:
    assert shown(b"//4A") == "//4A"  # text that looks like base64 stays text ...
    assert shown(b"\xff\xfe\x00") == "base64://4A"  # ... and bytes are marked as such
    change = {"op": "set", "key": "b", "revision": 7, "value": b"\xff\xfe\x00", "previous": None}
    assert _change(False, Event(pos=1, kind="kv", at_ms=0, data=change)) == "7 set b = base64://4A"


class Done(NamedTuple):
    code: int
    out: str
    err: str


def quicraft(*argv: str, stdin: bytes | str = b"", env: dict[str, str] | None = None) -> Done:
    done = subprocess.run(
        [sys.executable, "-m", "quicraft.cli", *argv],
        input=stdin.encode() if isinstance(stdin, str) else stdin,
        capture_output=True,
        timeout=60,
        env=env,
    )
    return Done(done.returncode, done.stdout.decode(), done.stderr.decode())


@pytest.fixture
def nowhere(tmp_path: Path) -> list[str]:
    """Connection flags for a cluster with keys but no node: for what fails before sending
    (loopback only; a command that does send waits for its --timeout)."""
    init_cluster(tmp_path / "certs", "t1")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free, and nothing listens there once closed
    return [
        "--cluster",
        "t1",
        "--endpoints",
        f"127.0.0.1:{port}",
        "--certs",
        str(tmp_path / "certs"),
    ]


def test_misuse_is_refused_before_connecting(nowhere: list[str]) -> None:
    wrong = quicraft("kv", "cas", "x1", "notempty", "v", "--absent", *nowhere)
    assert (wrong.code, wrong.out) == (2, ""), wrong
    assert wrong.err == (
        "quicraft: error: cas: --absent swaps only if KEY is unset, so it takes no EXPECTED "
        "(got 'notempty'): give KEY NEW --absent\n"
    )
    too_big = quicraft("kv", "set", "k", "-", *nowhere, stdin=b"x" * (MAX_VALUE + 1))
    assert (too_big.code, too_big.out) == (2, ""), too_big
    assert too_big.err == (
        "quicraft: error: set: the value on stdin is over 1048576 bytes (1 MiB), the most a "
        "node stores\n"
    )


def test_kv_help_names_real_roles_and_what_del_does() -> None:
    get = " ".join(quicraft("kv", "get", "--help").out.split())  # unwrapped
    assert "role client or admin (reader: get and keys only)" in get and "writer" not in get
    kv = " ".join(quicraft("kv", "--help").out.split())
    assert "0 success (del of an unset key too), 1 an operational error (or: get of an " in kv
    cas = quicraft("kv", "cas", "--help").out
    assert (
        "usage: quicraft kv cas [-h] key expected new\n       quicraft kv cas [-h] key new" in cas
    )


def test_shell_script_help_errors_and_exit_status(nowhere: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path / "home")}
    (tmp_path / "home").mkdir()
    script = "help\nincr n x\nset\nincr --json n\nset -h\nhelp cas\nbogus\nset k -\nquit\nget k\n"
    shell = quicraft("kv", "shell", *nowhere, stdin=script, env=env)
    assert shell.code == 1, shell  # some commands failed, and stdin is not a terminal
    assert shell.err == (
        "error: incr: argument by: invalid int value: 'x'\n"
        "error: set: the following arguments are required: key, value\n"
        "error: incr: unrecognized arguments: --json\n"
        "error: unknown command 'bogus'; 'help' lists them\n"
        "error: set: '-' (the value from stdin) works in 'quicraft kv set', not here\n"
    )  # one line each, and nothing after quit (the get would fail: no node)
    assert "kv>" not in shell.out and "quicraft kv shell:" not in shell.out  # a script: no prompt
    listing = shell.out.split("usage: set")[0]
    for op in ("get", "set", "del", "incr", "keys", "cas", "exit"):
        assert f"\n  {op:<5} " in listing, listing  # one line each
    assert "'quit'" in listing
    assert "usage: set [-h] key value\n" in shell.out
    # The shell's stdin is its script, so its help offers no '-' (the docs audit's item 11).
    set_line = next(line for line in listing.splitlines() if line.startswith("  set "))
    assert set_line == "  set   set KEY to VALUE, as typed; prints the revision"
    set_help = " ".join(shell.out.split("usage: set")[1].split("usage: cas")[0].split())
    assert "or '-' to read it from stdin" not in set_help
    assert "A value from stdin ('-') is for 'quicraft kv set'" in set_help
    outside = " ".join(quicraft("kv", "set", "--help").out.split())
    assert "the value, or '-' to read it from stdin" in outside
    assert "usage: cas [-h] key expected new\n       cas [-h] key new --absent\n" in shell.out
    assert not (tmp_path / "home" / ".quicraft_history").exists()  # only at a terminal

    fine = quicraft("kv", "shell", *nowhere, stdin="help\nhelp get\n", env=env)
    assert (fine.code, fine.err) == (0, ""), fine  # at the end of its input, too


def test_stdin_closed_is_misuse_only_where_it_is_read(nowhere: list[str]) -> None:
    """`quicraft kv ... <&-`: every operation ended in a traceback, `get` as much as `set -`
    (found by a sweep of the command line)."""

    def closed_stdin(*argv: str) -> Done:
        done = subprocess.run(
            [sys.executable, "-m", "quicraft.cli", "kv", *argv, *nowhere, "--timeout", "0.5"],
            capture_output=True,
            timeout=60,
            preexec_fn=lambda: os.close(0),
        )
        return Done(done.returncode, done.stdout.decode(), done.stderr.decode())

    said = "quicraft: error: set: '-' reads the value from stdin, which is closed\n"
    assert closed_stdin("set", "k", "-") == (2, "", said)
    said = "quicraft: error: shell: reads its commands from stdin, which is closed\n"
    assert closed_stdin("shell") == (2, "", said)
    get = closed_stdin("get", "k")  # runs: no node there, so it gives up after its timeout
    assert get.code == 1 and get.err.startswith("quicraft: error: gave up after 0.5s"), get


#: What a key or prefix that is not UTF-8 text is told.
NOT_UTF8 = (
    "not UTF-8 text (it holds the byte 0x{byte}): keys and prefixes are UTF-8; values may be "
    "any bytes"
)


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["kv", "get", b"k\xff"], "quicraft kv get: error: argument key"),
        (["kv", "set", b"\xe9t\xe9", "v"], "quicraft kv set: error: argument key"),
        (["kv", "keys", b"\xfe"], "quicraft kv keys: error: argument prefix"),
        (["kv", "watch", b"\xfe"], "quicraft kv watch: error: argument prefix"),
        (["events", "--prefix", b"\xfe"], "quicraft events: error: argument --prefix"),
    ],
)
def test_a_key_or_prefix_not_utf8_is_misuse_naming_its_byte(
    argv: list[str | bytes], said: str, nowhere: list[str]
) -> None:
    """They were refused in words about "surrogates", which the user never typed (found by
    a sweep of the command line)."""
    raw = next(a for a in argv if isinstance(a, bytes))
    byte = next(b for b in raw if b >= 0x80)
    done = quicraft(*[os.fsdecode(a) for a in argv], *nowhere)  # as a shell passes the bytes
    assert (done.code, done.out) == (2, ""), done
    assert done.err.splitlines()[-1] == f"{said}: {NOT_UTF8.format(byte=f'{byte:02x}')}"


def test_shell_script_with_a_line_not_utf8_refuses_that_line_only(nowhere: list[str]) -> None:
    """Under a strict locale (en_US.UTF-8, as PYTHONIOENCODING makes it here) a script line
    that is not UTF-8 ended the shell with a traceback (found by a sweep of the command line)."""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict"}
    shell = quicraft("kv", "shell", *nowhere, stdin=b"get k\xff\nhelp get\n", env=env)
    assert shell.code == 1, shell
    assert shell.err == f"error: get: argument key: {NOT_UTF8.format(byte='ff')}\n", shell
    assert "usage: get" in shell.out  # the next line ran


def test_shell_script_stops_on_ctrl_c_with_130(nowhere: list[str]) -> None:
    shell = subprocess.Popen(
        [sys.executable, "-m", "quicraft.cli", "kv", "shell", *nowhere],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert shell.stdin is not None and shell.stdout is not None
        shell.stdin.write(b"help\n")
        shell.stdin.flush()
        assert shell.stdout.readline().startswith(b"commands")  # it waits for the next line
        shell.send_signal(signal.SIGINT)
        _, err = shell.communicate(timeout=30)
        assert shell.returncode == 130, err
        assert err == b"quicraft: interrupted\n"
    finally:
        if shell.poll() is None:
            shell.kill()
            shell.wait()


class Terminal:
    """`quicraft kv shell` with a pseudo-terminal as stdin, stdout and stderr."""

    def __init__(self, argv: list[str], home: Path):
        self.master, slave = os.openpty()
        env = {**os.environ, "HOME": str(home), "TERM": "dumb"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "quicraft.cli", "kv", "shell", *argv],
            stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True,
        )  # fmt: skip
        os.close(slave)
        self.seen = b""

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def until(self, text: str, timeout: float = 30) -> str:
        """What the shell printed up to `text`."""
        deadline = time.monotonic() + timeout
        want = text.replace("\n", "\r\n").encode()  # as a terminal shows it
        while want not in self.seen:
            ready, _, _ = select.select([self.master], [], [], max(0, deadline - time.monotonic()))
            assert ready, f"no {text!r} in {self.seen!r}"
            self.seen += os.read(self.master, 4096)
        end = self.seen.index(want) + len(want)
        shown, self.seen = self.seen[:end], self.seen[end:]
        return shown.decode().replace("\r\n", "\n")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        os.close(self.master)


def test_shell_at_a_terminal_survives_ctrl_c_and_keeps_history(
    nowhere: list[str], tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    terminal = Terminal([*nowhere, "--timeout", "60"], home)
    try:
        assert "'help' lists them" in terminal.until("kv> ")
        terminal.type("help get\n")
        assert "usage: get [-h] [--stale] key" in terminal.until("kv> ")
        terminal.type("half a li")  # Ctrl-C drops the line being typed
        time.sleep(0.3)
        terminal.process.send_signal(signal.SIGINT)
        terminal.until("kv> ")
        terminal.type("get k\n")  # no node: retries until its timeout, or Ctrl-C
        terminal.until("get k\n")
        time.sleep(0.5)
        terminal.process.send_signal(signal.SIGINT)
        assert "error: interrupted; a write may have been applied or not\n" in terminal.until(
            "kv> "
        )
        terminal.type("bogus\n")
        assert "error: unknown command 'bogus'" in terminal.until("kv> ")
        terminal.type("quit\n")
        assert terminal.process.wait(timeout=30) == 0  # at a terminal, failures do not count
    finally:
        terminal.close()
    history = (home / ".quicraft_history").read_text().splitlines()
    assert history == ["help get", "get k", "bogus", "quit"]


# --- with a cluster ---------------------------------------------------------------------------


def test_kv_prints_results_on_stdout_and_messages_on_stderr(cluster: Cluster) -> None:
    def kv(*argv: str, stdin: bytes = b"") -> Done:
        flags = ["--cluster", "t1", "--endpoints", cluster.local.endpoints()]
        return quicraft("kv", *argv, *flags, "--certs", str(cluster.local.certs), stdin=stdin)

    missing = kv("get", "nokey")  # before, the message was the value on stdout
    assert (missing.code, missing.out, missing.err) == (
        1, "", "quicraft: error: key 'nokey' not found\n"
    )  # fmt: skip
    as_json = kv("get", "nokey", "--json")
    assert (as_json.code, json.loads(as_json.out), as_json.err) == (
        1, {"key": "nokey", "found": False}, ""
    )  # fmt: skip
    gone = kv("del", "nokey")  # deleting what is not there is no failure
    assert (gone.code, gone.out, gone.err) == (
        0, "", "quicraft: key 'nokey' not found; nothing deleted\n"
    )  # fmt: skip
    assert kv("set", "d", "1").code == 0
    assert (kv("del", "d").out, kv("get", "d").code) == ("deleted\n", 1)

    refused = kv("cas", "lock", "notempty", "me", "--absent")  # before: it swapped
    assert refused.code == 2 and kv("get", "lock").code == 1, refused
    taken = kv("cas", "lock", "me", "--absent")
    assert (taken.code, taken.out, taken.err) == (0, "swapped\n", "")
    again = kv("cas", "lock", "you", "--absent")
    assert (again.code, again.out, again.err) == (
        1, "", "quicraft: error: not swapped: 'lock' is set\n"
    )  # fmt: skip
    stale = kv("cas", "lock", "you", "them")
    assert (stale.code, stale.out) == (1, "")
    assert stale.err == "quicraft: error: not swapped: 'lock' does not hold the expected value\n"
    assert kv("cas", "lock2", "", "me", "--absent").out == "swapped\n"  # the old form works
    assert kv("get", "lock").out == "me\n"

    assert kv("set", "bin", "-", stdin=b"\xff\xfe\x00").code == 0
    assert kv("get", "bin").out == "base64://4A\n"  # before: "//4A", as the text "//4A" is
    assert json.loads(kv("get", "bin", "--json").out)["value_base64"] == "//4A"
    big = os.urandom(600 * 1024)  # over what one argument can carry
    put = kv("set", "big", "-", stdin=big)
    assert put.code == 0 and put.out.startswith("OK (revision "), put
    got = json.loads(kv("get", "big", "--json").out)
    assert base64.b64decode(got["value_base64"]) == big
