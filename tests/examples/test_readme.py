"""The README's Python example runs as written, saved as a file (it once could only run in
`python -m asyncio`), against a real 3-node loopback cluster."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

# pytest puts only this folder on sys.path; the cluster harness lives in tests/node.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "node"))

from cluster_harness import Cluster, cluster, run

__all__ = ["cluster"]

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def test_the_readme_python_example_runs_as_a_script(cluster: Cluster, tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert len(blocks) == 1
    # The keys are read from a folder relative to where it runs: the example names it.
    assert 'certs="certs"' in blocks[0]
    # Only where the cluster is differs: its name, one endpoint, and ./certs.
    script = blocks[0].replace('"127.0.0.1:7401"', repr(cluster.nodes[0].address))
    script = script.replace('cluster="c1"', 'cluster="t1"')
    (tmp_path / "example.py").write_text(script)
    (tmp_path / "certs").symlink_to(cluster.local.certs)
    done = subprocess.run(
        [sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr

    async def check() -> None:
        async with cluster.client() as c:
            assert await c.kv.get("config/mode") == b"fast"
            assert await c.kv.get("visits") == b"1"

    run(check())


# What the README says of the project's files (the docs audit's items 7, 9 and 10).


def test_the_install_comes_before_the_first_quicraft_command() -> None:
    text = README.read_text()
    commands = [m.start() for m in re.finditer(r"^quicraft ", text, flags=re.MULTILINE)]
    assert commands
    assert text.index(". .venv/bin/activate") < min(commands)


def test_the_layout_lists_every_doc() -> None:
    layout = README.read_text().split("## Layout")[1]
    for doc in sorted((ROOT / "docs").glob("*.md")):
        assert re.search(rf"\b{re.escape(doc.name)}\b", layout), doc.name


def test_the_in_process_example_is_as_short_as_said() -> None:
    assert "in_process_cluster.py`: three cores wired together in under sixty lines" in (
        " ".join(README.read_text().split())
    )
    assert len((ROOT / "examples" / "in_process_cluster.py").read_text().splitlines()) < 60
