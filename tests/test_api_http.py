"""The API over real HTTP: an embedded uvicorn server on a free loopback port."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from labsupport.api import create_app
from labsupport.server import ServerHandle, serve_in_thread
from labsupport.store import MemoryStore
from labsupport.tasks import counter_ids


@pytest.fixture
def server(store: MemoryStore) -> Iterator[ServerHandle]:
    app = create_app(store, build_delay=1.0, task_id_factory=counter_ids(), shutdown_grace=0.5)
    with serve_in_thread(app) as srv:
        yield srv


def test_rebuild_is_observed_queued_running_complete(server: ServerHandle) -> None:
    with httpx.Client(base_url=server.url, timeout=5) as http:
        r = http.post("/recommender/rebuild")
        assert r.status_code == 202 and r.json()["status"] == "queued"
        seen, progress = ["queued"], []  # what the POST itself said
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            status = http.get(r.headers["Location"])
            body = status.json()
            if not seen or seen[-1] != body["status"]:
                seen.append(body["status"])
            progress.append(body["progress"])
            if body["status"] == "complete":
                assert "Retry-After" not in status.headers
                break
            assert status.headers["Retry-After"] == "1"
            time.sleep(0.05)
        # the 1 s build was not inside the POST: polling saw it run, then finish
        assert seen == ["queued", "running", "complete"]
        assert any(0 < p < 1 for p in progress)  # progress moves during the build
        assert progress == sorted(progress)
        recs = http.get("/recommendations/1", params={"limit": 2})
        assert recs.headers["X-Model-Version"] == "1"
        assert recs.json()[0] == 1


def test_requests_are_served_while_a_rebuild_runs(server: ServerHandle) -> None:
    with httpx.Client(base_url=server.url, timeout=5) as http:
        http.post("/recommender/rebuild")
        for _ in range(10):
            assert http.get("/health").status_code == 200
        # ten answers came while the 1 s build had not ended
        still_running = http.get("/recommender/rebuild/task-1").json()["status"]
        assert still_running in ("queued", "running")


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "code"),
    [
        ("post", "/ratings", {"json": {"movie_id": 1, "user_id": 1, "score": 9}}, 422),
        ("post", "/ratings", {"json": {"movie_id": 77, "user_id": 1, "score": 3}}, 404),
        (
            "post",
            "/ratings",
            {"content": b"{oops", "headers": {"content-type": "application/json"}},
            422,
        ),
        ("post", "/ratings", {"content": b""}, 422),
        ("post", "/movies", {"json": {"title": 5, "year": 2000, "genre": "Drama"}}, 422),
        ("get", "/movies/0", {}, 422),
        ("get", "/movies/abc", {}, 422),
        ("get", "/movies/4242", {}, 404),
        ("get", "/recommendations/1?limit=0", {}, 422),
        ("get", "/recommendations/1?limit=101", {}, 422),
        ("get", "/recommendations/-3", {}, 422),
        ("get", "/recommender/rebuild/unknown", {}, 404),
        (
            "post",
            "/movies",
            {"content": b"x" * 70_000, "headers": {"content-type": "application/json"}},
            413,
        ),
    ],
)
def test_bad_input_over_http_is_4xx_and_changes_nothing(
    server: ServerHandle, store: MemoryStore, method: str, path: str, kwargs: dict, code: int
) -> None:
    before = (store.list_ratings(), store.list_movies())
    with httpx.Client(base_url=server.url, timeout=5) as http:
        r = http.request(method.upper(), path, **kwargs)
    assert r.status_code == code, r.text
    assert r.headers["content-type"] == "application/json"
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail and "Traceback" not in detail
    assert (store.list_ratings(), store.list_movies()) == before


def test_stop_during_rebuild_marks_it_interrupted(store: MemoryStore) -> None:
    app = create_app(store, build_delay=5.0, shutdown_grace=0.2, task_id_factory=counter_ids())
    srv = serve_in_thread(app)
    with httpx.Client(base_url=srv.url, timeout=5) as http:
        http.post("/recommender/rebuild")
        deadline = time.monotonic() + 10  # stop it while it is surely running
        while http.get("/recommender/rebuild/task-1").json()["status"] != "running":
            assert time.monotonic() < deadline, "the rebuild never started"
            time.sleep(0.05)
    t0 = time.monotonic()
    srv.stop(timeout=3)
    assert time.monotonic() - t0 < 4  # "does not hang": the build had 5 s to go
    assert not srv.is_running
    task = app.state.service.get("task-1")
    assert task.status.value == "interrupted"
    assert task.error
