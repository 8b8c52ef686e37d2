"""`quicraft mgmt status|health|transfer|add-member|remove-member|promote|snapshot|backup|restore`:
run a cluster from the command line (quicraft-mgmt/1, an identity of role admin).

Tables for people, JSON with --json; an error is one line with the node's hint ("not leader;
leader is 3f2a… at 10.0.0.2:7400"). restore works offline, on files only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from quicraft.client import MgmtClient, MgmtError, connect_mgmt
from quicraft.client.mgmt import NOT_A_FILE, OP_TIME_S
from quicraft.node import NodeSettings
from quicraft.node.data_owner import DataOwner
from quicraft.node.restore import RestoreError, check_backup, write_restored
from quicraft.storage import StorageError
from quicraft.transport import IdentityError, Role, check_name, load_identity
from quicraft.transport.address import format_address
from quicraft.wire import BackupError, BackupInfo

from .common import (
    DEFAULT_CERTS,
    FAILED,
    MISUSE,
    OK,
    CommandError,
    add_certs,
    add_connection_arguments,
    cluster_name,
    dial_address,
    endpoints_of,
    fail,
    identity_name,
    path,
    seconds,
)
from .node import ensure_identity
from .telemetry import add_tracing_arguments, client_tracing

Result = tuple[int, dict[str, Any], str]
#: How long a transfer's output waits to name the new leader (its id is printed without).
NAME_LOOKUP_S = 1.0


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    mgmt = commands.add_parser(
        "mgmt",
        help="manage a cluster: status, members, leadership, snapshots, backups",
        description="Manage a running cluster with an identity of role admin. Membership "
        "changes and transfers go to the leader (found from any endpoint). Exit status: "
        "0 success, 1 an operational error (health: the cluster is unhealthy), 2 misuse. "
        "See docs/operations.md.",
    )
    ops = mgmt.add_subparsers(dest="op", required=True, metavar="OP")
    ops.add_parser("status", help="every member: role, match, lag, last contact; the leader")
    ops.add_parser("health", help="is there a leader and a quorum? problems, one per line")
    transfer = ops.add_parser("transfer", help="hand leadership to NODE (default: auto)")
    transfer.add_argument(
        "target",
        nargs="?",
        default="auto",
        type=_member,
        metavar="NODE|auto",
        help="a voter's id or name; auto picks the most caught-up voter",
    )
    add = ops.add_parser(
        "add-member",
        help="add the node at HOST:PORT (started with 'quicraft node --no-bootstrap')",
        description="Add the node at HOST:PORT: as a learner, then, once it has caught up, "
        "promoted to voter (unless --learner).",
    )
    add.add_argument(
        "addr", type=dial_address, metavar="HOST:PORT", help="where the new node listens"
    )
    add.add_argument("--learner", action="store_true", help="leave it a learner (a standby)")
    remove = ops.add_parser("remove-member", help="remove member NODE (id or name)")
    remove.add_argument("node", type=_member, metavar="NODE", help="the member's id or name")
    promote = ops.add_parser("promote", help="make learner NODE (id or name) a voter")
    promote.add_argument("node", type=_member, metavar="NODE", help="the learner's id or name")
    ops.add_parser("snapshot", help="snapshot the contacted node's state now")
    backup = ops.add_parser(
        "backup",
        help="stream a consistent snapshot into FILE",
        description="Write a backup of the contacted node's state, including every write "
        "committed before the command, to FILE (checked with SHA-256; readable by its owner "
        "only; FILE appears only when complete, written as FILE.XXXXXXXX.part first). A "
        "progress bar goes to stderr when it is a terminal.",
    )
    backup.add_argument("file", type=path, metavar="FILE", help="the backup file to write")
    backup.add_argument("--force", action="store_true", help="replace FILE if it exists")
    for op, parser in ops.choices.items():
        _add_connection_arguments(parser, op)
    restore = ops.add_parser(
        "restore",
        help="offline: make a data directory for a new one-node cluster from a backup",
        description="Offline: check the backup FILE and write a fresh data directory (DIR "
        "must be empty) holding its state, with this node (--name) as the only member. Then "
        "start it with 'quicraft node --data DIR ...' and add members. See docs/operations.md.",
    )
    restore.add_argument("file", type=path, metavar="FILE", help="the backup file to read")
    restore.add_argument("--data", type=path, required=True, metavar="DIR", help="new data dir")
    restore.add_argument(
        "--cluster", required=True, type=cluster_name, help="cluster name (for the node's key)"
    )
    restore.add_argument(
        "--name",
        required=True,
        type=identity_name,
        help="the node that will run on DIR; its key is issued if the CA is here and it has none",
    )
    add_certs(restore)
    restore.add_argument("--json", action="store_true", help="print JSON")


def _member(text: str) -> str:
    """An argument type: a member's id or name (both are identity names: ids are hex)."""
    try:
        check_name(text, "name")
    except IdentityError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a member's id nor its name (quicraft mgmt status lists them)"
        ) from None
    return text


