"""`quicraft local`: what a newcomer's audit found in its workflow, each as it should be now."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cluster_harness import free_base_port, processes_naming, quicraft, quicraft_into_closed_pipe

from quicraft import connect_sync
from quicraft.cli import main
from quicraft.node import local
from quicraft.node.local import LocalCluster, LocalNode
from quicraft.transport import init_cluster


def _pids(folder: Path) -> list[int]:
    return [n["pid"] for n in json.loads((folder / "cluster.json").read_text())["nodes"]]


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_start_fails_with_the_node_s_error_when_its_port_is_taken(tmp_path: Path) -> None:
    """It said "started" with exit 0 while its node had died of the taken port."""
    base = free_base_port(3)
    folder = tmp_path / "dev"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", base + 2))  # n2's port, as another cluster would hold it
        started = quicraft("local", "start", "3", "--dir", str(folder), "--base-port", str(base))
    assert started.returncode == 1
    assert started.stdout == ""
    assert started.stderr == (
        f"quicraft: error: n2 exited: cannot listen on 127.0.0.1:{base + 2}: Address already "
        "in use; is another cluster on these ports? try another --base-port\n"
    )
    # n1 and n3 had started: they were stopped, and nothing of the cluster is left.
    assert _port_is_free(base + 1) and _port_is_free(base + 3)
    assert not folder.exists()


def test_ctrl_c_while_a_new_cluster_starts_leaves_nothing(tmp_path: Path) -> None:
    """It stopped the nodes but left their keys, data and cluster.json: a stopped cluster
    that the next 'start' with other options refused (found by an audit)."""
    base = free_base_port(3)
    folder = tmp_path / "dev"
    starting = subprocess.Popen(
        [sys.executable, "-m", "quicraft.cli", "local", "start", "3", "--dir", str(folder),
         "--base-port", str(base)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        while not (folder.is_dir() and (folder / "n3").is_dir()):  # every node started
            assert starting.poll() is None, starting.communicate()
            time.sleep(0.01)
        starting.send_signal(signal.SIGINT)
        _, err = starting.communicate(timeout=30)
    finally:
        starting.kill()
        starting.wait()
    assert starting.returncode == 130, err
    assert err == "quicraft: interrupted\n"
    assert not folder.exists()
    # No node of it runs: one whose start was under way when Ctrl-C came was left running.
    assert processes_naming(folder) == []
    assert all(_port_is_free(base + i) for i in (1, 2, 3))


def test_a_stopped_cluster_starts_again_on_its_data(tmp_path: Path) -> None:
    folder = tmp_path / "dev"
    d = ["--dir", str(folder)]  # after the action: it was only accepted before it
    base = str(free_base_port(1))
    started = quicraft("local", "start", "1", *d, "--base-port", base, "--preset", "test")
    try:
        assert started.returncode == 0, started.stderr
        assert started.stdout.startswith(f"started 1 node of cluster 'local' in {folder}\n")
        # start returns once the node listens
        assert " listening on 127.0.0.1:" in (folder / "n1" / "node.log").read_text()
        cluster = LocalCluster.load(folder)
        with connect_sync(cluster.endpoints(), "local", cluster.certs, timeout=20) as c:
            c.kv.set("kept", "yes")
        assert quicraft("local", "stop", *d).returncode == 0

        other = quicraft("local", "start", "2", *d)
        assert other.returncode == 1
        assert other.stderr == (
            f"quicraft: error: {folder} holds cluster 'local' of 1 node (base port {base}, "
            f"preset test): 'quicraft local --dir {folder} start 1' starts it; 'quicraft local "
            f"--dir {folder} stop --clean' deletes it; or pass another --dir\n"
        )
        again = quicraft("local", "start", "1", *d)
        assert again.returncode == 0, again.stderr
        assert again.stdout.startswith(f"started n1 of cluster 'local' in {folder} again\n")
        with connect_sync(cluster.endpoints(), "local", cluster.certs, timeout=20) as c:
            assert c.kv.get("kept") == b"yes"
        # Already running: the advice to start it (item 12 of the docs audit) does not apply.
        held = f"{folder} holds cluster 'local' of 1 node (base port {base}, preset test)"
        running = (
            f"{held}, which is already running: 'quicraft local --dir {folder} status' shows it"
        )
        twice = quicraft("local", "start", "1", *d)
        assert (twice.returncode, twice.stdout) == (1, "")
        assert twice.stderr == f"quicraft: error: {running}\n"
        other_running = quicraft("local", "start", "2", *d)
        assert (other_running.returncode, other_running.stdout) == (1, "")
        assert other_running.stderr == (
            f"quicraft: error: {running}; 'quicraft local --dir {folder} stop --clean' deletes "
            "it; or pass another --dir\n"
        )
    finally:
        pids = _pids(folder)
        stopped = quicraft("local", *d, "stop", "--clean")
    assert stopped.returncode == 0, stopped.stderr
    assert not folder.exists()
    assert all(_gone(pid) for pid in pids if pid)


def test_restart_stops_a_running_node_gracefully(tmp_path: Path) -> None:
    """SIGTERM first (a leader hands over), not SIGKILL: the node logs that it stopped."""
    folder = tmp_path / "dev"
    d = ["--dir", str(folder)]
    started = quicraft("local", *d, "start", "1", "--base-port", str(free_base_port(1)))
    try:
        assert started.returncode == 0, started.stderr
        before = _pids(folder)
        restarted = quicraft("local", *d, "restart", "1")
        assert restarted.returncode == 0, restarted.stderr
        assert _pids(folder) != before
        listening = f" listening on {LocalCluster.load(folder).nodes[0].address}; quicraft "
        runs = (folder / "n1" / "node.log").read_text().split(listening)
        assert len(runs) == 3  # before the first run, the first, the second
        assert " stopped\n" in runs[1]  # the first ended gracefully, not killed
    finally:
        assert quicraft("local", *d, "stop", "--clean").returncode == 0


def test_restart_and_start_fail_for_a_node_its_peers_refuse_after_it_listens(
    tmp_path: Path,
) -> None:
    """The docs audit's item 6: a node whose data was emptied listens, then its peer refuses
    it and it exits; restart said "started n2 again" with exit 0, and the reason was only in
    its log."""
    folder = tmp_path / "dev"
    d = ["--dir", str(folder)]
    started = quicraft("local", *d, "start", "2", "--base-port", str(free_base_port(2)))
    try:
        assert started.returncode == 0, started.stderr
        cluster = LocalCluster.load(folder)
        # With two voters a write commits only once both have it, so n1 remembers n2 as a
        # member (n2 led, or it acknowledged an entry).
        with connect_sync(cluster.endpoints(), "local", cluster.certs, timeout=20) as c:
            c.kv.set("k", "v")
        n2 = cluster.nodes[1]
        cluster.kill(n2)
        cluster.wait_stopped(n2)
        for action in (["restart", "2"], ["start", "2"]):
            shutil.rmtree(cluster.data_dir(n2))
            failed = quicraft("local", *d, *action)
            assert failed.returncode == 1, (action, failed.stdout)
            assert failed.stdout == "", action
            assert failed.stderr.startswith("quicraft: error: n2 exited: n1 ("), failed.stderr
            assert ") remembers this node as a member of the cluster" in failed.stderr
            assert "then start it with --no-bootstrap" in failed.stderr
            status = quicraft("local", *d, "status").stdout
            assert f"n2  {n2.address:<16} stopped\n" in status, status
    finally:
        assert quicraft("local", *d, "stop", "--clean").returncode == 0


def test_node_numbers_and_line_counts_out_of_range_are_misuse(tmp_path: Path) -> None:
    folder = tmp_path / "dev"
    LocalCluster.create(folder, 3, "local", "test", free_base_port(3))  # not started
    for argv in (
        ["kill", "0"],
        ["kill", "-1"],
        ["restart", "4"],
        ["kill", "7"],
        ["logs", "0"],
        ["logs", "--lines", "0"],
        ["logs", "--lines", "-5"],
    ):
        refused = quicraft("local", "--dir", str(folder), *argv)
        assert refused.returncode == 2, (argv, refused.stderr)
        assert refused.stdout == "" and "Traceback" not in refused.stderr
    seven = quicraft("local", "--dir", str(folder), "kill", "7")
    assert seven.stderr == "quicraft local: there is no node 7; nodes are 1 to 3\n"
    zero = quicraft("local", "--dir", str(folder), "logs", "0")
    assert "argument I: must be from 1 to 9, not 0" in zero.stderr


def test_status_fails_when_no_leader_serves(tmp_path: Path) -> None:
    folder = tmp_path / "dev"
    LocalCluster.create(folder, 1, "local", "test", free_base_port(1))  # not started
    status = quicraft("local", "status", "--dir", str(folder))
    assert status.returncode == 1
    assert status.stdout.endswith("stopped\nleader serving: no\n")


def test_hints_keep_the_folder_given(tmp_path: Path) -> None:
    folder = tmp_path / "a b"
    missing = quicraft("local", "status", "--dir", str(folder))
    assert missing.returncode == 1
    assert missing.stderr == (
        f"quicraft: error: no local cluster in {folder}: start one with "
        f"'quicraft local --dir '{folder}' start 3'\n"
    )
    default = quicraft("local", "status", cwd=tmp_path)
    assert default.stderr.endswith("start one with 'quicraft local start 3'\n")


def test_a_folder_that_cannot_be_made_is_refused_and_nothing_is_left(tmp_path: Path) -> None:
    a_file = tmp_path / "afile"
    a_file.write_text("")
    for action in (["start", "1"], ["status"]):
        refused = quicraft("local", "--dir", str(a_file), *action)
        assert refused.returncode == 1
        assert refused.stderr == f"quicraft: error: {a_file} is a file, not a folder\n"
    folder = tmp_path / "new"
    bad = quicraft("local", "--dir", str(folder), "start", "1", "--cluster", "bad/name")
    assert bad.returncode == 2 and "bad cluster name 'bad/name'" in bad.stderr
    assert not folder.exists()


def test_clean_deletes_only_what_the_cluster_made(tmp_path: Path) -> None:
    folder = tmp_path / "dev"
    cluster = LocalCluster.create(folder, 2, "local", "test", free_base_port(2))
    (folder / "notes.txt").write_text("mine")
    (cluster.certs / "other").mkdir()  # another cluster's keys
    cleaned = quicraft("local", "--dir", str(folder), "stop", "--clean")
    assert cleaned.returncode == 0, cleaned.stderr
    assert sorted(p.name for p in folder.rglob("*")) == ["certs", "notes.txt", "other"]


def _gone(pid: int) -> bool:
    """Exited: no such process, or a zombie waiting for init to reap it."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return "State:\tZ" in Path(f"/proc/{pid}/status").read_text()


