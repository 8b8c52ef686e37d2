"""`quicraft local`: what a newcomer's audit found in its workflow, each as it should be now."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from cluster_harness import free_base_port

from quicraft import connect_sync
from quicraft.node.local import LocalCluster


def quicraft(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "quicraft.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
    )


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
        twice = quicraft("local", "start", "1", *d)
        assert twice.returncode == 1
        assert f"is already running: see 'quicraft local --dir {folder} status'" in twice.stderr
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
        listening = f" listening on {LocalCluster.load(folder).nodes[0].address}\n"
        runs = (folder / "n1" / "node.log").read_text().split(listening)
        assert len(runs) == 3  # before the first run, the first, the second
        assert " stopped\n" in runs[1]  # the first ended gracefully, not killed
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
    assert "argument I: nodes are numbered from 1, not 0" in zero.stderr


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
    assert bad.returncode == 1 and "bad cluster name 'bad/name'" in bad.stderr
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
