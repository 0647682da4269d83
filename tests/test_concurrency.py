"""Concurrency over real HTTP: idempotent and coalesced rebuilds, writes during a rebuild."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from labsupport.api import create_app
from labsupport.recommender import Model, build_model
from labsupport.server import ServerHandle, serve_in_thread
from labsupport.store import MemoryStore
from labsupport.tasks import RebuildService


class CountingBuilder:
    """The real builder, slowed down a little, counting its calls."""

    def __init__(self, seconds: float = 0.5) -> None:
        self.seconds = seconds
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self, ratings: Any, *, version: int, progress: Any) -> Model:
        with self.lock:
            self.calls += 1
        time.sleep(self.seconds)
        return build_model(ratings, version=version, rank=2)


@pytest.fixture
def builder() -> CountingBuilder:
    return CountingBuilder()


@pytest.fixture
def server(store: MemoryStore, builder: CountingBuilder) -> Iterator[ServerHandle]:
    service = RebuildService(store, build=builder)
    with serve_in_thread(create_app(store, service=service)) as srv:
        yield srv


def post_many(url: str, n: int, headers: dict[str, str] | None = None) -> list[httpx.Response]:
    barrier = threading.Barrier(n, timeout=10)

    def one(_: int) -> httpx.Response:
        with httpx.Client(base_url=url, timeout=10) as http:
            barrier.wait()
            return http.post("/recommender/rebuild", headers=headers or {})

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def wait_all_final(http: httpx.Client, task_ids: set[str]) -> dict[str, str]:
    deadline = time.monotonic() + 20
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        states = {t: http.get(f"/recommender/rebuild/{t}").json()["status"] for t in task_ids}
        if all(s in ("complete", "failed", "interrupted") for s in states.values()):
            break
        time.sleep(0.1)
    return states


def test_fifty_posts_with_one_key_make_one_task_and_one_build(
    server: ServerHandle, builder: CountingBuilder
) -> None:
    responses = post_many(server.url, 50, {"Idempotency-Key": "same-key"})
    assert {r.status_code for r in responses} == {202}
    task_ids = {r.json()["task_id"] for r in responses}
    assert len(task_ids) == 1
    with httpx.Client(base_url=server.url, timeout=5) as http:
        assert wait_all_final(http, task_ids) == {task_ids.pop(): "complete"}
    assert builder.calls == 1


def test_fifty_posts_without_key_coalesce(server: ServerHandle, builder: CountingBuilder) -> None:
    responses = post_many(server.url, 50)
    assert {r.status_code for r in responses} == {202}
    task_ids = {r.json()["task_id"] for r in responses}
    # the first may already be running when others arrive: one running, one queued at most
    assert 1 <= len(task_ids) <= 2
    with httpx.Client(base_url=server.url, timeout=5) as http:
        assert set(wait_all_final(http, task_ids).values()) == {"complete"}
    assert builder.calls == len(task_ids)


def test_ratings_written_during_a_rebuild_are_all_kept(
    server: ServerHandle, store: MemoryStore, builder: CountingBuilder
) -> None:
    writers, per_writer = 8, 500
    acknowledged: list[tuple[int, int]] = []
    lock = threading.Lock()

    def write(w: int) -> None:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            for i in range(per_writer):
                user, movie = 1000 + w, 1 + i % 6
                r = http.post("/ratings", json={"user_id": user, "movie_id": movie, "score": 3})
                if r.status_code == 201:
                    with lock:
                        acknowledged.append((user, movie))

    with httpx.Client(base_url=server.url, timeout=5) as http:
        first = http.post("/recommender/rebuild").json()["task_id"]
        with ThreadPoolExecutor(writers) as pool:
            list(pool.map(write, range(writers)))
        wait_all_final(http, {first})
        stored = {(r["user_id"], r["movie_id"]) for r in store.list_ratings()}
        assert set(acknowledged) <= stored
        assert len(acknowledged) == writers * per_writer
        second = http.post("/recommender/rebuild").json()["task_id"]
        assert wait_all_final(http, {second}) == {second: "complete"}
        info = http.get("/recommender").json()
        assert info["n_users"] == 3 + writers
        assert info["n_ratings"] == store.count_ratings()  # the rebuild counted every one
        assert info["ratings_since_build"] == 0
