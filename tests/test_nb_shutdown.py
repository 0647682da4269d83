"""Key results of notebooks 05 (shutdown, restart) and 06 (Exercise 3 starters), and their checks.

The shutdown tests use the notebook's own BUILD_DELAY and graces, read from its
``parameters`` cell, so a change there that breaks the story fails here first.
"""

from __future__ import annotations

import inspect
import logging
import re
import textwrap
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import nbformat
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import labsupport.api
from labsupport.api import create_app
from labsupport.classroom.checks import CheckFailed
from labsupport.classroom.checks import exercise3 as ex3
from labsupport.classroom.checks import shutdown as sd
from labsupport.classroom.workbook import notebook_parameters
from labsupport.data import catalogue_movies, demo_ratings
from labsupport.recommender import Model, build_model
from labsupport.retry import TaskFailedError, poll_task
from labsupport.server import serve_in_thread
from labsupport.store import MemoryStore, SQLiteStore, Store
from labsupport.tasks import RebuildService, TaskStatus, counter_ids

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
P05 = notebook_parameters(NOTEBOOKS / "05_shutdown_and_persistence.ipynb")
P06 = notebook_parameters(NOTEBOOKS / "06_exercise3_preview.ipynb")


def demo_store(store: Store, p: dict[str, Any]) -> Store:
    store.add_movies((m.title, m.year, m.genre) for m in catalogue_movies())
    store.add_ratings(demo_ratings(n_users=p["N_USERS"], seed=p["SEED"]))
    return store


