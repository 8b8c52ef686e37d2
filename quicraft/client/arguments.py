"""Checks of what a program passes to `connect`, `connect_mgmt` and `connect_sync`: a mistake
there fails at once with one ValueError that says what to write instead, not later, from
deep inside a request, or after the whole timeout."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from os import PathLike
from pathlib import Path
from typing import TypeGuard

from quicraft.transport import Identity, load_identity
from quicraft.transport.address import Address, format_address, is_unspecified, parse_address

_FORM = "give 'HOST:PORT' strings, as a list or as one str with commas"


def connection_arguments(
    endpoints: Sequence[str] | str, cluster: str, certs: str | Path, name: str, timeout: float
) -> tuple[list[Address], Identity, float]:
    """What every `connect*` is given, checked: the endpoints' addresses, the identity `name`
    of `cluster` from `certs`, and the timeout. Raises ValueError for bad endpoints (a URL, a
    (host, port) tuple, none, the wildcard 0.0.0.0), a timeout that is not a number above
    0, or a cluster, name or certs that is not a str (certs: or a path), and IdentityError
    (quicraft.transport) for a missing or bad certificate or key file, or no such cluster
    under `certs`."""
    addresses = endpoint_addresses(endpoints)
    timeout = checked_timeout(timeout)
    if not isinstance(cluster, str):
        raise ValueError(f"cluster must be the cluster's name (a str), not {cluster!r}")
    if not isinstance(name, str):
        raise ValueError(
            f"name must be the name of an identity in {certs}/{cluster}/ (a str, such as "
            f"'admin'), not {name!r}"
        )
    if not isinstance(certs, str | PathLike):
        raise ValueError(f"certs must be a folder (a str or a Path), not {certs!r}")
    if certs == "":  # an unset variable; Path("") would be the current folder
        raise ValueError("certs must be a folder, not '' (an unset variable?)")
    return addresses, load_identity(Path(certs), cluster, name), timeout


def endpoint_addresses(endpoints: Sequence[str] | str) -> list[Address]:
    """The addresses of `endpoints`: one str "HOST:PORT,HOST:PORT" or a list, tuple (or any
    other iterable) of "HOST:PORT" strings. ValueError, naming the mistake, for anything
    else."""
    if isinstance(endpoints, str):
        texts = [e for e in endpoints.split(",") if e.strip()]
    elif _is_pair(endpoints):
        raise ValueError(
            f"endpoints {endpoints!r} is one (host, port) pair: write it "
            f"{format_address(endpoints)!r}"
        )
    elif isinstance(endpoints, Iterable) and not isinstance(endpoints, bytes | bytearray):
        texts = list(endpoints)
    else:
        raise ValueError(f"endpoints must be 'HOST:PORT' strings, not {endpoints!r}: {_FORM}")
    if not texts:
        raise ValueError(f"no endpoints given: {_FORM}, such as '127.0.0.1:7401'")
    return [_address(text) for text in texts]


def _address(text: object) -> Address:
    if not isinstance(text, str):
        like = format_address(text) if _is_pair(text) else "HOST:PORT"
        raise ValueError(f"endpoint {text!r} is not a str: write it {like!r}")
    if any(mark in text.strip() for mark in (" ", "\t", ";")):  # no host name holds one
        raise ValueError(
            f"bad endpoint {text.strip()!r}: write each as HOST:PORT, without spaces, and "
            "separate them with commas"
        )
    address = parse_address(text)
    if is_unspecified(address[0]):
        # A node listens there, but a dialer reaches nothing: the answer would come from
        # another address and be dropped, so it would wait out its whole timeout.
        raise ValueError(
            f"endpoint {text.strip()!r} is the wildcard address a node listens on, not one "
            "to dial: give a real address of that host (127.0.0.1 for this one)"
        )
    return address


def _is_pair(value: object) -> TypeGuard[Address]:
    """(host, port), as a program may hold an address."""
    return (
        isinstance(value, tuple)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
    )


def checked_timeout(timeout: float) -> float:
    """`timeout` if it is a number of seconds above 0; ValueError otherwise."""
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        raise ValueError(f"timeout must be a number of seconds above 0, not {timeout!r}")
    return float(timeout)
