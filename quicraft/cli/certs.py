"""`quicraft certs init | issue`: a cluster's certificate authority and its identities."""

from __future__ import annotations

import argparse

from quicraft.transport import IdentityError, Role, init_cluster, issue, load_identity

from .common import OK, add_certs, check_cluster_folder, cluster_name, fail, identity_name


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    certs = commands.add_parser(
        "certs",
        help="create a cluster's certificate authority and issue keys",
        description="Every node and client proves who it is with a key signed by its "
        "cluster's certificate authority, kept under DIR/CLUSTER/.",
    )
    actions = certs.add_subparsers(dest="action", required=True, metavar="ACTION")
    init = actions.add_parser(
        "init",
        help="create the CA of a new cluster and an 'admin' identity",
        description="Create DIR/CLUSTER/ca.crt and ca.key (keep ca.key secret: whoever holds "
        "it can admit anyone) and an 'admin' client identity.",
    )
    init.add_argument("--cluster", required=True, type=cluster_name, help="cluster name")
    add_certs(init)
    new = actions.add_parser(
        "issue",
        help="sign a new key for a node or a client",
        description="Create DIR/CLUSTER/NAME.crt and NAME.key, signed by the cluster's CA. "
        "Roles: node (a cluster member), admin (everything, management included), client "
        "(key-value reads and writes, events), reader (key-value reads, events). Only admin "
        "may manage the cluster (quicraft mgmt, status included).",
    )
    new.add_argument("--cluster", required=True, type=cluster_name, help="cluster name")
    new.add_argument("--name", required=True, type=identity_name, help="name of the node or client")
    new.add_argument("--role", required=True, choices=[r.value for r in Role], help="its role")
    add_certs(new)


def run(args: argparse.Namespace) -> int:
    folder = args.certs / args.cluster
    try:
        if args.action == "init":
            init_cluster(args.certs, args.cluster)
            done = f"created the CA of cluster {args.cluster!r} and an admin identity in {folder}"
        else:
            check_cluster_folder(args.certs, args.cluster)
            issue(args.certs, args.cluster, args.name, Role(args.role))
            identity = load_identity(args.certs, args.cluster, args.name)
            until = identity.certificate().not_valid_after_utc  # the CA's end, if sooner
            done = (
                f"issued {args.name!r} ({args.role}) id {identity.node_id} in {folder}, "
                f"valid until {until:%Y-%m-%d}"
            )
    except IdentityError as err:
        return fail(str(err))
    except OSError as err:  # --certs is a file, or where nothing can be made
        return fail(f"cannot write in {args.certs}: {err.strerror or err}")
    print(done)
    return OK
