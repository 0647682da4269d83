"""The movie API through Starlette's in-process TestClient."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from labsupport.api import MAX_BODY_BYTES, create_app
from labsupport.store import MemoryStore


def wait(client: TestClient, task_id: str) -> None:
    """Block until the task is final (builds run on the service's own thread)."""
    app = client.app
    assert app.state.service.wait(task_id, timeout=10).done  # type: ignore[attr-defined]


def test_health(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}


def test_add_and_get_movie(client: TestClient) -> None:
    r = client.post("/movies", json={"title": "Arrival", "year": 2016, "genre": "Sci-Fi"})
    assert r.status_code == 201
    movie = r.json()
    assert movie == {"id": 7, "title": "Arrival", "year": 2016, "genre": "Sci-Fi"}
    assert client.get("/movies/7").json() == movie


def test_list_movies_pages(client: TestClient) -> None:
    ids = [m["id"] for m in client.get("/movies", params={"limit": 2, "offset": 3}).json()]
    assert ids == [4, 5]
    assert len(client.get("/movies").json()) == 6


def test_unknown_movie_is_404_with_detail(client: TestClient) -> None:
    r = client.get("/movies/999")
    assert r.status_code == 404
    assert "999" in r.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        {"title": "", "year": 2000, "genre": "Drama"},
        {"title": "X", "year": "2000", "genre": "Drama"},
        {"title": "X", "year": 1700, "genre": "Drama"},
        {"title": "X", "year": 2000},
        {"title": "X", "year": 2000, "genre": "Drama", "extra": 1},
        {"title": "x" * 201, "year": 2000, "genre": "Drama"},
    ],
)
def test_bad_movie_is_422_and_stores_nothing(client: TestClient, body: dict[str, object]) -> None:
    r = client.post("/movies", json=body)
    assert r.status_code == 422
    assert isinstance(r.json()["detail"], str) and r.json()["detail"]
    assert len(client.get("/movies").json()) == 6


def test_rating_upserts(client: TestClient, store: MemoryStore) -> None:
    before = store.count_ratings()
    r = client.post("/ratings", json={"movie_id": 6, "user_id": 1, "score": 3})
    assert r.status_code == 201
    assert r.json() == {"movie_id": 6, "user_id": 1, "score": 3}
    client.post("/ratings", json={"movie_id": 6, "user_id": 1, "score": 5})
    assert store.count_ratings() == before + 1
    rows = [row for row in store.list_ratings() if (row["user_id"], row["movie_id"]) == (1, 6)]
    assert rows == [{"user_id": 1, "movie_id": 6, "score": 5}]


