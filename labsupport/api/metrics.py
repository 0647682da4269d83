"""`GET /metrics`: what the service is doing, in the Prometheus text format.

`install_metrics(app)` gives an app its own `CollectorRegistry` (never
`prometheus_client`'s global one: a test or a notebook makes many apps in one
process) and a small middleware that counts answers; the route reads that
registry. `prometheus_client` writes the text; nothing here formats it.

| metric (labels) | type | what it says |
|---|---|---|
| `labsupport_rebuild_tasks_total` (`trigger`, `status`) | counter | tasks that ended |
| `labsupport_rebuild_duration_seconds` | histogram | build time of each `complete` task |
| `labsupport_rebuild_queue_depth` | gauge | tasks `queued` or `running` now |
| `labsupport_model_version` | gauge | the serving model's version (0: none yet) |
| `labsupport_model_staleness_seconds` | gauge | age of the oldest unseen rating (0: none) |
| `labsupport_ratings_since_build` | gauge | rating writes since the model's build |
| `labsupport_http_requests_total` (`method`, `route`, `status`) | counter | answers given |

"Tasks that ended" are those in a final state (`complete`, `failed`,
`interrupted`, and `canceled` where the service has it); "the oldest unseen
rating" is the oldest the serving model was not built from, so 0 means the
model is up to date; "answers given" are this process's own.

The rebuild and model metrics are read from the rebuild service at scrape
time (`service.tasks()`, `service.model`...), so they cost nothing per
request. Each final task is counted once, when a scrape first sees it, and
stays counted after the service forgets it (Redis expires ended tasks), so
the counter only goes up; every `trigger` and final `status` pair is shown
from the start, at 0. A build's duration is `finished_at - started_at`.

`route` is the route template (`/recommendations/{user_id}`), never the raw
path; a path no route matches counts as `UNMATCHED`, and an unusual method as
`OTHER_METHOD`, so a scanner cannot grow the label set. A request the guards
refuse (413, an injected 503) counts under the route it was meant for. A
request is counted when its answer starts, so a client that has its answer
always finds it counted.

**Several API processes over Redis.** The rebuild and model metrics come from
Redis, which every process shares: each process's `/metrics` shows the same
tasks, queue and model (up to a scrape's timing). `labsupport_http_requests_total`
counts only the requests that process answered. Scrape every process as its
own target; add the HTTP counters with `sum()`, and take the task and model
metrics from any one target or with `max()` (never `sum()`, which would count
each task once per process). If Redis is out of reach, `/metrics` answers 503
like every endpoint that needs it.
"""

from __future__ import annotations

import bisect
import collections
import threading
from collections.abc import Callable, Iterable, Sequence

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from labsupport.api.schemas import error_responses
from labsupport.tasks import FINAL_STATES, TRIGGERS, RebuildServiceProtocol, Task, TaskStatus

