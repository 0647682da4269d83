"""Notebook 03 (Lab 1, the background rebuild): its key results, pitfalls, checks and plots.

The key results are recomputed with the notebook's own parameters, against a
freshly started app over real HTTP (``serve_in_thread``), so a regression
says which recorded output would change.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import matplotlib
import numpy as np
import pytest
from fastapi import BackgroundTasks, FastAPI, HTTPException
from fastapi.testclient import TestClient

from labsupport.api import create_app
from labsupport.classroom.checks import CheckFailed
from labsupport.classroom.checks.rebuild import (
    check_hand_polling,
    check_idempotent_retry,
    check_new_user_recommendations,
    check_refuses_without_ratings,
    check_success_criteria,
)
from labsupport.classroom.pitfalls import (
    TaskBoard,
    blocking_app,
    early_error_app,
    never_runs_app,
    post_while_probing,
    rebuild_outcome,
    seed_style_app,
)
from labsupport.classroom.plots.states import distinct_states, score_heatmaps, state_timeline
from labsupport.classroom.workbook import notebook_parameters
from labsupport.data import catalogue_movies, demo_ratings
from labsupport.recommender import score_matrix
from labsupport.retry import poll_task
from labsupport.server import serve_in_thread
from labsupport.store import MemoryStore, Store
from labsupport.tasks import RebuildService, counter_ids

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after choosing the backend

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "03_background_rebuild.ipynb"
P = notebook_parameters(NOTEBOOK)
NEW_RATINGS = {43: 5, 44: 5, 45: 5, 46: 4, 13: 1}  # step 2 of the notebook
REBUILD = "/recommender/rebuild"


def fresh_store() -> MemoryStore:
    store = MemoryStore()
    store.add_movies((m.title, m.year, m.genre) for m in catalogue_movies())
    store.add_ratings(demo_ratings(n_users=P["N_USERS"], seed=P["SEED"]))
    return store


def timed_post(client: Any, url: str, **kwargs: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    response = client.post(url, **kwargs)
    return response, time.perf_counter() - start


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[FastAPI, httpx.Client]]:
    """The notebook's service: its store, build delay and task ids, over real HTTP."""
    app = create_app(
        fresh_store(),
        build_delay=P["BUILD_DELAY"],
        task_id_factory=counter_ids(),
        shutdown_grace=0.5,
    )
    with serve_in_thread(app) as srv, httpx.Client(base_url=srv.url, timeout=10) as http:
        yield app, http


# --- key results ---------------------------------------------------------------


def test_first_rebuild_is_seen_queued_running_complete(
    served: tuple[FastAPI, httpx.Client],
) -> None:
    _, http = served
    user = P["NEW_USER"]
    for movie_id, score in NEW_RATINGS.items():
        r = http.post("/ratings", json={"movie_id": movie_id, "user_id": user, "score": score})
        assert r.status_code == 201
    before = http.get(f"/recommendations/{user}")
    assert before.headers["X-Model-Version"] == "none"
    assert before.json() == [1, 2, 3, 4, 5]

    answer, took = timed_post(http, REBUILD)
    assert answer.status_code == 202
    assert answer.json() == {"task_id": "task-1", "status": "queued"}
    assert took < P["FAST"]
    records = [answer.json()]
    final = poll_task(
        http,
        answer.headers["Location"],
        interval=P["POLL_INTERVAL"],
        max_interval=P["POLL_INTERVAL"],
        on_status=records.append,
    )
    assert final["status"] == "complete"
    assert final["model_version"] == 1
    assert distinct_states(records) == ["queued", "running", "complete"]

    after = http.get(f"/recommendations/{user}")
    assert after.headers["X-Model-Version"] == "1"
    assert after.json()[:4] == [45, 44, 43, 46]  # the user's own favourites first


def test_second_rebuild_moves_the_fans_documentaries() -> None:
    service = RebuildService(fresh_store(), task_id_factory=counter_ids())
    for movie_id, score in NEW_RATINGS.items():
        service.store.add_rating(P["NEW_USER"], movie_id, score)
    service.rebuild_now()
    old_model = service.model
    assert old_model is not None
    old_scores = score_matrix(old_model)

    rng = np.random.default_rng(P["SEED"])
    users = np.arange(1, P["N_USERS"] + 1)
    fans = sorted(rng.choice(users, size=P["BATCH_USERS"], replace=False).tolist())
    documentaries = [m.id for m in catalogue_movies() if m.genre == "Documentary"]
    for user in fans:
        for movie in documentaries:
            service.store.add_rating(user, movie, 5)
    assert service.rebuild_now().status.value == "complete"
    new_model = service.model
    assert new_model is not None and new_model is not old_model
    assert old_model.version == 1 and np.array_equal(score_matrix(old_model), old_scores)

    change = np.abs(score_matrix(new_model) - old_scores)
    top_columns = new_model.movie_ids[np.argsort(change.mean(axis=0))[-len(documentaries) :]]
    top_rows = new_model.user_ids[np.argsort(change.mean(axis=1))[-P["BATCH_USERS"] :]]
    assert sorted(top_columns) == documentaries
    assert sorted(top_rows) == fans


