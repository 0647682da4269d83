"""Fold-in: a user's ratings made after the build change their list at once, with no rebuild.

The projection itself (`labsupport.recommender.foldin`), the store's per-user
read it feeds on, the endpoint with `create_app(fold_in=True)` in-process, and
the done-when over real HTTP against `python -m labsupport serve --fold-in`.
"""

from __future__ import annotations

import dataclasses
import io
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import free_port, serve_command, stop_process, wait_healthy
from fastapi.testclient import TestClient

from labsupport._types import RatingArrays
from labsupport.api import create_app
from labsupport.data import demo_ratings
from labsupport.recommender import (
    METHODS,
    Model,
    build_model,
    fold_in,
    holds_ratings,
    recommend,
    recommend_from_ratings,
)
from labsupport.store import MemoryStore, SQLiteStore, Store, demo_store

NEW_USER = 500  # not among the demo's 40 users
FIVE = [(1, 5), (2, 5), (3, 4), (10, 5), (20, 1)]  # (movie, score): the new user's first ratings


def own_ratings(model: Model, row: int) -> tuple[np.ndarray, np.ndarray]:
    """The movie ids and scores the model was built with for the user in `row`."""
    start, stop = model.rated.indptr[row], model.rated.indptr[row + 1]
    return model.movie_ids[model.rated.indices[start:stop]], model.rated.data[start:stop]


# -- the projection ---------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_folding_in_a_users_own_ratings_gives_their_factors_back(method: str) -> None:
    # 40 users: the build takes the exact (dense) SVD, so the projection is exact too
    model = build_model(demo_ratings(), method=method, rank=30)
    for row, user in enumerate(model.user_ids.tolist()):
        movies, scores = own_ratings(model, row)
        folded = fold_in(model, movies, scores)
        assert folded is not None
        np.testing.assert_allclose(folded, model.user_factors[row], atol=1e-4)
        assert recommend_from_ratings(model, movies, scores, 10) == recommend(model, user, 10)
        assert holds_ratings(model, user, movies, scores)


def test_with_the_randomized_svd_the_projection_is_close() -> None:
    model = build_model(demo_ratings(), rank=8)  # 40 users > 8 + 10: the randomized SVD
    for row in range(model.n_users):
        folded = fold_in(model, *own_ratings(model, row))
        assert folded is not None
        scale = np.abs(model.user_factors[row]).max()
        assert np.abs(folded - model.user_factors[row]).max() < 0.1 * scale


def test_a_new_user_gets_a_personal_list_that_excludes_what_they_rated() -> None:
    model = build_model(demo_ratings(), rank=8)
    movies, scores = np.array([m for m, _ in FIVE]), np.array([s for _, s in FIVE])
    cold = recommend(model, NEW_USER, 10, exclude_rated=True)
    assert cold == model.popular[:10].tolist()
    personal = recommend_from_ratings(model, movies, scores, 10, exclude_rated=True)
    assert personal != cold
    assert len(personal) == 10 == len(set(personal))
    assert not set(personal) & set(movies.tolist())
    # without exclude_rated their own movies come first, best rating first
    head = recommend_from_ratings(model, movies, scores, 7)
    assert set(head[:3]) == {1, 2, 10} and head[3:5] == [3, 20]


def test_movies_the_model_does_not_know_are_excluded_but_not_projected() -> None:
    model = build_model(demo_ratings(), rank=8)
    unknown = int(model.movie_ids.max()) + 1  # added to the catalogue after the build
    with_new = recommend_from_ratings(model, [1, unknown], [5, 5], 10, exclude_rated=True)
    assert with_new == recommend_from_ratings(model, [1], [5], 10, exclude_rated=True)
    assert recommend_from_ratings(model, [unknown], [4], 3) == [unknown, *model.popular[:2]]
    assert fold_in(model, [unknown], [4]) is None


def test_nothing_to_fold_in_falls_back_to_the_cold_start_chart() -> None:
    model = build_model(demo_ratings(), rank=8)
    old = dataclasses.replace(model, fold_in_factors=np.zeros((0, 0), dtype=np.float32))
    assert fold_in(old, [1, 2], [5, 4]) is None  # a model saved before fold-in existed
    expected = [m for m in model.popular.tolist() if m not in (1, 2)][:5]
    assert recommend_from_ratings(old, [1, 2], [5, 4], 5, exclude_rated=True) == expected
    assert recommend_from_ratings(model, [], [], 5) == model.popular[:5].tolist()
    with pytest.raises(ValueError, match="limit"):
        recommend_from_ratings(model, [], [], -1)