@pytest.mark.parametrize(
    "body",
    [
        {"movie_id": 1, "user_id": 1, "score": 0},
        {"movie_id": 1, "user_id": 1, "score": 6},
        {"movie_id": 1, "user_id": 1, "score": 4.5},
        {"movie_id": 1, "user_id": 1, "score": "5"},
        {"movie_id": 1, "user_id": 1, "score": None},
        {"movie_id": 1, "user_id": 0, "score": 3},
        {"movie_id": -1, "user_id": 1, "score": 3},
        {"movie_id": 1, "user_id": 2**64, "score": 3},
        {"movie_id": 1, "user_id": 1},
        {"movie_id": 1, "user_id": 1, "score": 3, "comment": "extra"},
    ],
)
def test_bad_rating_is_422_and_changes_nothing(
    client: TestClient, store: MemoryStore, body: dict[str, object]
) -> None:
    before = store.list_ratings()
    r = client.post("/ratings", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["detail"]
    assert store.list_ratings() == before


def test_rating_unknown_movie_is_404(client: TestClient, store: MemoryStore) -> None:
    r = client.post("/ratings", json={"movie_id": 99, "user_id": 1, "score": 3})
    assert r.status_code == 404
    assert "99" in r.json()["detail"]
    assert store.count_ratings() == 9


@pytest.mark.parametrize("content", [b"not json", b"[1, 2]", b"", b"{"])
def test_body_not_a_json_object_is_422(client: TestClient, content: bytes) -> None:
    r = client.post("/ratings", content=content, headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert r.json()["detail"]


def test_enormous_body_is_413(client: TestClient) -> None:
    title = "x" * (MAX_BODY_BYTES + 1)
    r = client.post("/movies", json={"title": title, "year": 2000, "genre": "Drama"})
    assert r.status_code == 413
    assert "limit" in r.json()["detail"]
    assert len(client.get("/movies").json()) == 6


def test_recommendations_before_any_build_say_so(client: TestClient) -> None:
    r = client.get("/recommendations/1", params={"limit": 3})
    assert r.status_code == 200
    assert r.headers["X-Model-Version"] == "none"
    assert r.json() == [1, 2, 3]


@pytest.mark.parametrize("limit", [0, 101, -1, "ten"])
def test_bad_limit_is_422(client: TestClient, limit: object) -> None:
    r = client.get("/recommendations/1", params={"limit": limit})
    assert r.status_code == 422
    assert "limit" in r.json()["detail"]


def test_rebuild_returns_202_with_location_then_completes(client: TestClient) -> None:
    r = client.post("/recommender/rebuild")
    assert r.status_code == 202
    assert r.json() == {"task_id": "task-1", "status": "queued"}
    assert r.headers["Location"] == "/recommender/rebuild/task-1"
    wait(client, "task-1")
    status = client.get(r.headers["Location"]).json()
    assert status["status"] == "complete"
    assert status["progress"] == 1.0
    assert status["error"] is None
    assert status["queued_at"] <= status["started_at"] <= status["finished_at"]
    assert status["model_version"] == 1
    assert status["sample"][:1] == [1]  # user 1 gave movie 1 five stars
    assert "Retry-After" not in client.get(r.headers["Location"]).headers


def test_recommendations_after_rebuild(client: TestClient) -> None:
    wait(client, client.post("/recommender/rebuild").json()["task_id"])
    r = client.get("/recommendations/2", params={"limit": 3})
    assert r.headers["X-Model-Version"] == "1"
    assert r.json()[0] == 2  # user 2's own five-star movie comes first
    unseen = client.get("/recommendations/2", params={"exclude_rated": True, "limit": 3}).json()
    assert not {1, 2, 5} & set(unseen)
    assert len(unseen) == 3


def test_new_user_gets_a_non_empty_ranking(client: TestClient) -> None:
    wait(client, client.post("/recommender/rebuild").json()["task_id"])
    recs = client.get("/recommendations/12345", params={"limit": 4}).json()
    assert len(recs) == 4 and len(set(recs)) == 4


def test_unknown_task_is_404(client: TestClient) -> None:
    r = client.get("/recommender/rebuild/nope")
    assert r.status_code == 404
    assert "nope" in r.json()["detail"]


@pytest.mark.parametrize("header", ["Idempotency-Key", "X-Task-Id"])
def test_idempotency_key_returns_the_same_task(client: TestClient, header: str) -> None:
    first = client.post("/recommender/rebuild", headers={header: "abc-1"}).json()
    wait(client, first["task_id"])
    again = client.post("/recommender/rebuild", headers={header: "abc-1"}).json()
    other = client.post("/recommender/rebuild", headers={header: "abc-2"}).json()
    assert again["task_id"] == first["task_id"]
    assert again["status"] == "complete"
    assert other["task_id"] != first["task_id"]


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9", "two words"])
def test_bad_idempotency_key_is_422(client: TestClient, key: str) -> None:
    r = client.post("/recommender/rebuild", headers={"Idempotency-Key": key.encode()})
    assert r.status_code == 422
    assert "idempotency" in r.json()["detail"].lower()


def test_model_info(client: TestClient) -> None:
    empty = client.get("/recommender").json()
    assert empty["version"] is None and empty["ratings_since_build"] == 9
    wait(client, client.post("/recommender/rebuild").json()["task_id"])
    info = client.get("/recommender").json()
    assert info["version"] == 1
    assert (info["n_users"], info["n_movies"], info["n_ratings"]) == (3, 6, 9)
    assert info["ratings_since_build"] == 0
    client.post("/ratings", json={"movie_id": 4, "user_id": 1, "score": 2})
    assert client.get("/recommender").json()["ratings_since_build"] == 1


def test_failure_injection_is_deterministic_and_spares_health() -> None:
    def statuses() -> list[int]:
        app = create_app(MemoryStore(), failure_rate=0.5, seed=3)
        with TestClient(app) as c:
            assert all(c.get("/health").status_code == 200 for _ in range(5))
            return [c.get("/movies").status_code for _ in range(40)]

    first = statuses()
    assert first == statuses()
    assert 5 < first.count(503) < 35
    assert set(first) == {200, 503}


def test_injected_503_carries_retry_after() -> None:
    with TestClient(create_app(MemoryStore(), failure_rate=1.0)) as c:
        r = c.get("/movies")
    assert r.status_code == 503
    assert r.headers["Retry-After"] == "1"
    assert r.json()["detail"]


def test_failure_rate_is_checked() -> None:
    with pytest.raises(ValueError, match="failure_rate"):
        create_app(failure_rate=1.5)


def test_rebuild_refused_after_shutdown(store: MemoryStore) -> None:
    app = create_app(store)
    with TestClient(app):
        pass
    # the lifespan has ended: the service refuses new work
    r = TestClient(app).post("/recommender/rebuild")
    assert r.status_code == 503
    assert r.headers["Retry-After"] == "1"


def test_openapi_documents_error_codes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"201", "413", "422"} <= set(paths["/ratings"]["post"]["responses"])
    assert "404" in paths["/recommender/rebuild/{task_id}"]["get"]["responses"]
    assert "503" in paths["/recommender/rebuild"]["post"]["responses"]


def test_every_route_that_reads_the_store_or_shared_state_documents_503(client: TestClient) -> None:
    # a database server or Redis out of reach is answered 503 with Retry-After
    paths = client.get("/openapi.json").json()["paths"]
    for path, method in [
        ("/movies", "get"),
        ("/movies", "post"),
        ("/movies/{movie_id}", "get"),
        ("/ratings", "post"),
        ("/recommendations/{user_id}", "get"),
        ("/recommender", "get"),
        ("/recommender/rebuild", "post"),
        ("/recommender/rebuild/{task_id}", "get"),
        ("/recommender/rebuild/{task_id}", "delete"),
    ]:
        assert "503" in paths[path][method]["responses"], (method, path)
