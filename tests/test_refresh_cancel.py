"""Automatic refresh, staleness and cancellation, in process and over real HTTP.

The automatic refresh (`create_app(refresh_after=N, refresh_every=SECONDS)`,
`serve --refresh-after N`) starts rebuilds by itself through the same queue
as `POST /recommender/rebuild`; `GET /recommender` says how stale the model
is; `DELETE /recommender/rebuild/{task_id}` cancels a queued or running
rebuild. Servers bind 127.0.0.1, every wait is bounded, and every process a
test starts is ended by its PID.
"""

from __future__ import annotations

import itertools
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from conftest import free_port, serve_command, stop_process, wait_healthy
from fastapi.testclient import TestClient

from labsupport import create_app, demo_store
from labsupport.data import CATALOGUE, synthetic_shape
from labsupport.server import ServerHandle, serve_in_thread
from labsupport.store import MemoryStore, SQLiteStore
from labsupport.tasks import (
    AutoRefresh,
    RebuildService,
    TaskFinishedError,
    TaskStatus,
    counter_ids,
)


def until(condition: Callable[[], Any], timeout: float = 10.0, pause: float = 0.05) -> Any:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(pause)
    pytest.fail(f"condition not met within {timeout} s")


def rate(http: httpx.Client, user: int, movie: int, score: int = 4) -> None:
    answer = http.post("/ratings", json={"movie_id": movie, "user_id": user, "score": score})
    assert answer.status_code == 201, answer.text


@pytest.fixture
def refreshing() -> Iterator[tuple[ServerHandle, httpx.Client]]:
    """A served app that rebuilds by itself after 5 ratings; its demo model is built first."""
    app = create_app(demo_store(), refresh_after=5, task_id_factory=counter_ids())
    app.state.service.rebuild_now()
    with serve_in_thread(app) as srv, httpx.Client(base_url=srv.url, timeout=5) as http:
        yield srv, http


# -- automatic refresh ----------------------------------------------------------------


