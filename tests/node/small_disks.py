"""Data directories on a tmpfs of their own, which a test can fill up at will (root only).

A tmpfs's size is an option of the file system itself, so resizing it with a remount takes
effect for every process using it, in any mount namespace (`ip netns exec` makes one).
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import tempfile
from pathlib import Path

PAGE = 4096


@functools.cache
def why_not() -> str:
    """Why this process cannot mount a tmpfs, or "" if it can (tried once)."""
    if sys.platform != "linux" or os.geteuid() != 0:
        return "mounting a tmpfs needs root on Linux (CI runs the tests as root)"
    with tempfile.TemporaryDirectory() as folder:
        try:
            mount(Path(folder), PAGE)
        except RuntimeError as err:
            return f"cannot mount a tmpfs: {err}"
        unmount(Path(folder))
    return ""


def mount(path: Path, size: int) -> None:
    """Make `path` (created if missing, empty) a tmpfs of `size` bytes."""
    path.mkdir(parents=True, exist_ok=True)
    _run("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))


def resize(path: Path, size: int) -> None:
    _run("mount", "-o", f"remount,size={size}", str(path))


def fill(path: Path) -> None:
    """Leave the tmpfs at `path` no room beyond a page: the next writes there fail with
    ENOSPC. (It refuses a size below what is in use, which may grow meanwhile: retried.)"""
    for _ in range(10):
        stat = os.statvfs(path)
        used = (stat.f_blocks - stat.f_bfree) * stat.f_frsize
        try:
            resize(path, used + PAGE)
            return
        except RuntimeError:
            continue
    raise RuntimeError(f"could not fill {path}: it keeps growing")


def unmount(path: Path) -> None:
    """Detach the tmpfs at `path`, even while a process still holds a file in it."""
    subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def _run(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")
