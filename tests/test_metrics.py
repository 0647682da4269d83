"""`GET /metrics`: the Prometheus text format, parsed with prometheus_client's own parser."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from labsupport.api import create_app
from labsupport.api.metrics import OTHER_METHOD, UNMATCHED
from labsupport.recommender import Model, build_model
from labsupport.server import serve_in_thread
from labsupport.store import MemoryStore
from labsupport.tasks import FINAL_STATES, RebuildService, Task, counter_ids

FAMILIES = {
    # parsed family name (a counter's loses `_total`): type, label names
    "labsupport_rebuild_tasks": ("counter", {"trigger", "status"}),
    "labsupport_rebuild_duration_seconds": ("histogram", set()),
    "labsupport_rebuild_queue_depth": ("gauge", set()),
    "labsupport_model_version": ("gauge", set()),
    "labsupport_model_staleness_seconds": ("gauge", set()),
    "labsupport_ratings_since_build": ("gauge", set()),
    "labsupport_http_requests": ("counter", {"method", "route", "status"}),
}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> tuple[dict[str, str], Samples]:
    """Each family's type, and every sample's value keyed by `(name, labels)`."""
    types: dict[str, str] = {}
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return types, samples


def scrape(http: TestClient | httpx.Client) -> Samples:
    response = http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)[1]


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 for a labelled series not shown yet (a counter not yet counted)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def requests_at(samples: Samples, method: str, route: str, status: str) -> float:
    labels = {"method": method, "route": route, "status": status}
    return value(samples, "labsupport_http_requests_total", **labels)


def done(trigger: str = "manual", status: str = "complete") -> dict[str, str]:
    return {"trigger": trigger, "status": status}


class GatedBuilder:
    """A builder that waits for `gate` (so a build stays running), then builds or fails."""

    def __init__(self, *, fail: bool = False) -> None:
        self.gate = threading.Event()
        self.started = threading.Event()
        self.fail = fail

    def __call__(self, ratings: Any, *, version: int, progress: Any) -> Model:
        self.started.set()
        assert self.gate.wait(10), "the test never opened the gate"
        if self.fail:
            raise RuntimeError("boom")
        return build_model(ratings, version=version, rank=2)


def gated_app(store: MemoryStore, builder: GatedBuilder) -> FastAPI:
    service = RebuildService(store, build=builder, task_id_factory=counter_ids())
    return create_app(service=service)


# -- the format ---------------------------------------------------------------------


def test_every_metric_is_there_with_its_type_and_labels(client: TestClient) -> None:
    client.get("/health")
    types, samples = parse(client.get("/metrics").text)
    assert {name: types.get(name) for name in FAMILIES} == {n: t for n, (t, _) in FAMILIES.items()}
    for name, (kind, labels) in FAMILIES.items():
        shown = [dict(s) for (n, s) in samples if n.startswith(name)]
        assert shown, f"{name} has no samples"
        expected = labels | ({"le"} if kind == "histogram" else set())
        assert all(set(s) <= expected for s in shown), (name, shown)
    outcomes = {dict(s)["status"] for (n, s) in samples if n == "labsupport_rebuild_tasks_total"}
    assert outcomes == {str(status) for status in FINAL_STATES}  # each shown from the start


def test_a_fresh_app_shows_no_model_and_no_builds(client: TestClient) -> None:
    samples = scrape(client)
    assert value(samples, "labsupport_model_version") == 0
    assert value(samples, "labsupport_rebuild_queue_depth") == 0
    assert value(samples, "labsupport_rebuild_duration_seconds_count") == 0
    assert value(samples, "labsupport_rebuild_tasks_total", **done()) == 0


def test_metrics_is_documented_as_plain_text(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/metrics"]
    assert set(operation) == {"get"}
    assert "text/plain" in operation["get"]["responses"]["200"]["content"]
    assert "requestBody" not in operation["get"] and not operation["get"].get("parameters")


# -- values that move -----------------------------------------------------------------


def test_a_rebuild_moves_the_task_count_the_durations_and_the_version(client: TestClient) -> None:
    client.post("/ratings", json={"movie_id": 4, "user_id": 9, "score": 5})
    before = scrape(client)
    assert value(before, "labsupport_ratings_since_build") >= 1
    task_id = client.post("/recommender/rebuild").json()["task_id"]
    assert client.app.state.service.wait(task_id, timeout=10).done  # type: ignore[attr-defined]
    after = scrape(client)
    tasks = "labsupport_rebuild_tasks_total"
    assert value(after, tasks, **done()) == value(before, tasks, **done()) + 1
    count = "labsupport_rebuild_duration_seconds_count"
    assert value(after, count) == value(before, count) + 1
    assert value(after, "labsupport_rebuild_duration_seconds_sum") > 0
    inf = value(after, "labsupport_rebuild_duration_seconds_bucket", le="+Inf")
    assert inf == value(after, count)
    assert value(after, "labsupport_model_version") != value(before, "labsupport_model_version")
    assert value(after, "labsupport_model_version") == 1
    assert value(after, "labsupport_ratings_since_build") == 0


def test_a_failed_build_counts_as_failed_and_adds_no_duration(store: MemoryStore) -> None:
    builder = GatedBuilder(fail=True)
    builder.gate.set()
    with TestClient(gated_app(store, builder)) as client:
        task_id = client.post("/recommender/rebuild").json()["task_id"]
        assert client.app.state.service.wait(task_id, timeout=10).done  # type: ignore[attr-defined]
        samples = scrape(client)
    assert value(samples, "labsupport_rebuild_tasks_total", **done(status="failed")) == 1
    assert value(samples, "labsupport_rebuild_tasks_total", **done()) == 0
    assert value(samples, "labsupport_rebuild_duration_seconds_count") == 0
    assert value(samples, "labsupport_model_version") == 0


def test_the_task_counter_never_goes_down_when_tasks_are_forgotten(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Redis expires ended tasks: a count over the listed tasks alone would drop.
    service = client.app.state.service  # type: ignore[attr-defined]
    service.rebuild_now(timeout=10)
    assert value(scrape(client), "labsupport_rebuild_tasks_total", **done()) == 1
    monkeypatch.setattr(service, "tasks", list)  # the service now lists no task at all
    samples = scrape(client)
    assert value(samples, "labsupport_rebuild_tasks_total", **done()) == 1
    assert value(samples, "labsupport_rebuild_duration_seconds_count") == 1


def test_tasks_are_counted_under_their_trigger(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    @dataclasses.dataclass(frozen=True)
    class AutoTask(Task):  # a task automatic refresh started
        trigger: str = "auto"

    service = client.app.state.service  # type: ignore[attr-defined]
    manual = service.rebuild_now(timeout=10)
    fields = {f.name: getattr(manual, f.name) for f in dataclasses.fields(Task)}
    auto = AutoTask(**{**fields, "task_id": "auto-1", "trigger": "auto"})
    monkeypatch.setattr(service, "tasks", lambda: [manual, auto])
    samples = scrape(client)
    assert value(samples, "labsupport_rebuild_tasks_total", **done("auto")) == 1
    assert value(samples, "labsupport_rebuild_tasks_total", **done("manual")) == 1


def test_requests_are_counted_by_route_template(client: TestClient) -> None:
    before = scrape(client)
    for _ in range(3):
        assert client.get("/recommendations/7").status_code == 200
    assert client.get("/movies/4242").status_code == 404
    assert client.get("/no/such/page").status_code == 404
    assert client.request("BREW", "/movies").status_code == 405
    after = scrape(client)
    route = "/recommendations/{user_id}"
    assert requests_at(after, "GET", route, "200") == requests_at(before, "GET", route, "200") + 3
    assert requests_at(after, "GET", "/movies/{movie_id}", "404") == 1
    assert requests_at(after, "GET", UNMATCHED, "404") == 1
    assert requests_at(after, OTHER_METHOD, "/movies", "405") == 1
    routes = {dict(s).get("route") for (n, s) in after if n == "labsupport_http_requests_total"}
    assert not any(r and ("/7" in r or "4242" in r or "such" in r) for r in routes), routes
    assert requests_at(after, "GET", "/metrics", "200") == 1  # the scrape before this one


def test_guard_answers_count_under_their_route_and_metrics_never_fails(store: MemoryStore) -> None:
    with TestClient(create_app(store, failure_rate=1.0)) as client:
        assert client.get("/movies").status_code == 503
        oversized = b"0" * 70_000
        assert client.post("/ratings", content=oversized).status_code == 413
        samples = scrape(client)  # exempt from the injected failures
    assert requests_at(samples, "GET", "/movies", "503") == 1
    assert requests_at(samples, "POST", "/ratings", "413") == 1


def test_a_crashing_handler_counts_as_500(app: FastAPI) -> None:
    def crash() -> None:
        raise RuntimeError("boom")

    app.add_api_route("/crash", crash)
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/crash").status_code == 500
        samples = scrape(client)
    assert requests_at(samples, "GET", "/crash", "500") == 1


def test_each_app_counts_only_its_own_requests(store: MemoryStore) -> None:
    first, second = create_app(store), create_app(store)
    with TestClient(first) as one, TestClient(second) as other:
        one.get("/health")
        assert requests_at(scrape(one), "GET", "/health", "200") == 1
        assert requests_at(scrape(other), "GET", "/health", "200") == 0


def test_a_new_rating_makes_the_model_stale_until_the_next_build(client: TestClient) -> None:
    service = client.app.state.service  # type: ignore[attr-defined]
    service.rebuild_now(timeout=10)
    fresh = scrape(client)
    assert value(fresh, "labsupport_model_staleness_seconds") == 0
    assert value(fresh, "labsupport_ratings_since_build") == 0
    client.post("/ratings", json={"movie_id": 4, "user_id": 9, "score": 5})
    stale = scrape(client)
    assert value(stale, "labsupport_model_staleness_seconds") > 0
    assert value(stale, "labsupport_ratings_since_build") == 1
    service.rebuild_now(timeout=10)
    assert value(scrape(client), "labsupport_model_staleness_seconds") == 0


# -- over real HTTP -------------------------------------------------------------------


@pytest.fixture
def gated_server(store: MemoryStore) -> Iterator[tuple[httpx.Client, FastAPI, GatedBuilder]]:
    builder = GatedBuilder()
    app = gated_app(store, builder)
    try:
        with serve_in_thread(app) as srv, httpx.Client(base_url=srv.url, timeout=10) as http:
            yield http, app, builder
    finally:
        builder.gate.set()  # never leave a build waiting


def test_queue_depth_shows_a_running_and_a_queued_build(
    gated_server: tuple[httpx.Client, FastAPI, GatedBuilder],
) -> None:
    http, app, builder = gated_server
    assert value(scrape(http), "labsupport_rebuild_queue_depth") == 0
    first = http.post("/recommender/rebuild").json()["task_id"]
    assert builder.started.wait(10)  # running, held at the gate
    assert value(scrape(http), "labsupport_rebuild_queue_depth") == 1
    second = http.post("/recommender/rebuild").json()["task_id"]  # queued behind it
    assert value(scrape(http), "labsupport_rebuild_queue_depth") == 2
    builder.gate.set()
    for task_id in (first, second):
        assert str(app.state.service.wait(task_id, timeout=10).status) == "complete"
    samples = scrape(http)
    assert value(samples, "labsupport_rebuild_queue_depth") == 0
    assert value(samples, "labsupport_rebuild_tasks_total", **done()) == 2
    assert value(samples, "labsupport_model_version") == 2
    assert requests_at(samples, "POST", "/recommender/rebuild", "202") == 2
    assert requests_at(samples, "GET", "/metrics", "200") == 3  # the scrapes before this one