def wait_for(client: httpx.Client, task_id: str, status: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while client.get(f"/recommender/rebuild/{task_id}").json()["status"] != status:
        assert time.monotonic() < deadline, f"{task_id} never reached {status}"
        time.sleep(0.02)


def stop_during_build(grace: float) -> tuple[FastAPI, str, float]:
    """Serve notebook 05's app, start a rebuild, stop the server while it runs."""
    app = create_app(
        demo_store(MemoryStore(), P05),
        build_options={"rank": P05["RANK"], "seed": P05["SEED"]},
        build_delay=P05["BUILD_DELAY"],
        shutdown_grace=grace,
        task_id_factory=counter_ids(),
    )
    srv = serve_in_thread(app)
    with httpx.Client(base_url=srv.url) as client:
        answer = client.post("/recommender/rebuild")
        assert answer.status_code == 202
        task_id = answer.json()["task_id"]
        wait_for(client, task_id, "running")
    started = time.monotonic()
    srv.stop()
    return app, task_id, time.monotonic() - started


# ---------------------------------------------------------------- notebook 05


def test_notebook_05_timing_story_holds() -> None:
    assert P05["SHORT_GRACE"] < P05["BUILD_DELAY"] < P05["LONG_GRACE"]


def test_short_grace_interrupts_the_running_rebuild(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="labsupport.tasks"):
        app, task_id, _ = stop_during_build(P05["SHORT_GRACE"])
    task = app.state.service.get(task_id)
    assert task_id == "task-1"
    assert task.status is TaskStatus.INTERRUPTED
    assert task.error == "the service shut down before this rebuild finished"
    assert "interrupted 1 unfinished rebuild(s) at shutdown" in caplog.messages
    refused = TestClient(app).post("/recommender/rebuild")
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "1"
    assert app.state.service.model is None  # the late result is never swapped in


def test_long_grace_lets_the_rebuild_complete() -> None:
    app, task_id, _ = stop_during_build(P05["LONG_GRACE"])
    task = app.state.service.get(task_id)
    assert task.status is TaskStatus.COMPLETE
    assert task.model_version == 1
    assert task.error is None
    assert app.state.service.model is not None


def test_state_survives_a_sqlite_reopen(tmp_path: Path) -> None:
    options = {"rank": P05["RANK"], "seed": P05["SEED"]}
    db = tmp_path / "movies.db"
    store = demo_store(SQLiteStore(db), P05)
    service = RebuildService(store, build_options=options, task_id_factory=counter_ids("first-"))
    assert service.rebuild_now().status is TaskStatus.COMPLETE
    pending, created = service.request(idempotency_key="nightly")
    assert created and pending.status is TaskStatus.QUEUED
    store.add_rating(7, 3, 5)
    before = (store.count_movies(), store.count_ratings(), store.ratings_version())
    store.close()  # the "crash": no shutdown

    with SQLiteStore(db) as store2:
        service2 = RebuildService(
            store2, build_options=options, task_id_factory=counter_ids("second-")
        )
        assert (store2.count_movies(), store2.count_ratings(), store2.ratings_version()) == before
        statuses = {t.task_id: t.status for t in service2.tasks()}
        assert statuses == {"first-1": TaskStatus.COMPLETE, "first-2": TaskStatus.INTERRUPTED}
        restored = service2.get("first-2")
        assert restored is not None
        assert restored.error == "the service stopped before this rebuild finished"
        assert service2.model is None
        rebuilt = service2.rebuild_now()
        assert (rebuilt.task_id, rebuilt.status, rebuilt.model_version) == (
            "second-1",
            TaskStatus.COMPLETE,
            2,  # versions keep counting across a restart: "version 1" names one model
        )
        again, created = service2.request(idempotency_key="nightly")
        assert (again.task_id, created) == ("first-2", False)


# ---------------------------------------------------------------- notebook 06


class NaiveAutoRebuilder:
    """Notebook 06's starter, verbatim."""

    def __init__(self, client: Any, every: int) -> None:
        self.client, self.every = client, every

    def __call__(self) -> str | None:
        since = self.client.get("/recommender").json()["ratings_since_build"]
        if since < self.every:
            return None
        task_id: str = self.client.post("/recommender/rebuild").json()["task_id"]
        return task_id


class AutoRebuilder(NaiveAutoRebuilder):
    """Notebook 06's Exercise 3 solution."""

    pending: str | None = None

    def __call__(self) -> str | None:
        if self.pending is not None:
            status = self.client.get(f"/recommender/rebuild/{self.pending}").json()["status"]
            if status in ("queued", "running"):
                return None
        self.pending = super().__call__()
        return self.pending


def test_auto_rebuild_starter_triggers_once_per_n_ratings() -> None:
    p = P06
    app = create_app(
        demo_store(MemoryStore(), p),
        build_options={"rank": p["RANK"], "seed": p["SEED"]},
        task_id_factory=counter_ids(),
    )
    service = app.state.service
    with TestClient(app) as client:
        service.wait(client.post("/recommender/rebuild").json()["task_id"], timeout=10)
        rebuilder = NaiveAutoRebuilder(client, p["EVERY"])
        scores = np.random.default_rng(p["SEED"]).integers(1, 6, size=p["N_NEW_RATINGS"])
        fired = []
        for movie_id, score in enumerate(scores.tolist(), start=1):
            rating = {"movie_id": movie_id, "user_id": p["NEW_USER"], "score": score}
            assert client.post("/ratings", json=rating).status_code == 201
            task_id = rebuilder()
            if task_id is not None:
                assert service.wait(task_id, timeout=10).status is TaskStatus.COMPLETE
                fired.append((movie_id, task_id))
        answer = client.get(f"/recommendations/{p['NEW_USER']}", params={"exclude_rated": True})
    assert fired == [(5, "task-2"), (10, "task-3"), (15, "task-4")]
    assert answer.headers["X-Model-Version"] == "4"


def test_auto_rebuild_check_catches_the_starter_race() -> None:
    with pytest.raises(CheckFailed, match=r"after ratings \[5, 6, 7, 8, 9, 14\]"):
        ex3.check_auto_rebuilder(NaiveAutoRebuilder)


def test_auto_rebuild_check_passes_the_solution(capsys: pytest.CaptureFixture[str]) -> None:
    ex3.check_auto_rebuilder(AutoRebuilder)
    assert "after ratings [5, 10, 15]" in capsys.readouterr().out


def test_auto_rebuild_check_explains_never_asking() -> None:
    with pytest.raises(CheckFailed, match="never asked"):
        ex3.check_auto_rebuilder(lambda client, every: lambda: None)


def test_auto_rebuild_check_wants_task_ids() -> None:
    class ReturnsTrue(AutoRebuilder):
        def __call__(self) -> Any:
            return True if super().__call__() else None

    with pytest.raises(CheckFailed, match="return the task_id"):
        ex3.check_auto_rebuilder(ReturnsTrue)


# ---------------------------------------------------------------- checks: notebook 05


def test_check_expected_state() -> None:
    sd.check_expected_state(lambda b, r, g: "complete" if b - r <= g else "interrupted")
    with pytest.raises(CheckFailed, match="build_seconds - running_for"):
        sd.check_expected_state(lambda b, r, g: "complete" if b <= g else "interrupted")
    with pytest.raises(CheckFailed, match="return the string"):
        sd.check_expected_state(lambda b, r, g: True)  # type: ignore[arg-type, return-value]


def rebuild_until_complete(client: Any, attempts: int = 3) -> dict[str, Any]:
    """Notebook 05's Exercise 2 solution."""
    for _ in range(attempts):
        headers = {"Idempotency-Key": f"rebuild-{uuid.uuid4()}"}
        task_id = client.post("/recommender/rebuild", headers=headers).json()["task_id"]
        try:
            return poll_task(client, f"/recommender/rebuild/{task_id}", interval=0.01)
        except TaskFailedError as exc:
            if exc.status != "interrupted":
                raise
    raise RuntimeError("no rebuild completed")


def _poll_once(client: Any, headers: dict[str, str] | None = None) -> dict[str, Any]:
    task_id = client.post("/recommender/rebuild", headers=headers or {}).json()["task_id"]
    while (body := client.get(f"/recommender/rebuild/{task_id}").json())["status"] in (
        "queued",
        "running",
    ):
        pass
    result: dict[str, Any] = body
    return result


def test_check_rebuild_until_complete_passes_the_solution(
    capsys: pytest.CaptureFixture[str],
) -> None:
    sd.check_rebuild_until_complete(rebuild_until_complete)
    assert "interrupted task-1, asked again, task-2 completed" in capsys.readouterr().out


def test_check_rebuild_until_complete_wants_a_second_request() -> None:
    with pytest.raises(CheckFailed, match="POST /recommender/rebuild again"):
        sd.check_rebuild_until_complete(_poll_once)


def test_check_rebuild_until_complete_catches_a_reused_key() -> None:
    def same_key(client: Any) -> dict[str, Any]:
        for _ in range(3):
            body = _poll_once(client, {"Idempotency-Key": "fixed"})
            if body["status"] == "complete":
                break
        return body

    with pytest.raises(CheckFailed, match="reused the first request's Idempotency-Key"):
        sd.check_rebuild_until_complete(same_key)


def test_check_rebuild_until_complete_stops_endless_polling() -> None:
    def forever(client: Any) -> dict[str, Any]:
        task_id = client.post("/recommender/rebuild").json()["task_id"]
        while (body := client.get(f"/recommender/rebuild/{task_id}").json())["status"] != (
            "complete"
        ):
            pass
        result: dict[str, Any] = body
        return result

    with pytest.raises(CheckFailed, match="a final state never changes"):
        sd.check_rebuild_until_complete(forever)


def test_fake_client_answers_404_for_unknown_tasks() -> None:
    assert sd.FakeRebuildClient().get("/recommender/rebuild/nope").status_code == 404


def warm_start(cache: Any, store: Store) -> tuple[Model, str]:
    """Notebook 05's Exercise 3 solution."""
    model = cache.load_model()
    if model is not None:
        return model, "cache"
    model = build_model(store.rating_arrays(), rank=P05["RANK"], seed=P05["SEED"])
    cache.save_model(model)
    return model, "built"


def test_check_warm_start(capsys: pytest.CaptureFixture[str]) -> None:
    sd.check_warm_start(warm_start)
    assert "\u2714" in capsys.readouterr().out

    def never_saves(cache: Any, store: Store) -> tuple[Model, str]:
        return build_model(store.rating_arrays(), rank=4), "built"

    with pytest.raises(CheckFailed, match=r"cache\.save_model"):
        sd.check_warm_start(never_saves)

    def always_builds(cache: Any, store: Store) -> tuple[Model, str]:
        model = build_model(store.rating_arrays(), rank=4)
        cache.save_model(model)
        return model, "built"

    with pytest.raises(CheckFailed, match="second call found a cached model"):
        sd.check_warm_start(always_builds)


# ---------------------------------------------------------------- checks: notebook 06


def test_check_protected() -> None:
    writes = {("POST", "/movies"), ("POST", "/ratings"), ("POST", "/recommender/rebuild")}
    ex3.check_protected(writes | {("GET", "/recommendations/{user_id}")})
    with pytest.raises(CheckFailed, match="protect every POST"):
        ex3.check_protected(writes - {("POST", "/movies")})
    with pytest.raises(CheckFailed, match="must stay open"):
        ex3.check_protected(writes | {("GET", "/health")})
    with pytest.raises(CheckFailed, match="not a route of the app"):
        ex3.check_protected(writes | {("GET", "/recommendations/7")})


def test_app_routes_lists_templates() -> None:
    routes = ex3.app_routes()
    assert ("GET", "/recommendations/{user_id}") in routes
    assert routes >= ex3.MUST_PROTECT
    assert not any(method == "HEAD" for method, _ in routes)


def add_status_counter(app: FastAPI) -> Counter[str]:
    """Notebook 06's Exercise 2 solution."""
    statuses: Counter[str] = Counter()

    @app.middleware("http")
    async def count_status(request: Any, call_next: Any) -> Any:
        response = await call_next(request)
        statuses[f"{response.status_code // 100}xx"] += 1
        return response

    return statuses


def test_check_status_counter() -> None:
    ex3.check_status_counter(add_status_counter)

    def raw_codes(app: FastAPI) -> Counter[str]:
        statuses: Counter[str] = Counter()

        @app.middleware("http")
        async def count(request: Any, call_next: Any) -> Any:
            response = await call_next(request)
            statuses[str(response.status_code)] += 1
            return response

        return statuses

    with pytest.raises(CheckFailed, match="keys should look like '2xx'"):
        ex3.check_status_counter(raw_codes)
    with pytest.raises(CheckFailed, match="counter stayed empty"):
        ex3.check_status_counter(lambda app: Counter())
    with pytest.raises(CheckFailed, match=r"return the collections\.Counter"):
        ex3.check_status_counter(lambda app: {})  # type: ignore[arg-type, return-value]


def test_the_lifespan_notebook_05_shows_is_the_services_own() -> None:
    nb = nbformat.read(NOTEBOOKS / "05_shutdown_and_persistence.ipynb", as_version=4)
    (cell,) = [c for c in nb.cells if "reference service's `lifespan`" in c.source]
    shown = re.findall(r"```python\n(.*?)```", cell.source, re.S)[0]
    source = inspect.getsource(labsupport.api)
    assert textwrap.indent(shown, "    ") in source