@pytest.mark.parametrize("where", ["before", "after"])
def test_dir_goes_before_or_after_the_action(where: str, tmp_path: Path) -> None:
    d = ["--dir", str(tmp_path / "x")]
    argv = [*d, "status"] if where == "before" else ["status", *d]
    done = quicraft("local", *argv)
    assert done.returncode == 1
    assert done.stderr.startswith(f"quicraft: error: no local cluster in {tmp_path / 'x'}:")


# -- processes and files the cluster did not make ------------------------------------------------


@contextmanager
def _process(*argv: str, cwd: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """A process of the test's own, stopped by its pid at the end."""
    process = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def _start_time(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19])


def _name_in_cluster_json(folder: Path, pid: int, start_time: int | None) -> None:
    raw = json.loads((folder / "cluster.json").read_text())
    raw["nodes"][0]["pid"] = pid
    if start_time is None:  # as written before start times were recorded
        raw["nodes"][0].pop("start_time", None)
        raw.pop("made_folder", None)
    else:
        raw["nodes"][0]["start_time"] = start_time
    (folder / "cluster.json").write_text(json.dumps(raw))


def _sleeper(*args: str) -> list[str]:
    return [sys.executable, "-c", "import time; time.sleep(120)", *args]


@pytest.mark.parametrize("decoy", ["a tail of its log", "another folder's node", "a later node"])
def test_a_pid_that_is_not_this_folder_s_node_is_stopped_and_never_signalled(
    decoy: str, tmp_path: Path
) -> None:
    """The audit's finding 2: any process with "quicraft" in its command line (or none that
    could be read) was taken for the node, and stop SIGTERMed and SIGKILLed it."""
    folder = tmp_path / ".quicraft-local"
    cluster = LocalCluster.create(folder, 1, "local", "test", free_base_port(1))
    (folder / "n1").mkdir()
    (folder / "n1" / "node.log").write_text("")
    data = str((folder / "n1" / "data").resolve())
    argv = {
        # its pid reused by a `tail -f` of the node's log
        "a tail of its log": ["tail", "-f", ".quicraft-local/n1/node.log"],
        # a copied folder: the original's node, same start time, but not this folder's
        "another folder's node": _sleeper(
            "quicraft.cli", "node", "--data", f"{tmp_path}/x/n1/data"
        ),
        # this folder's data directory, but not the process that was started then
        "a later node": _sleeper("quicraft.cli", "node", "--data", data),
    }[decoy]
    with _process(*argv, cwd=tmp_path) as process:
        start_time = _start_time(process.pid)
        if decoy == "a later node":
            start_time -= 1
        _name_in_cluster_json(folder, process.pid, start_time)
        d = ["--dir", str(folder)]
        status = quicraft("local", *d, "status")
        assert status.stdout.startswith(f"n1  {cluster.nodes[0].address:<16} stopped\n")
        kill = quicraft("local", *d, "kill", "1")
        assert kill.returncode == 1 and kill.stderr.startswith("quicraft: error: n1 is not running")
        stop = quicraft("local", *d, "stop")
        assert stop.returncode == 0, stop.stderr
        assert process.poll() is None  # never signalled
        assert _pids(folder) == [0]  # what it names is forgotten


