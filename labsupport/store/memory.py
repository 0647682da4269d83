"""`MemoryStore`: movies, ratings and task records kept in this process.

Nothing survives the process; use it for tests, notebooks and the `--demo`
server. Ratings live in numpy columns, so bulk loads and snapshots cost no
Python loop per rating.
"""

from __future__ import annotations

import bisect
import json
import threading
import time
from array import array as typed_array
from collections.abc import Hashable, Iterable, Mapping
from itertools import compress, repeat
from typing import Any

import numpy as np
import numpy.typing as npt

from labsupport._types import Movie, RatingArrays
from labsupport.store.base import (
    Store,
    _check_page,
    _checked_columns,
    _checked_rating,
    _row,
    _task_json,
    _unknown_movie,
)

__all__ = ["MemoryStore"]


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
        # user -> their row numbers, in chunks (joined on read): user_ratings, count_users
        self._rows_of: dict[int, list[npt.NDArray[np.int64]]] = {}
        self._users = np.empty(0, dtype=np.int64)
        self._movie_ids = np.empty(0, dtype=np.int64)
        self._scores = np.empty(0, dtype=np.float64)  # float64 keeps 3.7 as given
        self._n = 0
        self._version = 0
        self._columns: tuple[int, RatingArrays] | None = None  # (version, sorted columns)
        # One entry per write call: the version it reached, and when (oldest_unseen_write).
        self._write_versions = typed_array("q")
        self._write_times = typed_array("d")
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
                raise _unknown_movie(movie)
            i = self._index.get(key)
            if i is None:
                self._reserve(1)
                i = self._index[key] = self._n
                self._users[i], self._movie_ids[i] = user, movie
                self._rows_of.setdefault(user, []).append(np.array([i], dtype=np.int64))
                self._n += 1
            self._scores[i] = value
            self._version += 1
            self._log_write()
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
            self._group_rows(users[fresh], start)
            self._n = stop
            self._version += n
            self._log_write()
        return n

    def _log_write(self) -> None:
        """Remember when the write that reached the current version happened (lock held)."""
        self._write_versions.append(self._version)
        self._write_times.append(time.time())

    def oldest_unseen_write(self, version: int) -> float | None:
        with self._lock:
            i = bisect.bisect_right(self._write_versions, version)
            return self._write_times[i] if i < len(self._write_times) else None

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

    def _group_rows(self, users: npt.NDArray[np.int64], start: int) -> None:
        """File the new rows `start, start + 1, ...` of `users` under each user (lock held)."""
        if len(users) == 0:  # the batch only replaced scores
            return
        order = np.argsort(users, kind="stable")
        distinct, first = np.unique(users[order], return_index=True)
        rows = (order + start).astype(np.int64)
        for user, chunk in zip(distinct.tolist(), np.split(rows, first[1:]), strict=True):
            self._rows_of.setdefault(user, []).append(chunk)

    def user_ratings(self, user_id: int) -> RatingArrays:
        with self._lock:
            chunks = self._rows_of.get(user_id, [])
            if len(chunks) > 1:  # join once; later reads take the one chunk
                chunks[:] = [np.concatenate(chunks)]
            rows = chunks[0] if chunks else np.zeros(0, dtype=np.int64)
            movies, scores = self._movie_ids[rows], self._scores[rows]  # copies
        order = np.argsort(movies, kind="stable")
        return RatingArrays.from_columns(
            np.full(len(rows), user_id, dtype=np.int64), movies[order], scores[order]
        )

    def count_users(self) -> int:
        with self._lock:
            return len(self._rows_of)

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
