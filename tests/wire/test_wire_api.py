"""The public face of quicraft.wire and its place in the layers."""

from __future__ import annotations

import ast
import sys
from importlib.util import resolve_name
from pathlib import Path

import quicraft.wire as wire

WIRE = Path(wire.__file__).resolve().parent


def test_public_api_is_sorted_and_importable() -> None:
    # Constants first, then the rest: the order quicraft.core uses.
    assert wire.__all__ == sorted(wire.__all__, key=lambda n: (not n.isupper(), n))
    assert len(set(wire.__all__)) == len(wire.__all__)
    for name in wire.__all__:
        assert hasattr(wire, name), name


def test_wire_builds_only_on_the_core_the_standard_library_and_cbor2() -> None:
    paths = sorted(WIRE.glob("*.py"))
    assert paths, WIRE
    for path in paths:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):  # `from ..core import x` is quicraft.core
                base = resolve_name("." * node.level + (node.module or ""), wire.__name__)
                names = [base] if node.module else [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                layer = ".".join(name.split(".")[:2])
                assert (
                    top in sys.stdlib_module_names
                    or top in {"__future__", "cbor2"}
                    or layer in {"quicraft.core", "quicraft.wire"}
                ), f"wire/{path.name} imports {name}"


def test_one_exception_for_every_malformed_input() -> None:
    assert issubclass(wire.ProtocolError, Exception)
    assert not issubclass(wire.ProtocolError, (ValueError, TypeError))  # never caught by accident