__all__ = [
    "CONTENT_TYPE",
    "DURATION_BUCKETS",
    "OTHER_METHOD",
    "UNMATCHED",
    "install_metrics",
    "router",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The media type of the Prometheus text format that `generate_latest` writes."""
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
"""Upper bounds of the build-time histogram, in seconds (a class's ratings to ML-25M)."""
UNMATCHED = "<unmatched>"
"""The `route` label of a request no route matches (a 404 for an unknown path)."""
OTHER_METHOD = "<other>"
"""The `method` label of a request whose method is not a standard HTTP one."""
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"})


class _Requests:
    """Answers counted by `(method, route, status)`; safe to share between threads."""

    def __init__(self) -> None:
        self._counts: collections.Counter[tuple[str, str, str]] = collections.Counter()
        self._lock = threading.Lock()

    def add(self, method: str, route: str, status: int) -> None:
        key = (method if method in _METHODS else OTHER_METHOD, route, str(status))
        with self._lock:
            self._counts[key] += 1

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(
            "labsupport_http_requests",
            "HTTP answers this process gave, by method, route template and status.",
            labels=["method", "route", "status"],
        )
        with self._lock:
            counts = sorted(self._counts.items())
        for labels, count in counts:
            family.add_metric(labels, count)
        yield family


def _route_of(scope: Scope, routes: Sequence[BaseRoute]) -> str:
    """The template of the route that serves (or would serve) this request."""
    route = scope.get("route")  # Starlette sets it once it has matched a route
    if route is None:  # refused before routing, or no route matched: match here
        matches = [(r, r.matches(scope)[0]) for r in routes]
        route = next((r for r, m in matches if m is Match.FULL), None) or next(
            (r for r, m in matches if m is Match.PARTIAL), None
        )
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


class _CountRequests:
    """Pure ASGI middleware: count every HTTP answer in a `_Requests` tally.

    The count is taken when the answer starts; a handler that raises before
    it answered counts as the 500 the server then sends.
    """

    def __init__(self, app: ASGIApp, *, requests: _Requests, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.requests = requests
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, counting its answer."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        answered = False

        async def counting_send(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start" and not answered:
                answered = True
                self.requests.add(scope["method"], _route_of(scope, self.routes), message["status"])
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        except Exception:
            if not answered:
                self.requests.add(scope["method"], _route_of(scope, self.routes), 500)
            raise


class _Builds:
    """Final tasks counted once each, with the build times of the complete ones."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counted: set[str] = set()  # final tasks the service still lists
        self.outcomes: collections.Counter[tuple[str, str]] = collections.Counter(
            {(trigger, str(status)): 0 for trigger in TRIGGERS for status in FINAL_STATES}
        )
        self.buckets = [0] * (len(DURATION_BUCKETS) + 1)  # the last one is +Inf
        self.seconds = 0.0

    def update(self, tasks: Iterable[Task]) -> None:
        """Count the final tasks not counted yet; forget the ones no longer listed."""
        final = {task.task_id: task for task in tasks if task.done}
        with self._lock:
            for task_id in final.keys() - self._counted:
                self._add(final[task_id])
            self._counted = set(final)

    def _add(self, task: Task) -> None:
        self.outcomes[(task.trigger, str(task.status))] += 1
        if task.status is TaskStatus.COMPLETE and task.started_at and task.finished_at:
            duration = max(0.0, task.finished_at - task.started_at)
            self.buckets[bisect.bisect_left(DURATION_BUCKETS, duration)] += 1
            self.seconds += duration

    def families(self) -> Iterable[Metric]:
        tasks = CounterMetricFamily(
            "labsupport_rebuild_tasks",
            "Rebuild tasks that reached a final state, by what started them and how they ended.",
            labels=["trigger", "status"],
        )
        with self._lock:
            for labels, count in sorted(self.outcomes.items()):
                tasks.add_metric(labels, count)
            cumulative = [sum(self.buckets[: i + 1]) for i in range(len(self.buckets))]
            seconds = self.seconds
        yield tasks
        bounds = [*map(floatToGoString, DURATION_BUCKETS), "+Inf"]
        yield HistogramMetricFamily(
            "labsupport_rebuild_duration_seconds",
            "Build time of each complete rebuild task (finished_at - started_at).",
            buckets=list(zip(bounds, cumulative, strict=True)),
            sum_value=seconds,
        )


class _ServiceCollector:
    """Read the rebuild service at scrape time: tasks, queue and model."""

    def __init__(self, service: Callable[[], RebuildServiceProtocol]) -> None:
        self.service = service
        self.builds = _Builds()

    def collect(self) -> Iterable[Metric]:
        service = self.service()
        tasks = service.tasks()
        self.builds.update(tasks)
        yield from self.builds.families()
        model = service.model
        gauges = {
            "labsupport_rebuild_queue_depth": (
                "Rebuild tasks queued or running now.",
                sum(not task.done for task in tasks),
            ),
            "labsupport_model_version": (
                "Version of the serving model (0 before the first build).",
                model.version if model is not None else 0,
            ),
            "labsupport_model_staleness_seconds": (
                "Age of the oldest rating the serving model has not seen (0: up to date).",
                _staleness(service),
            ),
            "labsupport_ratings_since_build": (
                "Rating writes since the serving model was built.",
                service.ratings_since_build(),
            ),
        }
        for name, (documentation, value) in gauges.items():
            yield GaugeMetricFamily(name, documentation, value=value)


def _staleness(service: RebuildServiceProtocol) -> float:
    """The service's `staleness_seconds()`, 0 when the model has seen every rating."""
    value = service.staleness_seconds()
    return 0.0 if value is None else value


def install_metrics(app: FastAPI) -> CollectorRegistry:
    """Give `app` its own metrics registry and count its answers; `GET /metrics` shows both.

    Install it after the other middleware, so the count also sees the
    answers the guards give (413, injected 503).

    Args:
        app: the app to measure; its rebuild service is `app.state.service`,
            read at every scrape.

    Returns:
        The registry, also kept as `app.state.metrics`.
    """
    registry = CollectorRegistry()
    requests = _Requests()
    registry.register(_ServiceCollector(lambda: app.state.service))
    registry.register(requests)
    app.add_middleware(_CountRequests, requests=requests, routes=app.router.routes)
    app.state.metrics = registry
    return registry


router = APIRouter(tags=["service"])


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={
        200: {"description": "The metrics, in the Prometheus text format (version 0.0.4)."},
        **error_responses(503),
    },
)
def metrics(request: Request) -> Response:
    """Show the service's metrics in the Prometheus text format, for a Prometheus scrape.

    Not rate-limited and never an injected failure. With the service in
    Redis, a Redis outage answers 503.
    """
    registry: CollectorRegistry = request.app.state.metrics
    return Response(generate_latest(registry), media_type=CONTENT_TYPE)
