"""The layering rules of DESIGN.md, checked on the source: arrows point down only."""

from __future__ import annotations

import ast
import sys
from importlib.util import resolve_name
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "quicraft"


def _imports(folder: str) -> dict[str, set[str]]:
    """For each module in `folder`: the top-level modules (or quicraft subpackages) it imports."""
    found: dict[str, set[str]] = {}
    for path in sorted((PACKAGE / folder).glob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            names.update(imported_names(node, f"quicraft.{folder}"))
        found[path.name] = {
            ".".join(n.split(".")[:2]) if n.startswith("quicraft") else n.split(".")[0]
            for n in names
        }
    assert found, f"no modules in quicraft/{folder}"  # a loop over nothing checks nothing
    return found


def imported_names(node: ast.AST, package: str) -> list[str]:
    """The absolute names an import statement of `package` imports; a relative import counts
    as what it reaches (`from ..node import x` in quicraft.storage is quicraft.node)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = resolve_name("." * node.level + (node.module or ""), package)
    if node.module:
        return [base]
    return [f"{base}.{alias.name}" for alias in node.names]  # from .. import node


def test_relative_imports_count_as_what_they_reach() -> None:
    found = ast.parse("from ..node import x\nfrom .. import client\nfrom . import log\nimport os")
    names = [n for node in found.body for n in imported_names(node, "quicraft.storage")]
    assert names == ["quicraft.node", "quicraft.client", "quicraft.storage.log", "os"]


def test_core_imports_only_the_standard_library() -> None:
    """Sans-IO: no quicraft layer above it, nothing third-party, no I/O or concurrency."""
    forbidden = {"asyncio", "socket", "threading", "time", "os", "select", "subprocess"}
    for module, names in _imports("core").items():
        outside = {
            n for n in names if n not in sys.stdlib_module_names | {"__future__", "quicraft.core"}
        }
        assert not outside, f"core/{module} imports {outside}"
        assert not names & forbidden, f"core/{module} imports {names & forbidden}"


def test_sim_builds_only_on_the_core() -> None:
    for module, names in _imports("sim").items():
        layers = {n for n in names if n.startswith("quicraft")}
        assert layers <= {"quicraft.core", "quicraft.sim"}, f"sim/{module} imports {layers}"
        third_party = {
            n for n in names - layers if n not in sys.stdlib_module_names and n != "__future__"
        }
        assert not third_party, f"sim/{module} imports {third_party}"


#: Each layer and the quicraft layers it may import (DESIGN.md: arrows point down only).
ALLOWED_LAYERS = {
    "storage": {"quicraft.core", "quicraft.storage"},
    "wire": {"quicraft.core", "quicraft.wire"},
    "transport": {"quicraft.wire", "quicraft.transport"},
    "discovery": {"quicraft.transport", "quicraft.discovery"},  # transport.address only
    "statemachine": {"quicraft.core", "quicraft.wire", "quicraft.statemachine"},
    "node": {
        "quicraft.core",
        "quicraft.storage",
        "quicraft.wire",
        "quicraft.transport",
        "quicraft.statemachine",
        "quicraft.discovery",  # node/lan.py: forming on a LAN
        "quicraft.telemetry",  # spans and metrics of the runtime and services
        "quicraft.node",
    },
    "client": {"quicraft.wire", "quicraft.transport", "quicraft.telemetry", "quicraft.client"},
    "telemetry": {"quicraft.telemetry"},  # below everything that records into it
}


def test_each_layer_imports_only_the_layers_below_it() -> None:
    for layer, allowed in ALLOWED_LAYERS.items():
        for module, names in _imports(layer).items():
            layers = {n for n in names if n.startswith("quicraft")}
            assert layers <= allowed, f"{layer}/{module} imports {layers - allowed}"


def test_public_api_is_sorted_and_importable() -> None:
    import quicraft.core as core

    assert core.__all__ == sorted(core.__all__, key=lambda n: (not n.isupper(), n))
    for name in core.__all__:
        assert hasattr(core, name), name
