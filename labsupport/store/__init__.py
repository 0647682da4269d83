"""Keep movies, ratings and rebuild-task records, in memory, in SQLite or in PostgreSQL.

`open_store` picks the backend: `MemoryStore` (`labsupport.store.memory`)
for `None`, `PostgresStore` (`labsupport.store.postgres`, the `postgres`
extra) for a `postgresql://` URL, else `SQLiteStore`
(`labsupport.store.sqlite`) at a path. All implement `Store`
(`labsupport.store.base`), which documents every method and the exceptions
they raise. `demo_store` fills one with the demo data the notebooks share.
Every name is re-exported here; `PostgresStore` is imported on first use, so
psycopg is only needed by those who use it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from labsupport.data import CATALOGUE, demo_ratings
from labsupport.store.base import (
    MissingPostgresError,
    Store,
    StoreUnavailableError,
    UnknownMovieError,
)
from labsupport.store.memory import MemoryStore
from labsupport.store.sqlite import SQLiteStore

if TYPE_CHECKING:
    from labsupport.store.postgres import PostgresStore

__all__ = [
    "MemoryStore",
    "MissingPostgresError",
    "PostgresStore",
    "SQLiteStore",
    "Store",
    "StoreUnavailableError",
    "UnknownMovieError",
    "demo_store",
    "is_database_url",
    "open_store",
]

_URL_SCHEMES = ("postgresql://", "postgres://")


def is_database_url(target: str | os.PathLike[str] | None) -> bool:
    """Whether `target` names a database server (a `postgresql://` URL), not a file."""
    return isinstance(target, str) and target.startswith(_URL_SCHEMES)


def open_store(target: str | os.PathLike[str] | None) -> Store:
    """Open a store: in memory for `None`, PostgreSQL for a URL, else SQLite at a path.

    Args:
        target: `None`; a `postgresql://user@host:port/db` URL; or a
            database file (created if missing) or `":memory:"`.

    Returns:
        A `MemoryStore`, a `PostgresStore` or a `SQLiteStore`.

    Raises:
        MissingPostgresError: a URL was given without the `postgres` extra.
        StoreUnavailableError: no PostgreSQL server answers at the URL.
    """
    if target is None:
        return MemoryStore()
    if is_database_url(target):
        from labsupport.store.postgres import PostgresStore

        return PostgresStore(os.fspath(target))
    return SQLiteStore(target)


def __getattr__(name: str) -> object:
    """`PostgresStore`, imported when first asked for (it needs psycopg)."""
    if name == "PostgresStore":
        from labsupport.store.postgres import PostgresStore

        return PostgresStore
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


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
