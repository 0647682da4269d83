"""Tests for labsupport.store: every behaviour runs on every backend.

The PostgreSQL runs use a throwaway server (see conftest) and skip without one.
"""

from __future__ import annotations

import math
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from labsupport._types import Movie, RatingArrays
from labsupport.store import MemoryStore, SQLiteStore, Store, UnknownMovieError, open_store


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s: Store
    if request.param == "postgres":
        s = open_store(request.getfixturevalue("postgres_url"))
    else:
        s = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "t.db")
    with s:
        yield s


def add_n_movies(store: Store, n: int) -> list[Movie]:
    return store.add_movies((f"Movie {i}", 2000 + i, "Drama") for i in range(n))


def arrays(users: list[int], movies: list[int], scores: list[float]) -> RatingArrays:
    return RatingArrays.from_columns(users, movies, scores)


def as_dict(store: Store) -> dict[tuple[int, int], float]:
    return {(int(r["user_id"]), int(r["movie_id"])): r["score"] for r in store.list_ratings()}


# ---------------------------------------------------------------- movies


def test_movie_ids_are_sequential(store: Store) -> None:
    first = store.add_movie("Heat", 1995, "Crime")
    bulk = store.add_movies([("Up", 2009, "Animation"), ("Alien", 1979, "Horror")])
    assert first == Movie(1, "Heat", 1995, "Crime")
    assert [m.id for m in bulk] == [2, 3]
    assert store.add_movie("Tron", 1982, "Sci-Fi").id == 4
    assert store.count_movies() == 4


def test_get_and_list_movies(store: Store) -> None:
    movies = add_n_movies(store, 5)
    assert store.get_movie(3) == movies[2]
    assert store.get_movie(0) is None
    assert store.get_movie(99) is None
    assert store.list_movies() == movies
    assert store.list_movies(limit=2) == movies[:2]
    assert store.list_movies(limit=2, offset=3) == movies[3:5]
    assert store.list_movies(offset=4) == movies[4:]
    assert store.list_movies(limit=0) == []
    assert store.list_movies(offset=10) == []
    with pytest.raises(ValueError, match="negative"):
        store.list_movies(offset=-1)


# ---------------------------------------------------------------- single ratings


def test_add_rating_upserts(store: Store) -> None:
    add_n_movies(store, 2)
    assert store.add_rating(7, 1, 4) == {"user_id": 7, "movie_id": 1, "score": 4}
    assert store.add_rating(7, 1, 2.5) == {"user_id": 7, "movie_id": 1, "score": 2.5}
    store.add_rating(8, 1, 5)
    assert store.count_ratings() == 2
    assert store.count_users() == 2
    assert as_dict(store) == {(7, 1): 2.5, (8, 1): 5}


def test_add_rating_unknown_movie(store: Store) -> None:
    add_n_movies(store, 1)
    with pytest.raises(UnknownMovieError, match="movie 42"):
        store.add_rating(1, 42, 3)
    assert store.count_ratings() == 0
    assert store.ratings_version() == 0
    store.add_rating(1, 1, 3)  # the failed write left no transaction open
    assert store.count_ratings() == 1


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_scores_are_refused(store: Store, bad: float) -> None:
    add_n_movies(store, 1)
    with pytest.raises(ValueError, match="finite"):
        store.add_rating(1, 1, bad)
    with pytest.raises(ValueError, match="finite"):
        store.add_ratings(arrays([1, 2], [1, 1], [3.0, bad]))
    assert store.count_ratings() == 0


def test_list_ratings_format(store: Store) -> None:
    add_n_movies(store, 3)
    store.add_rating(2, 3, 5)
    store.add_rating(1, 2, 3.5)
    store.add_rating(1, 1, 4.0)
    rows = store.list_ratings()
    assert rows == [
        {"user_id": 1, "movie_id": 1, "score": 4},
        {"user_id": 1, "movie_id": 2, "score": 3.5},
        {"user_id": 2, "movie_id": 3, "score": 5},
    ]
    assert [type(r["score"]) for r in rows] == [int, float, int]
    assert all(type(r["user_id"]) is int and type(r["movie_id"]) is int for r in rows)