def test_success_criteria_hold_over_http(
    served: tuple[FastAPI, httpx.Client], capsys: pytest.CaptureFixture[str]
) -> None:
    _, http = served
    check_success_criteria(
        http,
        user_id=P["CHECK_USER"],
        ratings={61: 5, 62: 5, 63: 4},
        fast=P["FAST"],
        interval=P["POLL_INTERVAL"],
    )
    assert capsys.readouterr().out.count("\u2714") == 3


# --- what TestClient waits for ------------------------------------------------------


def test_testclient_waits_for_the_seed_style_background_function() -> None:
    client = TestClient(seed_style_app(build_delay=P["PITFALL_DELAY"]))
    r, took = timed_post(client, REBUILD)
    assert r.json() == {"task_id": "task-1", "status": "queued"}
    assert took >= P["PITFALL_DELAY"]
    assert client.get(f"{REBUILD}/task-1").json()["status"] == "complete"


def test_testclient_returns_at_once_for_labsupport_thread_handoff() -> None:
    app = create_app(fresh_store(), build_delay=P["BUILD_DELAY"], task_id_factory=counter_ids())
    client = TestClient(app)
    client.get("/health")  # the first request builds the middleware stack
    r, took = timed_post(client, REBUILD)
    assert took < P["FAST"]
    assert client.get(r.headers["Location"]).json()["status"] in ("queued", "running")
    # (the worker is a daemon thread: it finishes its build on its own)


def test_seed_style_over_http_shows_running() -> None:
    app = seed_style_app(build_delay=P["PITFALL_DELAY"])
    with serve_in_thread(app) as srv, httpx.Client(base_url=srv.url) as c:
        r, took = timed_post(c, REBUILD)
        seen = [r.json()]
        poll_task(c, f"{REBUILD}/task-1", interval=P["POLL_INTERVAL"], on_status=seen.append)
    assert took < P["FAST"]
    assert distinct_states(seen) == ["queued", "running", "complete"]


# --- pitfall verdicts -------------------------------------------------------------


@pytest.mark.parametrize(
    ("mistake", "status", "waited"),
    [("await", "complete", True), ("direct", "complete", True), (None, "queued", False)],
)
def test_blocking_mistakes_make_the_post_wait(mistake: Any, status: str, waited: bool) -> None:
    app = blocking_app(build_delay=P["PITFALL_DELAY"], mistake=mistake)
    with serve_in_thread(app) as srv, httpx.Client(base_url=srv.url) as c:
        r, took = timed_post(c, REBUILD)
    assert r.status_code == 202
    assert r.json() == {"task_id": "task-1", "status": status}
    assert (took >= P["PITFALL_DELAY"]) is waited


@pytest.mark.parametrize(("mistake", "froze"), [("await", True), ("direct", True), (None, False)])
def test_a_build_inside_the_request_freezes_other_clients(mistake: Any, froze: bool) -> None:
    # `async def` around a CPU build does not free the loop: the second client waits too.
    delay = P["PITFALL_DELAY"]
    with serve_in_thread(blocking_app(build_delay=delay, mistake=mistake)) as srv:
        r, took, other = post_while_probing(srv.url, REBUILD, f"{REBUILD}/task-1")
    assert r.json()["status"] == ("queued" if mistake is None else "complete")
    assert (other >= delay / 2) is froze
    assert (took >= delay) is froze


NOT_CALLABLE = "TypeError: the first argument must be callable"
NEVER_AWAITED = "RuntimeWarning: coroutine 'run_rebuild_task' was never awaited"


