"""Keep movies, ratings and rebuild-task records, in memory or in SQLite.

`open_store` picks the backend: `MemoryStore` (`labsupport.store.memory`)
for `None`, else `SQLiteStore` (`labsupport.store.sqlite`) at a path. Both
implement `Store` (`labsupport.store.base`), which documents every method
and the exceptions they raise. `demo_store` fills one with the demo data the
notebooks share. Every name is re-exported here.
"""

from __future__ import annotations

import os

from labsupport.data import CATALOGUE, demo_ratings
from labsupport.store.base import Store, UnknownMovieError
from labsupport.store.memory import MemoryStore
from labsupport.store.sqlite import SQLiteStore

__all__ = ["MemoryStore", "SQLiteStore", "Store", "UnknownMovieError", "demo_store", "open_store"]


def open_store(path: str | os.PathLike[str] | None) -> Store:
    """Open a store: in memory for `None`, else SQLite at `path`.

    Args:
        path: A database file (created if missing), `":memory:"`, or `None`.

    Returns:
        A `MemoryStore` or a `SQLiteStore`.
    """
    return MemoryStore() if path is None else SQLiteStore(path)


def demo_store(store: Store | None = None, *, n_users: int = 40, seed: int = 0) -> Store:
    """Fill a store with the 72 catalogue films and the seeded demo ratings.

    Args:
        store: The store to fill; a new `MemoryStore` when None.
        n_users: Users in the demo ratings.
        seed: Seeds the ratings: the same seed gives the same ratings.

    Returns:
        The filled store (the same object when one was given).
    """
    target = MemoryStore() if store is None else store
    target.add_movies(CATALOGUE)
    target.add_ratings(demo_ratings(n_users=n_users, seed=seed))
    return target