def test_rating_arrays_agree_with_list_ratings(store: Store) -> None:
    assert len(store.rating_arrays()) == 0
    add_n_movies(store, 4)
    for user, movie, score in [(3, 1, 2), (1, 4, 5), (2, 2, 1.5), (1, 1, 3)]:
        store.add_rating(user, movie, score)
    got = store.rating_arrays()
    assert got.user_ids.dtype == np.int64
    assert got.movie_ids.dtype == np.int64
    assert got.scores.dtype == np.float32
    assert got.to_rows() == [{**r, "score": float(r["score"])} for r in store.list_ratings()]


def test_ratings_version_counts_rows_written(store: Store) -> None:
    add_n_movies(store, 3)
    assert store.ratings_version() == 0
    store.add_rating(1, 1, 3)
    store.add_rating(1, 1, 4)  # a replacement is still a write
    assert store.ratings_version() == 2
    assert store.add_ratings(arrays([1, 2, 2], [2, 3, 3], [1, 2, 3])) == 3
    assert store.ratings_version() == 5
    assert store.add_ratings(arrays([], [], [])) == 0
    assert store.ratings_version() == 5


# ---------------------------------------------------------------- bulk


def test_add_ratings_last_wins(store: Store) -> None:
    add_n_movies(store, 3)
    store.add_rating(1, 1, 1)
    store.add_rating(2, 2, 2)
    batch = arrays([1, 3, 3, 1, 3, 2], [1, 3, 3, 2, 3, 3], [5, 1, 2, 4, 3, 4.5])
    assert store.add_ratings(batch) == 6
    assert as_dict(store) == {(1, 1): 5, (1, 2): 4, (2, 2): 2, (2, 3): 4.5, (3, 3): 3}
    assert store.count_ratings() == 5
    assert store.count_users() == 3


def test_add_ratings_matches_one_by_one(store: Store) -> None:
    rng = np.random.default_rng(9)
    n = 3000
    users, movies = rng.integers(1, 40, n), rng.integers(1, 30, n)
    scores = rng.integers(1, 11, n) / 2
    add_n_movies(store, 30)
    reference = MemoryStore()
    add_n_movies(reference, 30)
    for u, m, s in zip(users.tolist(), movies.tolist(), scores.tolist(), strict=True):
        reference.add_rating(u, m, s)
    store.add_ratings(RatingArrays.from_columns(users[:1000], movies[:1000], scores[:1000]))
    store.add_ratings(RatingArrays.from_columns(users[1000:], movies[1000:], scores[1000:]))
    assert store.list_ratings() == reference.list_ratings()
    assert store.count_users() == reference.count_users()


def test_unusual_ids_keep_pairs_apart() -> None:
    s = MemoryStore()
    add_n_movies(s, 1)
    big = 1 << 40  # beyond the packed-int key; the bulk path must agree with add_rating
    s.add_ratings(arrays([big, -3, big], [1, 1, 1], [1, 2, 3]))
    s.add_rating(big, 1, 4)
    assert as_dict(s) == {(-3, 1): 2, (big, 1): 4}


# ---------------------------------------------------------------- tasks


def test_tasks_save_load_upsert(store: Store) -> None:
    store.save_task({"task_id": "a", "status": "queued", "created_at": 10.0})
    store.save_task({"task_id": "b", "status": "queued", "created_at": 20.0, "tags": ("x",)})
    store.save_task({"task_id": "a", "status": "complete", "created_at": 10.0})
    tasks = store.load_tasks()
    assert [t["task_id"] for t in tasks] == ["a", "b"]
    assert tasks[0]["status"] == "complete"
    assert tasks[1]["tags"] == ["x"]  # JSON round trip, in both backends
    tasks[0]["status"] = "mutated"
    assert store.load_tasks()[0]["status"] == "complete"
    with pytest.raises(ValueError, match="task_id"):
        store.save_task({"status": "queued"})


