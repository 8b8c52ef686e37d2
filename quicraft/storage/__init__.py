"""Durable storage of a node's hard state, log and snapshot; see docs/storage.md.

`MemoryStorage` is the reference backend (tests, throw-away nodes); `LevelDBStorage` keeps a
data directory with one LevelDB database. Both keep the `Storage` contract.

Exceptions:

    StorageError         the store cannot be used (not a quicraft store, unknown format, I/O)
    ├── CorruptionError  a record failed its checksum, or the records do not fit together
    └── LockedError      the data directory is already open (another process, or this one)
"""

from .base import CorruptionError, LockedError, Storage, StorageError, check_hard_state
from .leveldb import LevelDBStorage
from .memory import MemoryStorage
from .records import CHUNK_SIZE, FORMAT_VERSION

__all__ = [
    "CHUNK_SIZE",
    "FORMAT_VERSION",
    "CorruptionError",
    "LevelDBStorage",
    "LockedError",
    "MemoryStorage",
    "Storage",
    "StorageError",
    "check_hard_state",
]
