"""Keep movies, ratings and rebuild-task records, in memory or in SQLite.

Both backends implement `Store` and are thread-safe: the API server calls
them from its event-loop thread and from worker threads at the same time.
Ratings are read back sorted by `(user_id, movie_id)` whichever backend holds
them, so the two give identical results for the same writes.

Exceptions raised here:

- `UnknownMovieError` when a rating names a movie that does not exist.
- `ValueError` for a non-finite score, a task without `task_id`, or a
  negative `limit`/`offset`.
- `TypeError` for a task record that JSON cannot serialise.
"""

from __future__ import annotations

import abc
import itertools
import json
import math
import operator
import os
import sqlite3
import threading
from collections.abc import Hashable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from itertools import compress, repeat
from types import TracebackType
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from labsupport._types import Movie, RatingArrays

__all__ = ["MemoryStore", "SQLiteStore", "Store", "UnknownMovieError", "open_store"]

_S = TypeVar("_S", bound="Store")


class UnknownMovieError(LookupError):
    """A rating named a movie id that is not in the catalogue."""


class Store(abc.ABC):
    """The repository interface: movies, ratings and rebuild-task records.

    Use a store as a context manager (`with open_store(path) as store:`) so
    it is closed when the block ends.
    """

    @abc.abstractmethod
    def add_movie(self, title: str, year: int, genre: str) -> Movie:
        """Add one movie; ids are assigned 1, 2, 3, ... in insertion order.

        Args:
            title: Display title.
            year: Release year.
            genre: Genre label.

        Returns:
            The stored movie, with its new id.
        """

    @abc.abstractmethod
    def add_movies(self, movies: Iterable[tuple[str, int, str]]) -> list[Movie]:
        """Add many `(title, year, genre)` movies at once (one transaction).

        Args:
            movies: The movies to add, in the order their ids are assigned.

        Returns:
            The stored movies, in input order.
        """

    @abc.abstractmethod
    def get_movie(self, movie_id: int) -> Movie | None:
        """Return the movie with this id, or `None` if there is none.

        Args:
            movie_id: The id to look up.
        """

    @abc.abstractmethod
    def list_movies(self, limit: int | None = None, offset: int = 0) -> list[Movie]:
        """Return movies ordered by id, skipping `offset` and at most `limit`.

        Args:
            limit: Largest number of movies to return; `None` for all.
            offset: Number of movies to skip first.

        Raises:
            ValueError: If `limit` or `offset` is negative.
        """

    @abc.abstractmethod
    def count_movies(self) -> int:
        """Return the number of movies."""

    @abc.abstractmethod
    def add_rating(self, user_id: int, movie_id: int, score: float) -> dict[str, int | float]:
        """Record one rating, replacing the user's earlier score for that movie.

        The write is durable when this returns (committed, in SQLite).

        Args:
            user_id: Who rated.
            movie_id: Which movie; it must exist.
            score: The score (any finite number; the API checks the range).

        Returns:
            The stored row `{"user_id", "movie_id", "score"}`, with a whole
            score as an `int`.

        Raises:
            UnknownMovieError: If there is no movie with `movie_id`.
            ValueError: If `score` is NaN or infinite.
        """

    @abc.abstractmethod
    def add_ratings(self, ratings: RatingArrays) -> int:
        """Upsert many ratings at once: the fast path for loading a data set.

        A pair `(user_id, movie_id)` that is already stored, or that repeats
        inside the batch, ends with the last score given.  Unlike
        `add_rating`, movie ids are *not* checked against the catalogue
        (that would cost a lookup per rating); load the movies first.

        Args:
            ratings: The ratings to write.

        Returns:
            The number of rows applied (`len(ratings)`; repeats each count).

        Raises:
            ValueError: If any score is NaN or infinite; nothing is written.
        """

    @abc.abstractmethod
    def list_ratings(self) -> list[dict[str, int | float]]:
        """Return every rating as `{"user_id", "movie_id", "score"}` rows.

        Rows are sorted by `(user_id, movie_id)`; whole scores are `int`.
        For more than a few thousand ratings prefer `rating_arrays`.
        """

    @abc.abstractmethod
    def rating_arrays(self) -> RatingArrays:
        """Return every rating as numpy columns, sorted by `(user_id, movie_id)`.

        The arrays are a consistent snapshot and a copy: later writes do not
        change them.
        """

    @abc.abstractmethod
    def count_ratings(self) -> int:
        """Return the number of stored ratings (one per user and movie)."""

    @abc.abstractmethod
    def count_users(self) -> int:
        """Return the number of distinct users who have rated something."""

    @abc.abstractmethod
    def ratings_version(self) -> int:
        """Return a counter that grows by one for every rating row written.

        Subtract the value seen at the last model build to get "ratings added
        since the last build".  It starts at 0 and survives a reopen.
        """

    @abc.abstractmethod
    def save_task(self, task: Mapping[str, Any]) -> None:
        """Insert or replace a task record, keyed by `task["task_id"]`.

        Records are stored as JSON, so `load_tasks` returns plain JSON
        values (a tuple comes back as a list).  Replacing a record keeps its
        place in the order.

        Args:
            task: A JSON-serialisable mapping with a `"task_id"` key.

        Raises:
            ValueError: If `task` has no `"task_id"`.
            TypeError: If `task` cannot be serialised to JSON.
        """

    @abc.abstractmethod
    def load_tasks(self) -> list[dict[str, Any]]:
        """Return fresh copies of all task records, in first-saved order."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the store's resources; calling it twice is harmless."""

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def open_store(path: str | os.PathLike[str] | None) -> Store:
    """Open a store: in memory for `None`, else SQLite at `path`.

    Args:
        path: A database file (created if missing), `":memory:"`, or `None`.

    Returns:
        A `MemoryStore` or a `SQLiteStore`.
    """
    return MemoryStore() if path is None else SQLiteStore(path)