def test_a_cluster_json_without_start_times_trusts_the_command_line_alone(
    tmp_path: Path,
) -> None:
    """The format before start times were recorded: a pid counts as the node if its command
    line names the node's data directory in this folder, whenever it started."""
    folder = tmp_path / "dev"
    LocalCluster.create(folder, 1, "local", "test", free_base_port(1))
    data = str((folder / "n1" / "data").resolve())
    with (
        _process(*_sleeper("quicraft.cli", "node", "--data", data)) as node,
        _process(*_sleeper("quicraft.cli", "node", "--data", f"{tmp_path}/x/n1/data")) as other,
    ):
        _name_in_cluster_json(folder, node.pid, None)
        legacy = LocalCluster.load(folder)
        assert legacy.running(legacy.nodes[0])
        _name_in_cluster_json(folder, other.pid, None)
        legacy = LocalCluster.load(folder)
        assert not legacy.running(legacy.nodes[0])
        legacy.stop_all()
        assert other.poll() is None and node.poll() is None
        assert legacy.nodes[0].start_time == 0 and not legacy.made_folder


def test_a_node_in_a_folder_whose_name_is_not_utf8_is_seen_and_stopped(tmp_path: Path) -> None:
    """/proc's command line was decoded with replacement characters, so the node's data
    directory never matched: status said stopped, and stop left the node running."""
    folder = tmp_path / os.fsdecode(b"caf\xe9")
    LocalCluster.create(folder, 1, "local", "test", free_base_port(1))
    data = str((folder / "n1" / "data").resolve())
    with _process(*_sleeper("quicraft.cli", "node", "--data", data)) as node:
        _name_in_cluster_json(folder, node.pid, _start_time(node.pid))
        cmdline = Path(f"/proc/{node.pid}/cmdline")
        deadline = time.monotonic() + 10
        while not cmdline.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.01)  # empty for a moment while the process execs
        cluster = LocalCluster.load(folder)
        assert cluster.running(cluster.nodes[0])
        cluster.stop_all()
        assert node.wait(10) == -signal.SIGTERM