def test_holds_ratings_notices_a_new_or_changed_rating() -> None:
    model = build_model(demo_ratings(), rank=8)
    user = int(model.user_ids[0])
    movies, scores = own_ratings(model, 0)
    assert holds_ratings(model, user, movies, scores)
    changed = scores.copy()
    changed[0] = 6 - changed[0]
    assert not holds_ratings(model, user, movies, changed)
    unrated = np.setdiff1d(model.movie_ids, movies)[0]
    assert not holds_ratings(model, user, [*movies, unrated], [*scores, 3.0])
    assert holds_ratings(model, NEW_USER, [], [])  # unknown and no ratings: the chart is current
    assert not holds_ratings(model, NEW_USER, [1], [5])


def test_fold_in_rows_survive_the_redis_encoding_and_old_archives_still_load() -> None:
    from labsupport.scaleout._redis import model_from_bytes, model_to_bytes

    model = build_model(demo_ratings(), rank=8)
    back = model_from_bytes(model_to_bytes(model))
    np.testing.assert_array_equal(back.fold_in_factors, model.fold_in_factors)
    with np.load(io.BytesIO(model_to_bytes(model)), allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files if name != "fold_in_factors"}
    older = io.BytesIO()
    np.savez(older, **arrays)  # what a model cached before fold-in existed looks like
    restored = model_from_bytes(older.getvalue())
    assert restored.fold_in_factors.shape == (0, 0)
    assert recommend(restored, 1, 5) == recommend(model, 1, 5)


# -- the store's per-user read ----------------------------------------------------------


@pytest.fixture(params=["memory", "sqlite"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    store: Store = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "s.db")
    with store:
        demo_store(store)
        yield store


def test_user_ratings_is_one_users_slice_of_every_rating(any_store: Store) -> None:
    any_store.add_rating(3, 70, 4)
    any_store.add_rating(3, 70, 2)  # replaced, not added
    any_store.add_ratings(RatingArrays.from_columns([NEW_USER, 3, NEW_USER], [9, 1, 4], [5, 1, 3]))
    everything = any_store.rating_arrays()
    for user in (3, NEW_USER, np.int64(7), 12345):
        mine = any_store.user_ratings(int(user))
        wanted = everything.user_ids == user
        assert mine.movie_ids.tolist() == everything.movie_ids[wanted].tolist()
        assert mine.scores.tolist() == everything.scores[wanted].tolist()
        assert set(mine.user_ids.tolist()) <= {int(user)}
    assert any_store.user_ratings(NEW_USER).movie_ids.tolist() == [4, 9]
    assert len(any_store.user_ratings(12345)) == 0
    assert any_store.count_users() == 41


def test_sqlite_user_ratings_sees_another_connections_writes(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "shared.db") as one, SQLiteStore(tmp_path / "shared.db") as two:
        demo_store(one)
        assert len(two.user_ratings(NEW_USER)) == 0
        one.add_rating(NEW_USER, 5, 4)
        assert two.user_ratings(NEW_USER).movie_ids.tolist() == [5]


# -- the endpoint -----------------------------------------------------------------------


def rate_five(http: httpx.Client | TestClient, user: int = NEW_USER) -> None:
    for movie, score in FIVE:
        answer = http.post("/ratings", json={"user_id": user, "movie_id": movie, "score": score})
        assert answer.status_code == 201


def top(http: httpx.Client | TestClient, user: int = NEW_USER) -> tuple[list[int], str, str]:
    answer = http.get(f"/recommendations/{user}", params={"limit": 10, "exclude_rated": True})
    assert answer.status_code == 200
    version = answer.headers["X-Model-Version"]
    return answer.json(), version, answer.headers.get("X-Fold-In", "no")


def test_with_fold_in_new_and_changed_ratings_count_at_once() -> None:
    store = demo_store()
    app = create_app(store, fold_in=True, executor="thread")
    with TestClient(app) as http:
        app.state.service.rebuild_now()
        model = app.state.service.model
        cold, version, folded = top(http)
        assert (version, folded) == ("1", "no")
        assert cold == model.popular[:10].tolist()
        known, _, folded = top(http, 3)  # nothing new for user 3: the cached model answer
        assert folded == "no" and known == recommend(model, 3, 10, exclude_rated=True)
        rate_five(http)
        personal, version, folded = top(http)
        assert (version, folded) == ("1", "yes")
        assert personal != cold and not set(personal) & {m for m, _ in FIVE}
        mine = store.user_ratings(NEW_USER)
        assert personal == recommend_from_ratings(model, mine.movie_ids, mine.scores, 10, True)
        http.post("/ratings", json={"user_id": NEW_USER, "movie_id": personal[0], "score": 1})
        again, _, _ = top(http)  # never served stale from the cache
        assert personal[0] not in again and again != personal
        assert top(http, 3) == (known, "1", "no")  # other users keep the model's answer
        unrated = sorted(set(range(1, 73)) - set(store.user_ratings(3).movie_ids.tolist()))
        http.post("/ratings", json={"user_id": 3, "movie_id": unrated[0], "score": 5})
        changed, _, folded = top(http, 3)
        assert folded == "yes" and unrated[0] not in changed
        assert app.state.service.model is model  # and nothing was rebuilt


def test_without_fold_in_a_new_user_gets_the_chart_until_the_rebuild() -> None:
    app = create_app(demo_store(), executor="thread")
    with TestClient(app) as http:
        app.state.service.rebuild_now()
        cold, version, _ = top(http)
        rate_five(http)
        assert top(http) == (cold, version, "no")
        app.state.service.rebuild_now()
        personal, version, folded = top(http)
        assert (version, folded) == ("2", "no") and personal != cold


def test_before_any_build_fold_in_answers_with_the_catalogue() -> None:
    with TestClient(create_app(demo_store(), fold_in=True)) as http:
        rate_five(http)
        answer = http.get(f"/recommendations/{NEW_USER}")
        assert answer.headers["X-Model-Version"] == "none"
        assert answer.json() == [1, 2, 3, 4, 5]


# -- the done-when, over real HTTP ------------------------------------------------------


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., str]]:
    started: list[subprocess.Popen[str]] = []

    def start(*extra: str) -> str:
        port = free_port()
        db = tmp_path / f"{port}.db"
        proc = subprocess.Popen(
            serve_command(port, db, "--demo", *extra),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        started.append(proc)
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, proc, lambda: proc.stdout.read() if proc.stdout else "")
        return url

    yield start
    for proc in started:  # each server we started, by its own handle
        stop_process(proc)
        if proc.stdout:
            proc.stdout.close()


