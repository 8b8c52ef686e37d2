"""The package as users meet it: `import quicraft` (lazy, and typed for mypy) and the wheel."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_quicraft_is_lazy_and_exports_the_client_api() -> None:
    script = """
import sys
import quicraft
assert "quicraft.client" not in sys.modules, "import quicraft loaded the client"
import quicraft.client as client
assert sorted(quicraft.__all__) == sorted(client.__all__), quicraft.__all__
for name in quicraft.__all__:
    assert getattr(quicraft, name) is getattr(client, name), name
assert issubclass(quicraft.InvalidRequest, quicraft.ClientError)
assert issubclass(quicraft.EventsCompacted, quicraft.ClientError)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_type_checkers_see_every_exported_name() -> None:
    """The TYPE_CHECKING imports of quicraft/__init__.py name exactly what __all__ does."""
    tree = ast.parse((ROOT / "quicraft" / "__init__.py").read_text())
    typed: set[str] = set()
    exported: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            typed |= {a.name for n in node.body if isinstance(n, ast.ImportFrom) for a in n.names}
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "__all__":
            exported = ast.literal_eval(node.value)
    assert typed == set(exported)


#: A user program; mypy --strict must report exactly the lines marked "wrong", which it can
#: only do if `quicraft.connect` & co. have their real types (not Any).
USER_PROGRAM = """
import asyncio

import quicraft


async def main() -> None:
    async with quicraft.connect(endpoints="127.0.0.1:7401", cluster="c1") as c:
        count: int = await c.kv.incr("k")
        await c.kv.set(1, b"value")  # wrong: keys are str
    async with quicraft.connect_mgmt("127.0.0.1:7401", "c1") as m:
        index: str = await m.snapshot()  # wrong: an int
    with quicraft.connect_sync("127.0.0.1:7401", "c1") as s:
        value: int = s.kv.get("k")  # wrong: bytes | None
    try:
        await quicraft.conect("127.0.0.1:7401", "c1").close()  # wrong: no such name
    except (quicraft.InvalidRequest, quicraft.EventsCompacted) as err:
        code: int = err.code  # wrong: a str
        print(count, index, value, code)


asyncio.run(main())
"""


def test_mypy_types_the_top_level_api(tmp_path: Path) -> None:
    program = tmp_path / "user.py"
    program.write_text(USER_PROGRAM)
    mypy = [sys.executable, "-m", "mypy", "--strict", "--no-error-summary"]
    done = subprocess.run(
        [*mypy, "--cache-dir", str(tmp_path / "cache"), program.name],
        cwd=tmp_path,
        env={**os.environ, "MYPYPATH": str(ROOT)},  # an editable install hides it from mypy
        capture_output=True,
        text=True,
    )
    reported = {int(n) for n in re.findall(r"^user\.py:(\d+): error", done.stdout, re.M)}
    lines = USER_PROGRAM.splitlines()
    wrong = {number for number, line in enumerate(lines, start=1) if "# wrong" in line}
    assert reported == wrong, done.stdout + done.stderr


def test_the_wheel_ships_py_typed(tmp_path: Path) -> None:
    """PEP 561: without quicraft/py.typed, mypy refuses every import of an installed quicraft."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "quicraft", source / "quicraft", ignore=ignore)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(source)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    [wheel] = tmp_path.glob("quicraft-*.whl")
    assert "quicraft/py.typed" in zipfile.ZipFile(wheel).namelist()


def test_every_exported_class_and_its_public_methods_say_what_they_do() -> None:
    """`help(quicraft.Client)` and the like document each class and each public method and
    property (their own or what they inherit from quicraft); the clients' methods say what
    they raise too (the exceptions' own from_info aside)."""
    script = """
import inspect
import quicraft
missing, silent = [], []
for name in quicraft.__all__:
    cls = getattr(quicraft, name)
    if not inspect.isclass(cls):
        continue
    if not cls.__dict__.get("__doc__"):
        missing.append(name)
    for base in cls.__mro__:
        if not base.__module__.startswith("quicraft"):
            continue
        for attr, value in vars(base).items():
            if attr.startswith("_"):
                continue
            function = value.fget if isinstance(value, property) else value
            function = getattr(function, "__func__", function)
            if not callable(function):
                continue
            doc = function.__doc__ or ""
            if not doc:
                missing.append(f"{name}.{attr}")
            elif (
                not isinstance(value, property)
                and not issubclass(cls, Exception)
                and attr != "close"
                and "raise" not in doc.lower()
                and "Error" not in doc
            ):
                silent.append(f"{name}.{attr}")
assert not missing, f"no docstring: {sorted(set(missing))}"
assert not silent, f"no word of what they raise: {sorted(set(silent))}"
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