def test_a_copy_of_a_folder_does_not_stop_the_original_s_nodes(tmp_path: Path) -> None:
    original, copy = tmp_path / "dev", tmp_path / "copy"
    cluster = LocalCluster.create(original, 1, "local", "test", free_base_port(1))
    try:
        cluster.start_nodes(cluster.nodes)
        pid = cluster.nodes[0].pid
        shutil.copytree(original, copy)
        status = quicraft("local", "--dir", str(copy), "status")
        assert status.stdout.startswith(f"n1  {cluster.nodes[0].address:<16} stopped\n")
        cleaned = quicraft("local", "--dir", str(copy), "stop", "--clean")
        assert cleaned.returncode == 0, cleaned.stderr
        assert not copy.exists()
        assert cluster.running(cluster.nodes[0]) and not _gone(pid)
        status = quicraft("local", "--dir", str(original), "status")
        assert status.stdout.startswith(f"n1  {cluster.nodes[0].address:<16} running (pid {pid})\n")
    finally:
        cluster.stop_all()
    assert _gone(pid)


_NODE = {"name": "n1", "port": 7901, "pid": 0}
_PID = "node n1: pid must be a whole number from 0 to 2147483647, not "
_PORT = "node n1: port must be a whole number from 1 to 65535, not "


def _cluster_json(node: dict[str, object] = _NODE, **top: object) -> dict[str, object]:
    return {"cluster": "local", "preset": "dev", "nodes": [node], **top}


