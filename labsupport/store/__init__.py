"""Keep movies, ratings and rebuild-task records, in memory or in SQLite.

`open_store` picks the backend: `MemoryStore` (`labsupport.store.memory`)
for `None`, else `SQLiteStore` (`labsupport.store.sqlite`) at a path. Both
implement `Store` (`labsupport.store.base`), which documents every method
and the exceptions they raise. Every name is re-exported here.
"""

from __future__ import annotations

import os

from labsupport.store.base import Store, UnknownMovieError
from labsupport.store.memory import MemoryStore
from labsupport.store.sqlite import SQLiteStore

__all__ = ["MemoryStore", "SQLiteStore", "Store", "UnknownMovieError", "open_store"]


def open_store(path: str | os.PathLike[str] | None) -> Store:
    """Open a store: in memory for `None`, else SQLite at `path`.

    Args:
        path: A database file (created if missing), `":memory:"`, or `None`.

    Returns:
        A `MemoryStore` or a `SQLiteStore`.
    """
    return MemoryStore() if path is None else SQLiteStore(path)
