"""Opening a data directory as a quicraft LevelDB store, and translating LevelDB's errors.

Rules of this module:
- A directory is opened only if it is empty (a new store is made there), or already a quicraft
  store of a format version this code reads. A directory holding other files, or another
  program's LevelDB database, is refused with a StorageError: it is never written to.
- A LevelDB database that lost files LevelDB does not miss (its write-ahead log, or every
  record) is refused too: LevelDB would open it as it was before the writes they held, and
  a store read as older or as new serves forgotten votes and entries, or founds anew.
- LevelDB's LOCK is the only guard against two openers; a held lock becomes a LockedError.
- Every plyvel error leaves this package as a StorageError (CorruptionError when LevelDB
  reports corruption) with the path in its one-line message.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import plyvel  # type: ignore[import-untyped]  # no stubs; used through a few calls

from . import records as rec
from .base import CorruptionError, LockedError, StorageError

#: How LevelDB words a held lock ("IO error: lock <dir>/LOCK: already held by process" in
#: this process, "...: Resource temporarily unavailable" from another one).
_LOCK_ERROR = "IO error: lock "
_HELD_HERE = "already held by process"
#: LevelDB's write-ahead log files ("000003.log"); one is there from the moment the database
#: is opened (LevelDB makes a new one before it forgets the old one).
_WRITE_AHEAD_LOG = re.compile(r"[0-9]+\.log")
#: Every file LevelDB makes in its directory.
_LEVELDB_FILE = re.compile(r"LOCK|LOG|LOG\.old|CURRENT|MANIFEST-[0-9]+|[0-9]+\.(log|ldb|sst|dbtmp)")
_LOST = "restore the directory from a backup (if this node never stored anything, remove it)"


def open_store(path: Path) -> plyvel.DB:
    """The store at `path`, made there if the directory is empty or missing."""
    try:
        existing = _check_directory(path)
    except OSError as e:  # a directory on the way that this user may not enter, say
        raise StorageError(f"{path}: cannot open: {e.strerror or e}") from None
    try:
        # 0700: the store holds every value (a backup file, 0600, too); LevelDB makes its
        # files 0644. Parents are left to the umask, a directory that exists as it is.
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        if path.is_symlink():  # to nothing or round a loop: exists() said no, mkdir finds it
            where = "the symlinks from there lead round in a loop" if _loops(path) else None
            why = f"it is a symlink to {os.readlink(path)}, {where or 'which does not exist'}"
        else:
            why = e.strerror or str(e)
        raise StorageError(f"{path}: cannot create the directory: {why}") from None
    try:
        db = _open_leveldb(path)
        try:
            with translated(path):
                _check_version(db, path, existing)
        except BaseException:
            db.close()
            raise
    except StorageError as e:
        if not existing and not isinstance(e, LockedError):
            # A store that could not be made (a full disk, say) is taken back: what LevelDB
            # made of it would read as damage, and the start after space is freed would fail.
            _remove_leveldb_files(path)
        raise
    return db


def _open_leveldb(path: Path) -> plyvel.DB:
    try:
        return plyvel.DB(  # bytes: plyvel refuses a str name that is not valid UTF-8
            os.fsencode(path),
            create_if_missing=True,
            paranoid_checks=True,
            write_buffer_size=32 << 20,
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


def _remove_leveldb_files(path: Path) -> None:
    """Remove the files LevelDB makes from `path`, which was empty or missing before."""
    with suppress(OSError):
        for child in path.iterdir():
            if _LEVELDB_FILE.fullmatch(child.name):
                with suppress(OSError):
                    child.unlink()


def _check_directory(path: Path) -> bool:
    """Refuse a file, and a directory holding anything but a whole LevelDB database; True
    when it holds a database (False: missing or empty, a new store goes there)."""
    if path.exists() and not path.is_dir():
        raise StorageError(f"{path}: not a directory")
    if not path.is_dir() or not any(path.iterdir()):
        return False
    if (path / "CURRENT").exists():
        names = [p.name for p in path.iterdir()]
        manifest = any(name.startswith("MANIFEST-") for name in names)
        if manifest and not any(_WRITE_AHEAD_LOG.fullmatch(name) for name in names):
            # LevelDB would take the writes since its last table file for never made, and
            # make a new log at once: refused before it opens, the loss stays visible.
            raise StorageError(
                f"{path}: LevelDB's write-ahead log (NNNNNN.log) is missing, and with it "
                f"the latest writes; {_LOST}"
            )
        return True
    if (path / "LOCK").exists() and any(path.glob("MANIFEST-*")):
        # LevelDB writes CURRENT last when it makes a database: a first start cut short
        # leaves this, and so does damage. Either way nothing here is touched.
        raise StorageError(
            f"{path}: a LevelDB database without its CURRENT file (a first start cut "
            "short, or damage); if this node never stored anything, remove the directory"
        )
    raise StorageError(f"{path}: not a quicraft data directory (it holds other files)")


def _loops(path: Path) -> bool:
    try:
        os.stat(path)
    except OSError as e:
        return e.errno == errno.ELOOP
    return False


def _check_version(db: plyvel.DB, path: Path, existing: bool) -> None:
    """Accept our own format, stamp a database made just now as ours, refuse anything else."""
    raw = db.get(rec.VERSION_KEY, verify_checksums=True)
    if raw is None:
        if next(db.iterator(include_value=False, verify_checksums=True), None) is not None:
            if _holds_our_records(db):
                raise CorruptionError(
                    f"{path}: format version: missing, but the database holds quicraft "
                    f"records; {_LOST}"
                )
            raise StorageError(
                f"{path}: not a quicraft data directory (a foreign LevelDB database)"
            )
        if existing:  # ours are stamped when made: this one is not, or lost every record
            raise StorageError(
                f"{path}: an empty LevelDB database, not a quicraft store (a first start cut "
                f"short, another program's, or a store whose files were lost); {_LOST}"
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


def _holds_our_records(db: plyvel.DB) -> bool:
    """Whether the hard state, the snapshot record, the first log entry or the first
    metadata record (all a node that never joined holds) is there with a checksum of ours:
    then the store lost its version record, it is not another program's."""
    records = []
    for prefix in (rec.ENTRY_PREFIX, rec.META_PREFIX):
        with db.iterator(prefix=prefix, verify_checksums=True) as found:
            records.append(next(found, (prefix, None)))
    for key in (rec.HARD_STATE_KEY, rec.SNAPSHOT_KEY):
        records.append((key, db.get(key, verify_checksums=True)))
    for key, value in records:
        if value is None:
            continue
        try:
            rec.unseal(key, value, "record")
        except rec.RecordError:
            continue
        return True
    return False


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