@pytest.mark.parametrize(
    ("raw", "said"),
    [
        (_cluster_json({**_NODE, "pid": "abc"}), _PID + '"abc"'),
        (_cluster_json({**_NODE, "pid": 1.5}), _PID + "1.5"),
        (_cluster_json({**_NODE, "pid": None}), _PID + "null"),
        (_cluster_json({**_NODE, "pid": True}), _PID + "true"),
        (_cluster_json({**_NODE, "pid": 10**20}), _PID + "100000000000000000000"),
        (_cluster_json({**_NODE, "pid": -1}), _PID + "-1"),
        (_cluster_json({"name": "n1", "port": 7901}), "node n1: pid is missing"),
        (_cluster_json({**_NODE, "port": "x"}), _PORT + '"x"'),
        (_cluster_json({**_NODE, "port": 99999}), _PORT + "99999"),
        (
            _cluster_json({**_NODE, "start_time": [1]}),
            "node n1: start_time must be a whole number from 0 to 18446744073709551615, not [1]",
        ),
        (_cluster_json({**_NODE, "name": "../.."}), 'node n1: name must be "n1", not "../.."'),
        (_cluster_json({**_NODE, "extra": 1}), 'node n1: unknown field "extra"'),
        (
            _cluster_json(cluster="../.."),
            "bad cluster name '../..': use 1-64 letters, digits, '.', '_' or '-' (not 'ca')",
        ),
        (_cluster_json(cluster=5), "cluster must be a name, not 5"),
        (_cluster_json(preset=["dev"]), 'preset must be one of dev, prod, test, not ["dev"]'),
        (_cluster_json(made_folder="yes"), 'made_folder must be true or false, not "yes"'),
        (_cluster_json(nodes=[]), "nodes must be a list of 1 to 9 nodes"),
        (_cluster_json(nodes=["n1"]), "node n1: not a JSON object"),
        ([], "not a JSON object"),
    ],
)
def test_a_damaged_cluster_json_is_one_line_for_every_command(
    raw: object, said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The audit's finding 5: these were tracebacks, and "pid": true signalled PID 1."""
    folder = tmp_path / "dev"
    folder.mkdir()
    (folder / "cluster.json").write_text(json.dumps(raw))
    for action in (
        ["status"],
        ["stop"],
        ["stop", "--clean"],
        ["kill", "1"],
        ["restart", "1"],
        ["logs"],
        ["start", "1"],
    ):
        assert main(["local", "--dir", str(folder), *action]) == 1, action
        out, err = capsys.readouterr()
        assert out == "", action
        assert err == f"quicraft: error: {folder}/cluster.json is unreadable: {said}\n", action
    assert sorted(p.name for p in folder.iterdir()) == ["cluster.json"]


def test_a_cluster_json_that_is_a_directory_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It said "[Errno 21] Is a directory: '...'" (found by a sweep of the command line)."""
    (tmp_path / "dev" / "cluster.json").mkdir(parents=True)
    for action in (["status"], ["start", "1"]):
        assert main(["local", "--dir", str(tmp_path / "dev"), *action]) == 1, action
        said = f"{tmp_path}/dev/cluster.json is unreadable: Is a directory"
        assert capsys.readouterr() == ("", f"quicraft: error: {said}\n"), action


@contextmanager
def _port_taken(port: int) -> Iterator[None]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", port))
        yield


def _contents(folder: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None
        for p in folder.rglob("*")
    }


@pytest.mark.parametrize("holding", ["notes", "a CA", "the current directory"])
def test_start_refuses_a_folder_of_other_files_and_changes_nothing(
    holding: str, tmp_path: Path
) -> None:
    """The audit's finding 1: start mixed a cluster into any folder, and when it failed (here
    its port is taken) deleted the cluster's keys there, a CA it had not made among them."""
    folder = tmp_path / "project"
    folder.mkdir()
    if holding == "a CA":
        init_cluster(folder / "certs", "local")
    else:
        (folder / "notes.txt").write_text("mine")
    before = _contents(folder)
    base = free_base_port(1)
    where, cwd = (".", folder) if holding == "the current directory" else (str(folder), None)
    with _port_taken(base + 1):
        refused = quicraft("local", "--dir", where, "start", "1", "--base-port", str(base), cwd=cwd)
    assert refused.returncode == 1
    assert (
        refused.stderr
        == f"quicraft: error: {where} holds other files; give an empty or new folder\n"
    )
    assert _contents(folder) == before


