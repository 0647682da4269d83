"""`SQLiteStore`: movies, ratings and task records in one SQLite file.

The file survives a restart and can be read by other connections while the
server writes (WAL mode). Rating snapshots are cached and refreshed
incrementally: each rating row records the `ratings_version` it was written
at, so a reader re-reads only what changed since its last snapshot.
"""

from __future__ import annotations

import itertools
import json
import operator
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np

from labsupport._types import Movie, RatingArrays
from labsupport.store.base import (
    _MERGE_MAX_SHARE,
    Store,
    _check_page,
    _checked_columns,
    _checked_rating,
    _merge_sorted,
    _row,
    _task_json,
    _unknown_movie,
)

__all__ = ["SQLiteStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS movies (
    id INTEGER PRIMARY KEY, title TEXT NOT NULL, year INTEGER NOT NULL, genre TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS ratings (
    user_id INTEGER NOT NULL, movie_id INTEGER NOT NULL, score REAL NOT NULL,
    seq INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, movie_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS writes (version INTEGER PRIMARY KEY, written_at REAL NOT NULL);
INSERT OR IGNORE INTO counters VALUES ('ratings_version', 0);
"""
# seq: the ratings_version the row was last written at, so a reader holding
# the columns of version v re-reads only the rows with seq > v.
_UPSERT_RATING = (
    "INSERT INTO ratings (user_id, movie_id, score, seq) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (user_id, movie_id) DO UPDATE SET score = excluded.score, seq = excluded.seq"
)
_SEQ_INDEX = "CREATE INDEX IF NOT EXISTS ratings_by_seq ON ratings (seq)"
_SELECT_VERSION = "SELECT value FROM counters WHERE name = 'ratings_version'"
# writes: one row per write call, the version it reached and when (oldest_unseen_write)
_LOG_WRITE = "INSERT OR REPLACE INTO writes (version, written_at) VALUES (?, ?)"
_OLDEST_UNSEEN = "SELECT written_at FROM writes WHERE version > ? ORDER BY version LIMIT 1"
_BUMP_VERSION = "UPDATE counters SET value = value + ? WHERE name = 'ratings_version'"
_SELECT_RATINGS = "SELECT user_id, movie_id, score FROM ratings ORDER BY user_id, movie_id"
_SELECT_CHANGED = (
    "SELECT user_id, movie_id, score FROM ratings WHERE seq > ? ORDER BY user_id, movie_id"
)
# one user's rows: a range of the (user_id, movie_id) primary key, already in movie order
_SELECT_USER = "SELECT user_id, movie_id, score FROM ratings WHERE user_id = ? ORDER BY movie_id"
_RATING_DTYPE = np.dtype([("user_id", np.int64), ("movie_id", np.int64), ("score", np.float64)])


class SQLiteStore(Store):
    """Keep everything in one SQLite file (or `":memory:"`); survives a reopen.

    Thread safety is kept simple: one connection, opened with
    `check_same_thread=False`, and one lock held for every statement, so
    calls from different threads take turns.  Each write is its own
    transaction, committed before the method returns.  Methods are documented
    on `Store`.

    Args:
        path: The database file, created with its tables if missing.
    """

    def __init__(self, path: str | os.PathLike[str] = "labsupport.db") -> None:
        self.path = os.fspath(path)
        self._lock = threading.Lock()
        self._columns: tuple[int, RatingArrays] | None = None  # (ratings_version, columns)
        # isolation_level=None: no implicit transactions; _write() opens them.
        self._con = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            # WAL lets readers in other connections (a notebook) run during a write.
            self._con.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode syncs to disk at checkpoints, not every commit:
            # much faster commits, never corruption, but a power cut (not an app
            # crash) can lose the last few committed transactions.
            self._con.execute("PRAGMA synchronous=NORMAL")
            self._con.executescript(_SCHEMA)
            columns = [row[1] for row in self._con.execute("PRAGMA table_info(ratings)")]
            if "seq" not in columns:  # a file from before incremental reads
                self._con.execute("ALTER TABLE ratings ADD COLUMN seq INTEGER NOT NULL DEFAULT 0")
            self._con.execute(_SEQ_INDEX)
        except BaseException:
            self._con.close()
            raise

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._con.execute("BEGIN IMMEDIATE")
            try:
                yield self._con
            except BaseException:
                self._con.execute("ROLLBACK")
                raise
            self._con.execute("COMMIT")

    def _one(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        with self._lock:
            return self._con.execute(sql, params).fetchone()[0]

    def add_movie(self, title: str, year: int, genre: str) -> Movie:
        return self.add_movies([(title, year, genre)])[0]

    def add_movies(self, movies: Iterable[tuple[str, int, str]]) -> list[Movie]:
        items = list(movies)
        with self._write() as con:
            start = con.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM movies").fetchone()[0]
            new = [Movie(start + i, t, y, g) for i, (t, y, g) in enumerate(items)]
            con.executemany(
                "INSERT INTO movies (id, title, year, genre) VALUES (?, ?, ?, ?)",
                [(m.id, m.title, m.year, m.genre) for m in new],
            )
        return new

    def get_movie(self, movie_id: int) -> Movie | None:
        with self._lock:
            row = self._con.execute(
                "SELECT id, title, year, genre FROM movies WHERE id = ?", (movie_id,)
            ).fetchone()
        return None if row is None else Movie(*row)

    def list_movies(self, limit: int | None = None, offset: int = 0) -> list[Movie]:
        _check_page(limit, offset)
        sql = "SELECT id, title, year, genre FROM movies ORDER BY id LIMIT ? OFFSET ?"
        with self._lock:
            rows = self._con.execute(sql, (-1 if limit is None else limit, offset)).fetchall()
        return [Movie(*r) for r in rows]

    def count_movies(self) -> int:
        return int(self._one("SELECT COUNT(*) FROM movies"))

    def add_rating(self, user_id: int, movie_id: int, score: float) -> dict[str, int | float]:
        user, movie, value = _checked_rating(user_id, movie_id, score)
        with self._write() as con:
            if con.execute("SELECT 1 FROM movies WHERE id = ?", (movie,)).fetchone() is None:
                raise _unknown_movie(movie)
            con.execute(_BUMP_VERSION, (1,))
            seq = con.execute(_SELECT_VERSION).fetchone()[0]
            con.execute(_UPSERT_RATING, (user, movie, value, seq))
            con.execute(_LOG_WRITE, (seq, time.time()))
        return _row(user, movie, value)

    def add_ratings(self, ratings: RatingArrays) -> int:
        users, movies, scores = _checked_columns(ratings)
        n = len(users)
        if n == 0:
            return 0
        # Inserting in key order is ~3x faster than random order (B-tree pages
        # fill one after another).  lexsort is stable: repeats keep their order,
        # so the last one still wins.
        order = np.lexsort((movies, users))
        with self._write() as con:
            con.execute(_BUMP_VERSION, (n,))
            seq = con.execute(_SELECT_VERSION).fetchone()[0]
            rows = zip(
                users[order].tolist(),
                movies[order].tolist(),
                scores[order].tolist(),
                itertools.repeat(seq),
            )
            con.executemany(_UPSERT_RATING, rows)
            con.execute(_LOG_WRITE, (seq, time.time()))
        return n

    def list_ratings(self) -> list[dict[str, int | float]]:
        with self._lock:
            rows = self._con.execute(_SELECT_RATINGS).fetchall()
        return [_row(u, m, s) for u, m, s in rows]

    def rating_arrays(self) -> RatingArrays:
        """Return the ratings as columns, reading only what changed since last time.

        Turning a million rows into numpy arrays costs about half a second,
        more than the model build itself, so the columns are cached with the
        `ratings_version` they were read at. After a write, only the rows
        written since (`seq` greater than the cached version) are read and
        merged in; a full re-read happens the first time, or when more than
        5 % of the table changed. The counter lives in the same file, so
        writes from other connections (another server process) are seen
        too. The cached arrays are read-only, since every caller shares them.
        """
        with self._lock:
            self._con.execute("BEGIN")  # one read transaction: one consistent snapshot
            try:
                version = self._con.execute(_SELECT_VERSION).fetchone()[0]
                cached = self._columns
                if cached is not None and cached[0] == version:
                    return cached[1]
                if cached is not None and version - cached[0] <= _MERGE_MAX_SHARE * len(cached[1]):
                    changed = self._fetch(_SELECT_CHANGED, (cached[0],))
                    columns = _merge_sorted(cached[1], changed)
                else:
                    columns = self._fetch(_SELECT_RATINGS)
            finally:
                self._con.execute("COMMIT")
            for array in (columns.user_ids, columns.movie_ids, columns.scores):
                array.flags.writeable = False
            self._columns = (version, columns)
            return columns

    def _fetch(self, sql: str, params: tuple[Any, ...] = ()) -> RatingArrays:
        table = np.fromiter(self._con.execute(sql, params), dtype=_RATING_DTYPE)
        return RatingArrays.from_columns(table["user_id"], table["movie_id"], table["score"])

    def user_ratings(self, user_id: int) -> RatingArrays:
        """Return one user's ratings straight from the file (no cache).

        Other connections (another server process) write to the same file,
        so a cached copy could be stale; the read is one primary-key range.
        """
        with self._lock:
            return self._fetch(_SELECT_USER, (operator.index(user_id),))

    def count_ratings(self) -> int:
        return int(self._one("SELECT COUNT(*) FROM ratings"))

    def count_users(self) -> int:
        return int(self._one("SELECT COUNT(DISTINCT user_id) FROM ratings"))

    def ratings_version(self) -> int:
        return int(self._one(_SELECT_VERSION))

    def oldest_unseen_write(self, version: int) -> float | None:
        with self._lock:
            row = self._con.execute(_OLDEST_UNSEEN, (version,)).fetchone()
        return None if row is None else float(row[0])

    def save_task(self, task: Mapping[str, Any]) -> None:
        task_id, data = _task_json(task)
        with self._write() as con:
            con.execute(
                "INSERT INTO tasks (task_id, seq, data) "
                "VALUES (?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM tasks), ?) "
                "ON CONFLICT (task_id) DO UPDATE SET data = excluded.data",
                (task_id, data),
            )

    def load_tasks(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._con.execute("SELECT data FROM tasks ORDER BY seq").fetchall()
        return [json.loads(data) for (data,) in rows]

    def close(self) -> None:
        with self._lock:
            self._con.close()