# ---------------------------------------------------------------- helpers


def _row(user_id: int, movie_id: int, score: float) -> dict[str, int | float]:
    return {
        "user_id": user_id,
        "movie_id": movie_id,
        "score": int(score) if score.is_integer() else score,
    }


def _checked_rating(user_id: int, movie_id: int, score: float) -> tuple[int, int, float]:
    value = float(score)
    if not math.isfinite(value):
        msg = f"score must be a finite number, got {score!r}"
        raise ValueError(msg)
    # operator.index accepts numpy ints (sqlite3 cannot bind them) but not 3.7.
    return operator.index(user_id), operator.index(movie_id), value


def _checked_columns(
    ratings: RatingArrays,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    users = np.asarray(ratings.user_ids, dtype=np.int64)
    movies = np.asarray(ratings.movie_ids, dtype=np.int64)
    scores = np.asarray(ratings.scores, dtype=np.float32)
    bad = np.flatnonzero(~np.isfinite(scores))
    if bad.size:
        i = int(bad[0])
        msg = (
            f"scores must be finite numbers, but {bad.size} are not; the first is "
            f"ratings[{i}] (user {int(users[i])}, movie {int(movies[i])}) with score "
            f"{float(scores[i])!r}. Drop or fix those rows before loading."
        )
        raise ValueError(msg)
    return users, movies, scores


def _check_page(limit: int | None, offset: int) -> None:
    if offset < 0 or (limit is not None and limit < 0):
        msg = f"limit and offset must not be negative, got limit={limit!r}, offset={offset!r}"
        raise ValueError(msg)


def _pair_key(user_id: int, movie_id: int) -> Hashable:
    # One int per pair (cheaper than a tuple in a million-entry dict); the
    # tuple fallback keeps unusual ids correct.  Both forms are functions of
    # the pair alone, so a pair always gets the same key.
    return (user_id << 32) | movie_id if 0 <= movie_id < 1 << 32 else (user_id, movie_id)


def _pair_keys(users: npt.NDArray[np.int64], movies: npt.NDArray[np.int64]) -> list[Hashable]:
    """Vectorised `_pair_key`, when the int form fits in int64."""
    fits = (
        users.size > 0
        and movies.min() >= 0
        and movies.max() < 1 << 32
        and users.min() >= -(1 << 31)
        and users.max() < 1 << 31
    )
    if fits:
        return list(((users << 32) | movies).tolist())
    return [_pair_key(u, m) for u, m in zip(users.tolist(), movies.tolist(), strict=True)]


def _task_json(task: Mapping[str, Any]) -> tuple[str, str]:
    if "task_id" not in task:
        msg = f"a task record needs a 'task_id' key; got keys {list(task)}"
        raise ValueError(msg)
    return str(task["task_id"]), json.dumps(dict(task))


# ---------------------------------------------------------------- memory


class MemoryStore(Store):
    """Keep everything in this process; one re-entrant lock guards it all.

    Ratings live in growing numpy columns (capacity doubles, so appends are
    amortised O(1)) with a dict from `(user, movie)` to row index for
    upserts.  Bulk loads update that dict through `map`/`zip`, so no Python
    bytecode runs per rating.  `close` does nothing; the data stays.
    Methods are documented on `Store`.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._movies: list[Movie] = []
        self._index: dict[Hashable, int] = {}
        self._user_set: set[int] = set()
        self._users = np.empty(0, dtype=np.int64)
        self._movie_ids = np.empty(0, dtype=np.int64)
        self._scores = np.empty(0, dtype=np.float64)  # float64 keeps 3.7 as given
        self._n = 0
        self._version = 0
        self._columns: tuple[int, RatingArrays] | None = None  # (version, sorted columns)
        self._tasks: dict[str, str] = {}  # task_id -> JSON, insertion-ordered

    def add_movie(self, title: str, year: int, genre: str) -> Movie:
        return self.add_movies([(title, year, genre)])[0]

    def add_movies(self, movies: Iterable[tuple[str, int, str]]) -> list[Movie]:
        items = list(movies)
        with self._lock:
            start = len(self._movies) + 1
            new = [Movie(start + i, t, y, g) for i, (t, y, g) in enumerate(items)]
            self._movies.extend(new)
        return new

    def get_movie(self, movie_id: int) -> Movie | None:
        with self._lock:
            return self._movies[movie_id - 1] if 1 <= movie_id <= len(self._movies) else None

    def list_movies(self, limit: int | None = None, offset: int = 0) -> list[Movie]:
        _check_page(limit, offset)
        with self._lock:
            stop = None if limit is None else offset + limit
            return self._movies[offset:stop]

    def count_movies(self) -> int:
        with self._lock:
            return len(self._movies)

    def _reserve(self, extra: int) -> None:
        need = self._n + extra
        if need <= len(self._users):
            return
        capacity = max(need, 2 * len(self._users), 1024)
        for name in ("_users", "_movie_ids", "_scores"):
            old = getattr(self, name)
            grown = np.empty(capacity, dtype=old.dtype)
            grown[: self._n] = old[: self._n]
            setattr(self, name, grown)

    def add_rating(self, user_id: int, movie_id: int, score: float) -> dict[str, int | float]:
        user, movie, value = _checked_rating(user_id, movie_id, score)
        key = _pair_key(user, movie)
        with self._lock:
            if not 1 <= movie <= len(self._movies):
                msg = f"movie {movie} does not exist; add it first or check the id"
                raise UnknownMovieError(msg)
            i = self._index.get(key)
            if i is None:
                self._reserve(1)
                i = self._index[key] = self._n
                self._users[i], self._movie_ids[i] = user, movie
                self._user_set.add(user)
                self._n += 1
            self._scores[i] = value
            self._version += 1
        return _row(user, movie, value)

    def add_ratings(self, ratings: RatingArrays) -> int:
        users, movies, scores = _checked_columns(ratings)
        n = len(users)
        if n == 0:
            return 0
        # Repeated keys keep their first position and their last row number.
        batch = dict(zip(_pair_keys(users, movies), range(n), strict=True))
        src = np.fromiter(batch.values(), dtype=np.int64, count=len(batch))
        with self._lock:
            pos = np.fromiter(
                map(self._index.get, batch.keys(), repeat(-1)), dtype=np.int64, count=len(batch)
            )
            old = pos >= 0
            self._scores[pos[old]] = scores[src[old]]
            fresh = src[~old]
            start, stop = self._n, self._n + len(fresh)
            self._reserve(len(fresh))
            self._users[start:stop] = users[fresh]
            self._movie_ids[start:stop] = movies[fresh]
            self._scores[start:stop] = scores[fresh]
            new_keys = compress(batch.keys(), (~old).tolist())
            self._index.update(zip(new_keys, range(start, stop), strict=True))
            self._user_set.update(users[fresh].tolist())
            self._n = stop
            self._version += n
        return n

    def _sorted_columns(
        self,
    ) -> tuple[int, npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """Return the ratings version and the columns at that version, sorted by (user, movie)."""
        with self._lock:
            version = self._version
            users = self._users[: self._n].copy()
            movies = self._movie_ids[: self._n].copy()
            scores = self._scores[: self._n].copy()
        order = np.lexsort((movies, users))  # sort outside the lock
        return version, users[order], movies[order], scores[order]

    def list_ratings(self) -> list[dict[str, int | float]]:
        _, users, movies, scores = self._sorted_columns()
        rows = zip(users.tolist(), movies.tolist(), scores.tolist(), strict=True)
        return [_row(u, m, s) for u, m, s in rows]

    def rating_arrays(self) -> RatingArrays:
        """Return the sorted columns, sorted again only after a write.

        Sorting a million ratings takes about a tenth of a second, and a
        service asks at every rebuild; the result is cached with the version
        it was made at, and read-only, since every caller shares it.
        """
        with self._lock:
            cached = self._columns
            if cached is not None and cached[0] == self._version:
                return cached[1]
        version, users, movies, scores = self._sorted_columns()
        columns = RatingArrays.from_columns(users, movies, scores)
        for array in (columns.user_ids, columns.movie_ids, columns.scores):
            array.flags.writeable = False
        with self._lock:
            if self._columns is None or self._columns[0] < version:
                self._columns = (version, columns)
        return columns

    def count_ratings(self) -> int:
        with self._lock:
            return self._n

    def count_users(self) -> int:
        with self._lock:
            return len(self._user_set)

    def ratings_version(self) -> int:
        with self._lock:
            return self._version

    def save_task(self, task: Mapping[str, Any]) -> None:
        task_id, data = _task_json(task)
        with self._lock:
            self._tasks[task_id] = data

    def load_tasks(self) -> list[dict[str, Any]]:
        with self._lock:
            texts = list(self._tasks.values())
        return [json.loads(t) for t in texts]

    def close(self) -> None:
        pass


# ---------------------------------------------------------------- SQLite

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
_BUMP_VERSION = "UPDATE counters SET value = value + ? WHERE name = 'ratings_version'"
_SELECT_RATINGS = "SELECT user_id, movie_id, score FROM ratings ORDER BY user_id, movie_id"
_SELECT_CHANGED = (
    "SELECT user_id, movie_id, score FROM ratings WHERE seq > ? ORDER BY user_id, movie_id"
)
_MERGE_MAX_SHARE = 0.05  # more changed rows than this share of the table: re-read it all
_RATING_DTYPE = np.dtype([("user_id", np.int64), ("movie_id", np.int64), ("score", np.float64)])


def _merge_sorted(base: RatingArrays, changed: RatingArrays) -> RatingArrays:
    """Merge `changed` rows into `base`, both sorted by (user, movie); new scores win.

    Rows whose (user, movie) pair is in `base` get their new score; the
    others are inserted where they keep the order.
    """
    users, movies = base.user_ids, base.movie_ids
    lo = np.searchsorted(users, changed.user_ids, side="left")
    hi = np.searchsorted(users, changed.user_ids, side="right")
    # within each user's run, find the movie (runs are short: a Python loop is fine)
    at = np.array(
        [
            start + int(np.searchsorted(movies[start:stop], movie))
            for start, stop, movie in zip(
                lo.tolist(), hi.tolist(), changed.movie_ids.tolist(), strict=True
            )
        ],
        dtype=np.intp,
    )
    found = at < hi
    found[found] = movies[at[found]] == changed.movie_ids[found]
    scores = base.scores.copy()  # the cached columns may be in use by a running build
    scores[at[found]] = changed.scores[found]
    new = ~found
    return RatingArrays(
        np.insert(users, at[new], changed.user_ids[new]),
        np.insert(movies, at[new], changed.movie_ids[new]),
        np.insert(scores, at[new], changed.scores[new]),
    )


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
                msg = f"movie {movie} does not exist; add it first or check the id"
                raise UnknownMovieError(msg)
            con.execute(_BUMP_VERSION, (1,))
            seq = con.execute(_SELECT_VERSION).fetchone()[0]
            con.execute(_UPSERT_RATING, (user, movie, value, seq))
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

    def count_ratings(self) -> int:
        return int(self._one("SELECT COUNT(*) FROM ratings"))

    def count_users(self) -> int:
        return int(self._one("SELECT COUNT(DISTINCT user_id) FROM ratings"))

    def ratings_version(self) -> int:
        return int(self._one(_SELECT_VERSION))

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