def test_an_empty_folder_given_is_kept(tmp_path: Path) -> None:
    """Start takes an empty folder; neither a failed start nor stop --clean removes it (with
    --dir ., that failed with "Invalid argument: '.'")."""
    folder = tmp_path / "empty"
    folder.mkdir()
    base = free_base_port(1)
    with _port_taken(base + 1):
        failed = quicraft("local", "--dir", str(folder), "start", "1", "--base-port", str(base))
    assert failed.returncode == 1 and "Address already in use" in failed.stderr
    assert folder.is_dir() and not any(folder.iterdir())
    LocalCluster.create(folder, 1, "local", "test", base)  # not started
    cleaned = quicraft("local", "--dir", ".", "stop", "--clean", cwd=folder)
    assert cleaned.returncode == 0, cleaned.stderr
    assert folder.is_dir() and not any(folder.iterdir())


def test_stop_says_which_nodes_it_had_to_kill(tmp_path: Path) -> None:
    """A node that ignores SIGTERM (here: paused) is killed after the grace time; stop was
    silent about it, so a 10-s wait and a leader that never handed over went unexplained
    (found by an audit). The command prints what stop returns, one line each on stderr."""
    cluster = LocalCluster.create(tmp_path / "dev", 2, "local", "test", free_base_port(2))
    try:
        cluster.start_nodes(cluster.nodes)
        paused = cluster.nodes[1]
        os.kill(paused.pid, signal.SIGSTOP)
        assert cluster.stop(cluster.nodes, grace_s=0.5) == [paused]
        assert not any(cluster.running(n) for n in cluster.nodes)
        cluster.start_nodes(cluster.nodes)
        assert cluster.stop_all(grace_s=5) == []  # both stop on SIGTERM
    finally:
        cluster.stop_all(grace_s=0)


