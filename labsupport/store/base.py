"""Keep movies, ratings and rebuild-task records, in memory or in SQLite.

Both backends implement `Store` and are thread-safe: the API server calls
them from its event-loop thread and from worker threads at the same time.
Ratings are read back sorted by `(user_id, movie_id)` whichever backend holds
them, so the two give identical results for the same writes.

Exceptions a store raises:

- `UnknownMovieError` when a rating names a movie that does not exist.
- `ValueError` for a non-finite score, a task without `task_id`, or a
  negative `limit`/`offset`.
- `TypeError` for a task record that JSON cannot serialise.
- `StoreUnavailableError` when a database server is out of reach (the API
  answers `503` with `Retry-After`); an embedded store never raises it.

This module holds the contract both backends follow, `Store`, and the
checks they share; `labsupport.store.memory` and `labsupport.store.sqlite`
implement it.
"""

from __future__ import annotations

import abc
import json
import math
import operator
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from labsupport._types import Movie, RatingArrays
from labsupport.errors import LabError

__all__ = ["MissingPostgresError", "Store", "StoreUnavailableError", "UnknownMovieError"]

_S = TypeVar("_S", bound="Store")


class UnknownMovieError(LookupError):
    """A rating named a movie id that is not in the catalogue."""


class StoreUnavailableError(LabError, ConnectionError):
    """The database server did not answer; the same call can succeed once it is back."""


class MissingPostgresError(LabError, ImportError):
    """A `postgresql://` store was asked for without the `postgres` extra installed."""


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
    def user_ratings(self, user_id: int) -> RatingArrays:
        """Return one user's current ratings as numpy columns, sorted by movie id.

        The cheap read for one user (no snapshot of every rating): what
        fold-in projects onto the serving model. A user with no ratings
        gets empty columns.

        Args:
            user_id: The user.
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
    def oldest_unseen_write(self, version: int) -> float | None:
        """When the oldest rating write after `ratings_version() == version` happened.

        A model built from the ratings at `version` has not seen that write:
        its age is how stale the model is.

        Returns:
            A Unix time in seconds, or `None` when nothing was written after
            `version` (or only before this store kept the times of writes).
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


# ------------------------------------------- checks and rows shared by both backends


def _row(user_id: int, movie_id: int, score: float) -> dict[str, int | float]:
    return {
        "user_id": user_id,
        "movie_id": movie_id,
        "score": int(score) if score.is_integer() else score,
    }


def _unknown_movie(movie_id: int) -> UnknownMovieError:
    return UnknownMovieError(f"movie {movie_id} does not exist; add it first or check the id")


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


_MERGE_MAX_SHARE = 0.05
"""More changed rows than this share of the cached table: a store re-reads it all."""


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


def _check_page(limit: int | None, offset: int) -> None:
    if offset < 0 or (limit is not None and limit < 0):
        msg = f"limit and offset must not be negative, got limit={limit!r}, offset={offset!r}"
        raise ValueError(msg)


def _task_json(task: Mapping[str, Any]) -> tuple[str, str]:
    if "task_id" not in task:
        msg = f"a task record needs a 'task_id' key; got keys {list(task)}"
        raise ValueError(msg)
    return str(task["task_id"]), json.dumps(dict(task))