# ---------------------------------------------------------------- SQLite specifics


def test_sqlite_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "persist.db"
    with SQLiteStore(path) as first:
        add_n_movies(first, 3)
        first.add_rating(1, 2, 4.5)
        first.add_ratings(arrays([2, 3], [1, 3], [5, 1]))
        first.save_task({"task_id": "x", "status": "complete"})
        first.save_task({"task_id": "y", "status": "queued"})
        movies, ratings = first.list_movies(), first.list_ratings()
    with SQLiteStore(path) as second:
        assert second.list_movies() == movies
        assert second.list_ratings() == ratings
        assert second.ratings_version() == 3
        assert [t["task_id"] for t in second.load_tasks()] == ["x", "y"]
        assert second.add_movie("Next", 2020, "Comedy").id == 4


def test_sqlite_uses_wal(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "wal.db"):
        pass
    con = sqlite3.connect(tmp_path / "wal.db")
    try:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        con.close()


def test_open_store_picks_backend(tmp_path: Path) -> None:
    with open_store(None) as mem, open_store(tmp_path / "o.db") as disk:
        assert isinstance(mem, MemoryStore)
        assert isinstance(disk, SQLiteStore)
    with open_store(":memory:") as scratch:
        assert scratch.count_movies() == 0


# ---------------------------------------------------------------- threads


def run_threads(targets: list[Callable[[], None]]) -> None:
    errors: list[BaseException] = []

    def guard(target: Callable[[], None]) -> None:
        try:
            target()
        except BaseException as exc:  # re-raised below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=guard, args=(t,)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    if errors:
        raise errors[0]