def test_the_command_start_suggests_keeps_a_folder_with_spaces_whole(tmp_path: Path) -> None:
    """'try: quicraft kv set ... --certs my dir/certs' split the folder in two when pasted
    (found by an audit)."""
    folder = tmp_path / "my dev"
    started = quicraft(
        "local", "--dir", str(folder), "start", "1", "--base-port", str(free_base_port(1))
    )
    try:
        assert started.returncode == 0, started.stderr
        assert f"--certs '{folder / 'certs'}'" in started.stdout
    finally:
        quicraft("local", "--dir", str(folder), "stop", "--clean")


def test_logs_to_a_reader_that_went_away_ends_quietly_with_141(tmp_path: Path) -> None:
    """`quicraft local logs | head -n 1` said "quicraft: error: [Errno 32] Broken pipe" and
    exited 1: the reader going away was taken for a failure of the cluster's folder."""
    folder = tmp_path / "dev"
    (folder / "n1").mkdir(parents=True)
    (folder / "cluster.json").write_text(json.dumps(_cluster_json()))
    (folder / "n1" / "node.log").write_text("a line of the node's log\n")
    assert quicraft_into_closed_pipe("local", "--dir", str(folder), "logs") == (141, "")


def test_logs_reads_the_end_of_a_log_larger_than_its_memory(tmp_path: Path) -> None:
    """It read the whole log to print its last lines: a log grows over every start of its
    node, and one of 1 GiB failed with a MemoryError traceback where the command may use
    512 MiB (found by an audit)."""
    folder = tmp_path / "dev"
    (folder / "n1").mkdir(parents=True)
    (folder / "cluster.json").write_text(json.dumps(_cluster_json()))
    with (folder / "n1" / "node.log").open("wb") as log:
        log.write(b"the first line\n")
        log.seek(2**30)  # a hole: the file takes no space on disk
        log.write(b"\nthird from last\nsecond \xff from last\nthe last line\n")
    shown = subprocess.run(
        [sys.executable, "-m", "quicraft.cli", "local", "--dir", str(folder), "logs", "1",
         "--lines", "2"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (2**29, 2**29)),
    )  # fmt: skip
    assert (shown.returncode, shown.stderr) == (0, "")
    assert shown.stdout == "n1 | second \ufffd from last\nn1 | the last line\n"


def test_log_tail_is_the_last_lines_wherever_its_blocks_cut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local, "LOG_BLOCK", 3)  # cuts lines, and the two bytes of "é"
    node = LocalNode("n1", 7401)
    cluster = LocalCluster(tmp_path, "local", "dev", [node])
    assert cluster.log_tail(node, 5) == []  # no log yet
    (tmp_path / "n1").mkdir()
    for text in ("a\nbb\n\nccc é\r\nd", "a\nbb\n\nccc é\r\nd\n"):
        cluster.log_file(node).write_text(text)
        for count in range(1, 8):
            assert cluster.log_tail(node, count) == text.splitlines()[-count:], (text, count)


class _PopenThatIsInterruptedWhenFinalized(subprocess.Popen[bytes]):
    """A Ctrl-C that comes while the Popen object of a node is finalized."""

    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        super().__del__()


def test_a_ctrl_c_while_start_drops_its_popen_is_not_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CI saw `local start` exit 0 after a Ctrl-C: the KeyboardInterrupt was raised inside
    Popen.__del__, where Python prints it and goes on."""
    cluster = LocalCluster.create(tmp_path / "dev", 1, "local", "test", free_base_port(1))
    monkeypatch.setattr(LocalCluster, "command", lambda self, node, extra=None: _sleeper())
    monkeypatch.setattr(subprocess, "Popen", _PopenThatIsInterruptedWhenFinalized)
    node = cluster.nodes[0]
    try:
        with pytest.raises(KeyboardInterrupt):
            cluster.start(node)
        assert node.pid > 0 and _pids(tmp_path / "dev") == [node.pid]  # recorded, to be stopped
    finally:
        if node.pid > 0:
            os.kill(node.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):  # unless Popen's own cleanup reaped it
                os.waitpid(node.pid, 0)
