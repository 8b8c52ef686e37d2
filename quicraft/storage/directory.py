"""Opening a data directory as a quicraft LevelDB store, and translating LevelDB's errors.

Rules of this module:
- A directory is opened only if it is empty (a new store is made there), or already a quicraft
  store of a format version this code reads. A directory holding other files, or another
  program's LevelDB database, is refused with a StorageError: it is never written to.
- LevelDB's LOCK is the only guard against two openers; a held lock becomes a LockedError.
- Every plyvel error leaves this package as a StorageError (CorruptionError when LevelDB
  reports corruption) with the path in its one-line message.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import plyvel  # type: ignore[import-untyped]  # no stubs; used through a few calls

from . import records as rec
from .base import CorruptionError, LockedError, StorageError

#: How LevelDB words a held lock ("IO error: lock <dir>/LOCK: already held by process" in
#: this process, "...: Resource temporarily unavailable" from another one).
_LOCK_ERROR = "IO error: lock "
_HELD_HERE = "already held by process"


def open_store(path: Path) -> plyvel.DB:
    """The store at `path`, made there if the directory is empty or missing."""
    try:
        _check_directory(path)
    except OSError as e:  # a directory on the way that this user may not enter, say
        raise StorageError(f"{path}: cannot open: {e.strerror or e}") from None
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        if path.is_symlink():  # to nothing: exists() said no, mkdir finds the link
            why = f"it is a symlink to {os.readlink(path)}, which does not exist"
        else:
            why = e.strerror or str(e)
        raise StorageError(f"{path}: cannot create the directory: {why}") from None
    try:
        db = plyvel.DB(
            str(path), create_if_missing=True, paranoid_checks=True, write_buffer_size=32 << 20
        )
    except OSError as e:
        message = text_of(e)
        if isinstance(e, plyvel.IOError) and message.startswith(_LOCK_ERROR):
            if _HELD_HERE in message:
                raise LockedError(
                    f"data directory {path} is already open in this process"
                ) from None
            raise LockedError(f"data directory {path} is in use by another process") from None
        raise StorageError(f"{path}: cannot open: {message}") from None
    except plyvel.CorruptionError as e:
        raise CorruptionError(f"{path}: LevelDB: {text_of(e)}") from None
    except plyvel.Error as e:
        raise StorageError(f"{path}: cannot open: {text_of(e)}") from None
    try:
        with translated(path):
            _check_version(db, path)
    except BaseException:
        db.close()
        raise
    return db


def _check_directory(path: Path) -> None:
    """Refuse a file, and a directory holding anything but a LevelDB database."""
    if path.exists() and not path.is_dir():
        raise StorageError(f"{path}: not a directory")
    if path.is_dir() and any(path.iterdir()) and not (path / "CURRENT").exists():
        if (path / "LOCK").exists() and any(path.glob("MANIFEST-*")):
            # LevelDB writes CURRENT last when it makes a database: a first start cut short
            # leaves this, and so does damage. Either way nothing here is touched.
            raise StorageError(
                f"{path}: a LevelDB database without its CURRENT file (a first start cut "
                "short, or damage); if this node never stored anything, remove the directory"
            )
        raise StorageError(f"{path}: not a quicraft data directory (it holds other files)")


def _check_version(db: plyvel.DB, path: Path) -> None:
    """Accept our own format, stamp an empty database as ours, refuse anything else."""
    raw = db.get(rec.VERSION_KEY, verify_checksums=True)
    if raw is None:
        if next(db.iterator(include_value=False, verify_checksums=True), None) is not None:
            raise StorageError(
                f"{path}: not a quicraft data directory (a foreign LevelDB database)"
            )
        db.put(rec.VERSION_KEY, rec.encode_version(), sync=True)
        return
    version = rec.decode_version(raw)
    if version is None:
        raise StorageError(f"{path}: not a quicraft data directory (a foreign LevelDB database)")
    if version != rec.FORMAT_VERSION:
        raise StorageError(
            f"{path}: storage format version {version} is not supported "
            f"(this quicraft reads version {rec.FORMAT_VERSION})"
        )


@contextmanager
def translated(path: Path) -> Iterator[None]:
    """Reads inside this block fail as storage errors naming `path`."""
    try:
        yield
    except rec.RecordError as e:
        raise CorruptionError(f"{path}: {e}") from None
    except plyvel.CorruptionError as e:
        raise CorruptionError(f"{path}: LevelDB: {text_of(e)}") from None
    except plyvel.Error as e:
        raise StorageError(f"{path}: {text_of(e)}") from None


def text_of(error: BaseException) -> str:
    """plyvel puts LevelDB's status in args as bytes; make it a plain line."""
    arg = error.args[0] if error.args else error
    text = arg.decode(errors="replace") if isinstance(arg, bytes) else str(arg)
    return " ".join(text.split())