@pytest.mark.parametrize(
    ("slip", "status", "logged", "warned"),
    [
        ("sync_call", "complete", [NOT_CALLABLE], []),  # built inside the request
        ("async_call", "queued", [NOT_CALLABLE], [NEVER_AWAITED]),
        ("no_await", "queued", [], [NEVER_AWAITED]),
    ],
)
def test_a_call_instead_of_the_function_is_caught_as_text(
    slip: Any, status: str, logged: list[str], warned: list[str], capfd: pytest.CaptureFixture[str]
) -> None:
    delay = P["PITFALL_DELAY"]
    seen = rebuild_outcome(never_runs_app(build_delay=delay, slip=slip), wait=2 * delay)
    assert seen.status_code == 202
    assert seen.answer == {"task_id": "task-1", "status": status}
    assert (seen.took >= delay) is (slip == "sync_call")
    assert seen.status == status and seen.waited == 2 * delay
    assert seen.logged == logged
    assert seen.warned == warned
    assert capfd.readouterr().err == ""  # no traceback, no warning on stderr
    server_log = logging.getLogger("uvicorn.error")
    assert server_log.propagate and not any(
        type(h).__name__ == "_ErrorLog" for h in server_log.handlers
    )


def test_rebuild_outcome_of_the_fix_logs_and_warns_nothing() -> None:
    app = blocking_app(build_delay=P["PITFALL_DELAY"], mistake=None)
    seen = rebuild_outcome(app, wait=2 * P["PITFALL_DELAY"])
    assert seen.answer["status"] == "queued" and seen.status == "complete"
    assert seen.logged == [] and seen.warned == []


def test_early_error_leaves_the_task_queued_forever() -> None:
    app = early_error_app(build_delay=P["PITFALL_DELAY"])
    with serve_in_thread(app) as srv, httpx.Client(base_url=srv.url) as c:
        r = c.post(REBUILD, params={"rank": 0}, headers={"X-Task-Id": "nightly-1"})
        assert r.status_code == 422
        with pytest.raises(TimeoutError, match="still 'queued'"):
            poll_task(
                c,
                f"{REBUILD}/nightly-1",
                interval=P["POLL_INTERVAL"],
                timeout=2 * P["PITFALL_DELAY"],
            )
    assert app.state.board.status == {"nightly-1": "queued"}


def test_early_error_fix_registers_nothing_and_then_runs() -> None:
    app = early_error_app(build_delay=P["PITFALL_DELAY"], fixed=True)
    with serve_in_thread(app) as srv, httpx.Client(base_url=srv.url) as c:
        r = c.post(REBUILD, params={"rank": 0}, headers={"X-Task-Id": "nightly-1"})
        assert r.status_code == 422
        assert r.json()["detail"][0]["msg"] == "Input should be greater than or equal to 1"
        assert c.get(f"{REBUILD}/nightly-1").json()["status"] == "unknown"
        c.post(REBUILD, params={"rank": 10}, headers={"X-Task-Id": "nightly-1"})
        final = poll_task(c, f"{REBUILD}/nightly-1", interval=P["POLL_INTERVAL"])
    assert final == {"task_id": "nightly-1", "status": "complete"}


def test_pitfall_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown mistake"):
        blocking_app(build_delay=0.1, mistake="sleep")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="build_delay"):
        TaskBoard(-1.0)
    with pytest.raises(ValueError, match="unknown slip 'await'; choose one of sync_call"):
        never_runs_app(build_delay=0.1, slip="await")  # type: ignore[arg-type]


# --- checks -------------------------------------------------------------------------


def test_check_hand_polling(capsys: pytest.CaptureFixture[str]) -> None:
    check_hand_polling(["queued", "running", "running", "complete"], 4)
    assert "\u2714" in capsys.readouterr().out
    with pytest.raises(CheckFailed, match="n_polls"):
        check_hand_polling(["running", "complete"], 5)
    with pytest.raises(CheckFailed, match="last status"):
        check_hand_polling(["queued", "running"], 2)
    with pytest.raises(CheckFailed, match="no 'running'"):
        check_hand_polling(["queued", "complete"], 2)


def test_check_new_user_recommendations(capsys: pytest.CaptureFixture[str]) -> None:
    check_new_user_recommendations([54, 52, 45], [26, 25, 29], {25: 5, 26: 5, 29: 5})
    assert "\u2714" in capsys.readouterr().out
    with pytest.raises(CheckFailed, match="did not change"):
        check_new_user_recommendations([1, 2], [1, 2], {1: 5})
    with pytest.raises(CheckFailed, match="none of the movies"):
        check_new_user_recommendations([1, 2], [3, 4], {9: 5})
    with pytest.raises(CheckFailed, match="list of movie ids"):
        check_new_user_recommendations("1,2", [3], {3: 5})  # type: ignore[arg-type]


def test_check_idempotent_retry(capsys: pytest.CaptureFixture[str]) -> None:
    check_idempotent_retry(
        {"task_id": "task-5", "status": "queued"}, {"task_id": "task-5", "status": "complete"}
    )
    assert "\u2714" in capsys.readouterr().out
    with pytest.raises(CheckFailed, match="same Idempotency-Key"):
        check_idempotent_retry({"task_id": "task-5"}, {"task_id": "task-6", "status": "queued"})
    with pytest.raises(CheckFailed, match="wait for the first task"):
        check_idempotent_retry({"task_id": "task-5"}, {"task_id": "task-5", "status": "queued"})