def _add_connection_arguments(parser: argparse.ArgumentParser, op: str) -> None:
    add_tracing_arguments(parser)
    add_connection_arguments(
        parser, "nodes to contact; a follower points to the leader", "role admin"
    )
    # A node serving some operations gets longer whatever the timeout (the client's OP_TIME_S);
    # finding it does not: say so here.
    least = OP_TIME_S.get(op.replace("-", "_"))
    why = {
        "add-member": "as a new node may take a minute to catch up",
        "backup": "for the whole backup: give more for a large store",
    }
    parser.add_argument(
        "--timeout",
        type=seconds,
        default=10.0,
        metavar="SECONDS",
        help="give up after SECONDS (default: 10"
        + (f"; once a node serves it, at least {least:g} s" if least else "")
        + (f", {why[op]})" if op in why else ")"),
    )
    parser.add_argument(
        "--no-follow",
        action="store_true",
        help="ask only the nodes given; do not follow a follower's pointer to the leader",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")


# -- running ---------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    if args.op == "restore":
        return _restore(args)
    with client_tracing(args):  # before the client is made: it looks for a tracer then
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    if args.op == "backup" and (why := _unwritable(args.file)):
        print(f"quicraft mgmt backup: cannot write {args.file}: {why}", file=sys.stderr)
        return MISUSE
    try:
        client = connect_mgmt(
            endpoints_of(args),
            args.cluster,
            args.certs,
            args.name,
            args.timeout,
            follow_leader=not args.no_follow,
        )
    except (ValueError, IdentityError, CommandError) as err:
        return fail(str(err))
    return asyncio.run(_run_once(client, args))


def _unwritable(file: Path) -> str | None:
    """Why a backup cannot be written as `file`, told before anything is streamed."""
    if file.is_dir():
        return "it is a directory"
    if not file.parent.is_dir():
        there = file.parent.exists()
        return f"{file.parent} is not a directory" if there else "its directory does not exist"
    if file.is_symlink() or (file.exists() and not file.is_file()):
        return NOT_A_FILE
    return None


async def _run_once(client: MgmtClient, args: argparse.Namespace) -> int:
    async with client:
        try:
            code, result, text = await execute(client, args)
        except MgmtError as err:
            return fail(str(err))
        except FileExistsError as err:
            hint = err.strerror if args.force else "--force replaces it"
            return fail(f"{err.filename} exists already ({hint})")
        except OSError as err:  # writing the backup file (the network's errors are MgmtError)
            return fail(f"cannot write {err.filename or args.file}: {err.strerror or err}")
    print(json.dumps(result) if args.json else text)
    return code


async def _named(client: MgmtClient, node: str) -> str:
    """`node` as people know it, "n2 (ab12…)": a transfer answers with the id alone. A
    status of one short try says the name; without one, the id stands alone."""
    try:
        status = await client.call("status", timeout=NAME_LOOKUP_S)
    except MgmtError:
        return node
    name = next((m.get("name") for m in status.get("members", []) if m.get("id") == node), None)
    return f"{name} ({node})" if name else node


async def execute(client: MgmtClient, args: argparse.Namespace) -> Result:
    """Run one operation: (exit code, JSON result, text for people)."""
    if args.op == "status":
        status = await client.status()
        return OK, status, status_table(status)
    if args.op == "health":
        health = await client.health()
        return (OK if health["ok"] else FAILED), health, health_text(health)
    if args.op == "transfer":
        leader = await client.transfer(args.target)
        return OK, {"leader": leader}, f"leader is now {await _named(client, leader)}"
    if args.op == "add-member":
        added = await client.add_member(format_address(args.addr), learner=args.learner)
        what = "a learner" if args.learner else "a voter"
        return OK, added, f"added {added['node']} as {what} (log index {added['index']})"
    if args.op in ("remove-member", "promote"):
        node = await client.member_id(args.node)
        if args.op == "promote":
            index = await client.promote(node)
            return OK, {"node": node, "index": index}, f"promoted {node} (log index {index})"
        index = await client.remove_member(node)
        return OK, {"node": node, "index": index}, f"removed {node} (log index {index})"
    if args.op == "snapshot":
        index = await client.snapshot()
        return OK, {"index": index}, f"snapshot at index {index}"
    progress = _ProgressBar(sys.stderr) if sys.stderr.isatty() else None
    info = await client.backup(args.file, progress=progress, replace=args.force)
    if progress is not None:
        progress.done()
    return (
        OK,
        _info_map(info, args.file),
        (
            f"backup of index {info.index} (term {info.term}, {info.size} bytes) written to "
            f"{args.file}"
        ),
    )


def _restore(args: argparse.Namespace) -> int:
    settings = NodeSettings(args.cluster, args.name, args.data, args.certs, ("127.0.0.1", 1))
    new = None
    try:
        # The backup and the data directory first: a restore refused issues no key.
        backup = check_backup(args.file, args.data, args.cluster)
        new = ensure_identity(settings)
        identity = load_identity(args.certs, args.cluster, args.name)
        if identity.role is not Role.NODE:
            return fail(f"identity {args.name!r} has role {identity.role.value}; need role node")
        owner = DataOwner(identity.node_id, args.name, args.cluster)
        restored = write_restored(backup, args.data, owner)
    except BaseException as err:  # refused, or Ctrl-C (DIR is emptied): the key issued goes
        if new is not None:
            new.take_back()
        if isinstance(err, IdentityError | RestoreError | BackupError | StorageError):
            return fail(str(err))
        raise
    info, cluster_id = restored.info, restored.cluster_id
    result = {
        **_info_map(info, args.file),
        "node": identity.node_id,
        "data": str(args.data),
        "new_cluster_id": cluster_id,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"restored index {info.index} of cluster {info.cluster!r} into {args.data}: a new "
            f"cluster whose only member is {args.name} ({identity.node_id})"
            + (f", with the new cluster id {cluster_id}" if cluster_id else "")
            + f".\nStart it with: {_node_command(args)} --listen HOST:PORT; then add members "
            "(quicraft mgmt add-member)."
        )
    return OK


def _node_command(args: argparse.Namespace) -> str:
    """The `quicraft node` that runs a restored directory: with --certs too unless it is the
    default (without it, the node would look for its key in ./certs and not find it)."""
    argv = ["quicraft", "node", "--cluster", args.cluster, "--name", args.name]
    argv += ["--data", str(args.data)]
    if args.certs != DEFAULT_CERTS:
        argv += ["--certs", str(args.certs)]
    return shlex.join(argv)


# -- printing --------------------------------------------------------------------------------------


def _info_map(info: BackupInfo, path: Path) -> dict[str, Any]:
    return {
        "file": str(path),
        "cluster": info.cluster,
        "cluster_id": info.cluster_id,
        "index": info.index,
        "term": info.term,
        "size": info.size,
        "voters": sorted(info.voters),
        "learners": sorted(info.learners),
    }


def _cell(value: object) -> str:
    return "-" if value is None else str(value)


def status_table(status: dict[str, Any]) -> str:
    head = [
        f"cluster id: {_cell(status['cluster_id'])}   leader: {_cell(status['leader'])}   "
        f"term: {status['term']}   commit: {status['commit']}   applied: {status['applied']}",
        f"(as seen by {status['node']})",
        "",
    ]
    rows = [["", "ID", "NAME", "ADDRESS", "VOTER", "ROLE", "MATCH", "LAG", "LAST CONTACT"]]
    for m in status["members"]:
        contact = m["last_contact_ms"]
        rows.append(
            [
                "*" if m["id"] == status["leader"] else "",
                m["id"],
                _cell(m["name"]),
                _cell(m["address"]),
                "voter" if m["voter"] else "learner",
                m["role"],
                _cell(m["match"]),
                _cell(m["lag"]),
                "-" if contact is None else f"{contact} ms",
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]  # fmt: skip
    legend = ["", "* leader"] if status["leader"] is not None else []
    return "\n".join(head + lines + legend)


def health_text(health: dict[str, Any]) -> str:
    state = "healthy" if health["ok"] else "UNHEALTHY"
    lines = [
        f"{state}: leader {_cell(health['leader'])}, {health['reachable']} of "
        f"{health['voters']} voters reachable"
    ]
    lines += [f"  - {problem}" for problem in health["problems"]]
    return "\n".join(lines)


class _ProgressBar:
    """A one-line bar redrawn in place on a terminal."""

    WIDTH = 30

    def __init__(self, out: TextIO, write: Callable[[str], object] | None = None):
        self.out = out
        self._write = write or out.write

    def __call__(self, done: int, size: int) -> None:
        share = done / size if size else 1.0
        filled = int(share * self.WIDTH)
        bar = "#" * filled + "." * (self.WIDTH - filled)
        self._write(f"\rbackup [{bar}] {share:4.0%} {_mib(done)} / {_mib(size)}")
        self.out.flush()

    def done(self) -> None:
        self._write("\n")
        self.out.flush()


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB"