def test_five_ratings_start_an_automatic_rebuild_over_http(tmp_path: Path) -> None:
    port = free_port()
    command = serve_command(port, tmp_path / "movies.db", "--demo", "--refresh-after", "5")
    log = tmp_path / "serve.log"
    url = f"http://127.0.0.1:{port}"
    with log.open("w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        wait_healthy(url, proc, log.read_text)
        with httpx.Client(base_url=url, timeout=5) as http:
            before = http.get("/recommender").json()
            assert before["last_task"]["trigger"] == "manual"  # the start-up build
            for movie in range(1, 6):
                rate(http, 9001, movie)
            info = until(
                lambda: (i := http.get("/recommender").json())["version"] > before["version"] and i
            )
            task = http.get(f"/recommender/rebuild/{info['last_task']['task_id']}").json()
    finally:
        stop_process(proc)
    assert task["trigger"] == "auto" and task["status"] == "complete"
    assert task["model_version"] == info["version"]
    assert info["ratings_since_build"] == 0 and info["staleness_seconds"] is None


def test_a_burst_of_ratings_starts_a_few_builds_one_at_a_time(
    refreshing: tuple[ServerHandle, httpx.Client],
) -> None:
    srv, http = refreshing
    service = srv.app.state.service
    for i in range(200):
        rate(http, 9100 + i // 10, 1 + i % 72)
    until(lambda: http.get("/recommender").json()["ratings_since_build"] == 0)
    until(lambda: all(t.done for t in service.tasks()))
    auto = [t for t in service.tasks() if t.trigger == "auto"]
    assert 1 <= len(auto) <= 10, [t.task_id for t in auto]
    assert all(t.status is TaskStatus.COMPLETE for t in auto)
    spans = sorted((t.started_at, t.finished_at) for t in auto)
    assert all(end <= start for (_, end), (start, _) in itertools.pairwise(spans))


def test_without_the_flag_nothing_rebuilds_by_itself() -> None:
    app = create_app(demo_store(), task_id_factory=counter_ids())
    app.state.service.rebuild_now()
    with serve_in_thread(app) as srv, httpx.Client(base_url=srv.url, timeout=5) as http:
        for movie in range(1, 11):
            rate(http, 9200, movie)
        time.sleep(1.5)  # several times the refresh's poll and its minimum interval
        info = http.get("/recommender").json()
    assert app.state.refresh is None
    assert info["version"] == 1 and info["ratings_since_build"] == 10
    assert [t.trigger for t in app.state.service.tasks()] == ["manual"]


def test_an_old_unseen_rating_starts_an_automatic_rebuild() -> None:
    app = create_app(demo_store(), refresh_every=0.5, task_id_factory=counter_ids())
    app.state.service.rebuild_now()
    with serve_in_thread(app) as srv, httpx.Client(base_url=srv.url, timeout=5) as http:
        rate(http, 9300, 1)  # one rating: far below any count, but it grows old
        info = until(lambda: (i := http.get("/recommender").json())["version"] == 2 and i)
    assert info["last_task"]["trigger"] == "auto"


def test_refresh_joins_the_queue_a_client_uses() -> None:
    service = RebuildService(demo_store(), build_delay=0.5, task_id_factory=counter_ids())
    refresh = AutoRefresh(service, after=1, min_interval=0.0)
    service.store.add_rating(9400, 1, 5)
    manual, created = service.request()
    assert created
    assert refresh.check() is None  # a rebuild is queued already: nothing stacks
    service.start(manual.task_id)
    service.wait(manual.task_id, timeout=10)
    service.store.add_rating(9400, 2, 5)
    auto = refresh.check()
    assert auto is not None and auto.trigger == "auto"
    assert service.wait(auto.task_id, timeout=10).status is TaskStatus.COMPLETE


@pytest.mark.parametrize(
    "options", [{}, {"after": 0}, {"every": 0.0}, {"every": -1.0}], ids=["none", "0", "0s", "-1s"]
)
def test_refresh_needs_a_positive_reason(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"after|every"):
        AutoRefresh(RebuildService(demo_store()), **options)


@pytest.mark.parametrize("flag", ["--refresh-after", "--refresh-every"])
def test_the_refresh_flags_refuse_what_is_not_positive(flag: str, tmp_path: Path) -> None:
    done = subprocess.run(
        serve_command(free_port(), tmp_path / "x.db", flag, "0"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "expected a number above zero" in done.stderr


# -- staleness --------------------------------------------------------------------------


def test_staleness_is_the_age_of_the_oldest_unseen_rating() -> None:
    app = create_app(demo_store(), task_id_factory=counter_ids())
    with TestClient(app) as http:
        assert http.get("/recommender").json()["staleness_seconds"] > 0  # nothing built yet
        app.state.service.rebuild_now()
        assert http.get("/recommender").json()["staleness_seconds"] is None
        http.post("/ratings", json={"movie_id": 1, "user_id": 9500, "score": 5})
        first = http.get("/recommender").json()["staleness_seconds"]
        time.sleep(0.2)
        http.post("/ratings", json={"movie_id": 2, "user_id": 9500, "score": 5})
        later = http.get("/recommender").json()["staleness_seconds"]
        assert 0 <= first < later  # the oldest unseen rating, not the newest
        app.state.service.rebuild_now()
        assert http.get("/recommender").json()["staleness_seconds"] is None


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_stores_know_when_unseen_writes_happened(kind: str, tmp_path: Path) -> None:
    store = demo_store() if kind == "memory" else demo_store(SQLiteStore(tmp_path / "s.db"))
    seen = store.ratings_version()
    assert store.oldest_unseen_write(seen) is None
    start = time.time()
    store.add_rating(9600, 1, 5)
    store.add_rating(9600, 2, 5)
    first = store.oldest_unseen_write(seen)
    assert first is not None and start <= first <= time.time()
    assert store.oldest_unseen_write(seen + 1) >= first  # type: ignore[operator]
    assert store.oldest_unseen_write(store.ratings_version()) is None


# -- cancellation ----------------------------------------------------------------------


@pytest.fixture
def slow() -> Iterator[tuple[ServerHandle, httpx.Client]]:
    """A served app whose rebuilds take 2 s, with a first model built."""
    app = create_app(demo_store(), task_id_factory=counter_ids())
    app.state.service.rebuild_now()  # at full speed; the rebuilds the tests ask for are slow
    app.state.service.build_delay = 2.0
    with serve_in_thread(app) as srv, httpx.Client(base_url=srv.url, timeout=5) as http:
        yield srv, http


def status(http: httpx.Client, task_id: str) -> str:
    return str(http.get(f"/recommender/rebuild/{task_id}").json()["status"])


def test_delete_cancels_a_queued_task_at_once(slow: tuple[ServerHandle, httpx.Client]) -> None:
    _, http = slow
    running = http.post("/recommender/rebuild").json()["task_id"]
    until(lambda: status(http, running) == "running")
    queued = http.post("/recommender/rebuild").json()["task_id"]
    answer = http.delete(f"/recommender/rebuild/{queued}")
    assert answer.status_code == 200
    assert answer.json()["status"] == "canceled" and status(http, queued) == "canceled"
    until(lambda: status(http, running) == "complete")
    assert status(http, queued) == "canceled"  # it never ran
    assert http.get("/recommender").json()["version"] == 2


def test_delete_stops_a_running_build_and_keeps_the_model(
    slow: tuple[ServerHandle, httpx.Client],
) -> None:
    _, http = slow
    task_id = http.post("/recommender/rebuild").json()["task_id"]
    until(lambda: status(http, task_id) == "running")
    answer = http.delete(f"/recommender/rebuild/{task_id}")
    assert answer.status_code == 200 and answer.json()["status"] == "canceled"
    assert answer.json()["error"] == "canceled by a client"
    builder = next(t for t in threading.enumerate() if t.name == f"rebuild-{task_id}")
    builder.join(timeout=5)  # a thread build stops at its next step of the delay
    assert not builder.is_alive() and status(http, task_id) == "canceled"
    assert http.get("/recommender").json()["version"] == 1
    assert http.get("/recommendations/1").headers["X-Model-Version"] == "1"
    # the next rebuild runs as usual
    again = http.post("/recommender/rebuild").json()["task_id"]
    until(lambda: status(http, again) == "complete", timeout=15)


def test_delete_of_a_final_task_is_409_and_of_an_unknown_one_404(
    slow: tuple[ServerHandle, httpx.Client],
) -> None:
    srv, http = slow
    done = srv.app.state.service.tasks()[0].task_id  # the first build, complete
    answer = http.delete(f"/recommender/rebuild/{done}")
    assert answer.status_code == 409
    assert answer.json()["detail"] == (
        f"rebuild {done} is already complete: only a queued or running rebuild can be canceled"
    )
    missing = http.delete("/recommender/rebuild/no-such-task")
    assert missing.status_code == 404 and "no rebuild task" in missing.json()["detail"]


def test_the_key_of_a_canceled_task_starts_a_new_rebuild(
    slow: tuple[ServerHandle, httpx.Client],
) -> None:
    _, http = slow
    key = {"Idempotency-Key": "cancel-then-retry"}
    first = http.post("/recommender/rebuild", headers=key).json()["task_id"]
    assert http.post("/recommender/rebuild", headers=key).json()["task_id"] == first
    http.delete(f"/recommender/rebuild/{first}")
    second = http.post("/recommender/rebuild", headers=key).json()["task_id"]
    assert second != first
    assert http.post("/recommender/rebuild", headers=key).json()["task_id"] == second


def test_a_canceled_task_stays_canceled_after_a_restart(tmp_path: Path) -> None:
    store = demo_store(SQLiteStore(tmp_path / "movies.db"))
    service = RebuildService(store, task_id_factory=counter_ids())
    task, _ = service.request()
    assert service.cancel(task.task_id).status is TaskStatus.CANCELED
    with pytest.raises(TaskFinishedError, match="already canceled"):
        service.cancel(task.task_id)
    with pytest.raises(KeyError):
        service.cancel("no-such-task")
    store.close()
    reopened = RebuildService(SQLiteStore(tmp_path / "movies.db"))
    restored = reopened.get(task.task_id)
    assert restored is not None and restored.status is TaskStatus.CANCELED
    reopened.store.close()


def test_delete_ends_a_build_in_the_build_process_within_two_seconds() -> None:
    store = MemoryStore()
    store.add_movies(CATALOGUE)
    store.add_ratings(synthetic_shape("ml-1m", seed=0))
    service = RebuildService(store, executor="process", build_options={"rank": 8})
    service.rebuild_now()  # the model that must keep serving
    service.build_options["rank"] = 400  # the next build takes seconds at this size
    app = create_app(service=service)
    with serve_in_thread(app) as srv, httpx.Client(base_url=srv.url, timeout=5) as http:
        task_id = http.post("/recommender/rebuild").json()["task_id"]
        until(lambda: http.get(f"/recommender/rebuild/{task_id}").json()["progress"] >= 0.5)
        child = service._build_process.pid if service._build_process else None
        assert child is not None and psutil.pid_exists(child)
        asked = time.monotonic()
        answer = http.delete(f"/recommender/rebuild/{task_id}")
        until(lambda: not psutil.pid_exists(child) or psutil.Process(child).status() == "zombie")
        stopped_after = time.monotonic() - asked
        assert answer.json()["status"] == "canceled" and status(http, task_id) == "canceled"
        assert stopped_after < 2.0
        assert http.get("/recommendations/1").headers["X-Model-Version"] == "1"
        service.build_options["rank"] = 8
        again = http.post("/recommender/rebuild").json()["task_id"]
        until(lambda: status(http, again) == "complete", timeout=30)
    assert service.model is not None and service.model.version == 2