def _refusing_app(store: Store) -> FastAPI:
    """The exercise's solution, as in the notebook."""
    service = RebuildService(store, task_id_factory=counter_ids())
    api = FastAPI()

    @api.post("/recommender/rebuild", status_code=202)
    def rebuild(background: BackgroundTasks) -> dict[str, str]:
        if store.count_ratings() == 0:
            raise HTTPException(422, "no ratings yet: POST /ratings first")
        task, created = service.request()
        if created:
            background.add_task(service.start, task.task_id)
        return {"task_id": task.task_id, "status": task.status.value}

    return api


def _late_refusal_app(store: Store) -> FastAPI:
    """Refuses, but only after registering the task (step 12's bug)."""
    service = RebuildService(store, task_id_factory=counter_ids())
    api = FastAPI()

    @api.post("/recommender/rebuild", status_code=202)
    def rebuild(background: BackgroundTasks) -> dict[str, str]:
        task, _ = service.request()
        if store.count_ratings() == 0:
            raise HTTPException(422, "no ratings yet")
        background.add_task(service.start, task.task_id)
        return {"task_id": task.task_id, "status": "queued"}

    return api


def test_check_refuses_without_ratings(capsys: pytest.CaptureFixture[str]) -> None:
    check_refuses_without_ratings(_refusing_app)
    assert "\u2714" in capsys.readouterr().out
    with pytest.raises(CheckFailed, match="expected 422"):
        check_refuses_without_ratings(lambda store: create_app(store))
    with pytest.raises(CheckFailed, match="task record behind"):
        check_refuses_without_ratings(_late_refusal_app)


def test_check_success_criteria_names_a_slow_post() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/ratings":
            return httpx.Response(201, json={})
        if request.url.path == REBUILD:
            return httpx.Response(200, json={"task_id": "task-1", "status": "complete"})
        return httpx.Response(200, json=[1, 2, 3])

    with (
        httpx.Client(transport=httpx.MockTransport(handler), base_url="http://test") as client,
        pytest.raises(CheckFailed, match="criterion 1"),
    ):
        check_success_criteria(client, user_id=1, ratings={1: 5})


# --- plots --------------------------------------------------------------------------


def test_state_timeline_draws_a_labelled_figure() -> None:
    records = [
        {"t": 0.01, "status": "queued", "progress": 0.0},
        {"t": 0.1, "status": "running", "progress": 0.2},
        {"t": 0.6, "status": "running", "progress": 0.6},
        {"t": 1.1, "status": "complete", "progress": 1.0},
    ]
    fig = state_timeline(records)
    try:
        (ax,) = fig.axes
        assert ax.get_xlabel() == "time since the POST (s)"
        assert "fraction" in ax.get_ylabel()
        assert "queued → running → complete" in ax.get_title()
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert labels == ["queued", "running", "complete", "progress"]
    finally:
        plt.close(fig)


def test_state_timeline_rejects_bad_records() -> None:
    with pytest.raises(ValueError, match="at least one record"):
        state_timeline([])
    with pytest.raises(ValueError, match="time order"):
        state_timeline([{"t": 1.0, "status": "queued"}, {"t": 0.5, "status": "running"}])


def test_score_heatmaps_draws_three_panels() -> None:
    before = np.arange(12.0).reshape(3, 4)
    after = before + np.eye(3, 4)
    fig = score_heatmaps(before, after, user_ids=[1, 2, 9], movie_ids=[1, 2, 3, 4], title="t")
    try:
        heatmaps = [ax for ax in fig.axes if ax.get_images()]
        assert len(heatmaps) == 3 and len(fig.axes) == 6  # three colour bars
        assert [ax.get_title() for ax in heatmaps] == ["before", "after", "after \u2212 before"]
        assert all(ax.get_xlabel() == "movie id" for ax in heatmaps)
        assert heatmaps[0].get_ylabel() == "user id"
        assert heatmaps[2].get_images()[0].get_clim() == (-1.0, 1.0)
    finally:
        plt.close(fig)
    with pytest.raises(ValueError, match="same shape"):
        score_heatmaps(before, after[:2])


def test_distinct_states_keeps_first_seen_order() -> None:
    records = [{"status": s} for s in ("queued", "running", "running", "complete")]
    assert distinct_states(records) == ["queued", "running", "complete"]