def test_concurrent_writers(store: Store) -> None:
    add_n_movies(store, 50)

    def writer(user: int) -> Callable[[], None]:
        def run() -> None:
            for i in range(200):
                store.add_rating(user, i % 50 + 1, (i // 50) + 1)  # 4 passes: last is 4

        return run

    run_threads([writer(user) for user in range(1, 9)])
    assert store.count_ratings() == 8 * 50
    assert store.ratings_version() == 8 * 200
    assert as_dict(store) == {(u, m): 4 for u in range(1, 9) for m in range(1, 51)}


def test_readers_see_consistent_arrays(store: Store) -> None:
    add_n_movies(store, 20)
    done = threading.Event()
    seen: list[int] = []

    def writer(user: int) -> Callable[[], None]:
        def run() -> None:
            for movie in range(1, 21):
                store.add_rating(user, movie, 3)
            store.add_ratings(arrays([user] * 20, list(range(1, 21)), [5.0] * 20))

        return run

    def reader() -> None:
        sizes = [0]
        while not done.is_set():
            got = store.rating_arrays()
            assert len(got.user_ids) == len(got.movie_ids) == len(got.scores)
            assert len(got) >= sizes[-1]  # nothing is ever deleted
            sizes.append(len(got))
        seen.extend(sizes[1:])

    def writers() -> None:
        try:
            run_threads([writer(user) for user in range(1, 5)])
        finally:
            done.set()

    run_threads([reader, reader, writers])
    assert seen
    assert store.count_ratings() == 80
    assert set(store.rating_arrays().scores.tolist()) == {5.0}


def test_sqlite_rating_arrays_are_cached_until_a_write(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "c.db") as store, SQLiteStore(tmp_path / "c.db") as other:
        store.add_movie("Heat", 1995, "Crime")
        store.add_rating(1, 1, 4)
        first = store.rating_arrays()
        assert store.rating_arrays() is first  # nothing changed: no re-read
        with pytest.raises(ValueError):
            first.scores[0] = 5.0  # shared by every caller, so read-only
        other.add_rating(2, 1, 5)  # a write through another connection
        second = store.rating_arrays()
        assert second is not first
        assert second.user_ids.tolist() == [1, 2]


def _fresh_read(path: Path) -> RatingArrays:
    with SQLiteStore(path) as fresh:
        return fresh.rating_arrays()


def test_sqlite_incremental_reads_match_a_full_read(tmp_path: Path) -> None:
    """Small writes are merged into the cached columns; the result equals a fresh full read."""
    rng = np.random.default_rng(7)
    path = tmp_path / "m.db"
    with SQLiteStore(path) as store, SQLiteStore(path) as other:
        store.add_movies([(f"Movie {i}", 2000, "Drama") for i in range(40)])
        base = RatingArrays.from_columns(
            rng.integers(10, 60, 2_000), rng.integers(1, 41, 2_000), rng.integers(1, 6, 2_000)
        )
        store.add_ratings(base)
        store.rating_arrays()  # the cache every later read starts from
        for round_ in range(12):
            writer = other if round_ % 3 == 0 else store  # another connection writes too
            n = int(rng.integers(1, 40))
            # users below, inside and above the cached range; re-ratings and new pairs
            writer.add_ratings(
                RatingArrays.from_columns(
                    rng.integers(1, 80, n), rng.integers(1, 41, n), rng.integers(1, 6, n)
                )
            )
            if round_ % 4 == 1:
                writer.add_rating(int(rng.integers(1, 80)), int(rng.integers(1, 41)), 3)
            merged, full = store.rating_arrays(), _fresh_read(path)
            for name in ("user_ids", "movie_ids", "scores"):
                np.testing.assert_array_equal(getattr(merged, name), getattr(full, name))


def test_sqlite_merge_leaves_the_previous_columns_untouched(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "u.db") as store:
        store.add_movies([("Heat", 1995, "Crime"), ("Ran", 1985, "War")])
        store.add_ratings(RatingArrays.from_columns(np.arange(1, 101), np.ones(100), np.ones(100)))
        before = store.rating_arrays()
        snapshot = before.scores.copy()
        store.add_rating(5, 1, 5)  # re-rate: a build may still be reading `before`
        store.add_rating(5, 2, 4)  # a new pair
        after = store.rating_arrays()
        np.testing.assert_array_equal(before.scores, snapshot)
        assert len(after) == 101 and after.scores[4] == 5.0 and after.movie_ids[5] == 2


def test_sqlite_files_from_before_the_seq_column_still_open(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    con = sqlite3.connect(path)
    con.executescript(
        """
        CREATE TABLE movies (id INTEGER PRIMARY KEY, title TEXT NOT NULL,
                             year INTEGER NOT NULL, genre TEXT NOT NULL);
        CREATE TABLE ratings (user_id INTEGER NOT NULL, movie_id INTEGER NOT NULL,
                              score REAL NOT NULL, PRIMARY KEY (user_id, movie_id)) WITHOUT ROWID;
        INSERT INTO movies VALUES (1, 'Heat', 1995, 'Crime');
        INSERT INTO ratings VALUES (1, 1, 4.0);
        """
    )
    con.close()
    with SQLiteStore(path) as store:
        assert store.rating_arrays().scores.tolist() == [4.0]
        store.add_rating(2, 1, 5)
        assert store.rating_arrays().user_ids.tolist() == [1, 2]


def test_memory_rating_arrays_are_cached_until_a_write() -> None:
    store = MemoryStore()
    store.add_movies([("Heat", 1995, "Crime"), ("Ran", 1985, "War")])
    store.add_rating(2, 1, 4)
    store.add_rating(1, 2, 3)
    first = store.rating_arrays()
    assert store.rating_arrays() is first  # nothing changed: no new sort
    with pytest.raises(ValueError):
        first.scores[0] = 5.0  # shared by every caller, so read-only
    store.add_rating(1, 1, 5)
    second = store.rating_arrays()
    assert second is not first
    assert list(zip(second.user_ids.tolist(), second.movie_ids.tolist(), strict=True)) == [
        (1, 1),
        (1, 2),
        (2, 1),
    ]