def test_serve_fold_in_personalises_a_new_user_before_any_rebuild(
    serve: Callable[..., str],
) -> None:
    url = serve("--fold-in")
    with httpx.Client(base_url=url, timeout=10) as http:
        cold, version, _ = top(http)
        rate_five(http)
        personal, after, folded = top(http)
    assert after == version and folded == "yes"  # no rebuild happened
    assert personal != cold
    assert not set(personal) & {movie for movie, _ in FIVE}


def test_serve_without_fold_in_keeps_the_chart_until_the_next_rebuild(
    serve: Callable[..., str],
) -> None:
    url = serve()
    with httpx.Client(base_url=url, timeout=10) as http:
        cold, version, _ = top(http)
        rate_five(http)
        assert top(http) == (cold, version, "no")
        status = http.post("/recommender/rebuild").headers["Location"]
        deadline = time.monotonic() + 30
        while http.get(status).json()["status"] != "complete" and time.monotonic() < deadline:
            time.sleep(0.05)
        personal, after, _ = top(http)
    assert int(after) == int(version) + 1 and personal != cold


def test_over_redis_a_rating_through_one_process_is_folded_in_by_another(
    fresh_redis_url: str, tmp_path: Path
) -> None:
    pytest.importorskip("redis", reason="the redis package is not installed")
    from labsupport.scaleout.registry import RedisTaskRegistry, connect_redis
    from labsupport.scaleout.service import RedisRebuildService

    client = connect_redis(fresh_redis_url)
    with (
        SQLiteStore(tmp_path / "shared.db") as first,
        SQLiteStore(tmp_path / "shared.db") as second,
    ):
        demo_store(first)
        services = [
            RedisRebuildService(store, RedisTaskRegistry(client), poll_interval=0.05)
            for store in (first, second)
        ]
        try:
            services[0].rebuild_now(timeout=30)
            deadline = time.monotonic() + 10  # the other process polls Redis for the model
            while services[1].model is None and time.monotonic() < deadline:
                time.sleep(0.02)
            with (
                TestClient(create_app(first, service=services[0])) as one,
                TestClient(create_app(second, service=services[1], fold_in=True)) as two,
            ):
                cold, version, _ = top(two)
                rate_five(one)  # written through the other "process"
                personal, after, folded = top(two)
                assert (after, folded) == (version, "yes") and personal != cold
                assert not set(personal) & {movie for movie, _ in FIVE}
                assert top(one) == (cold, version, "no")  # that one has fold-in off
        finally:
            for service in services:
                service.shutdown(grace=0)
            client.close()
