"""Self-checks for notebook 06: starting points for the Exercise 3 options.

Each `check_*` function runs the student's code against a fresh in-process
app (through FastAPI's `TestClient`), prints a confirmation when it is right
and raises `CheckFailed` with one sentence of help
when not.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Collection
from typing import Any

from fastapi import FastAPI

from labsupport.api import create_app
from labsupport.classroom.checks import passed, require
from labsupport.data import CATALOGUE, demo_ratings
from labsupport.recommender import Model, build_model
from labsupport.store import MemoryStore
from labsupport.tasks import RebuildService, TaskStatus, counter_ids

__all__ = [
    "MUST_PROTECT",
    "app_routes",
    "check_auto_rebuilder",
    "check_protected",
    "check_status_counter",
]

MUST_PROTECT = frozenset(
    {("POST", "/movies"), ("POST", "/ratings"), ("POST", "/recommender/rebuild")}
)
"""Routes that change data or start expensive work: they need a token."""
_MUST_STAY_OPEN = frozenset({("GET", "/health")})
"""Routes a load balancer or an orchestrator calls without credentials."""


def app_routes(app: FastAPI | None = None) -> set[tuple[str, str]]:
    """Return the `(method, path template)` pairs an app serves (HEAD left out).

    Args:
        app: The app; a fresh `create_app()` by default.
    """
    app = app if app is not None else create_app()
    return {
        (method, path)
        for route in app.routes
        for method in getattr(route, "methods", None) or ()
        if method != "HEAD" and (path := getattr(route, "path", None)) is not None
    }


def _demo_store() -> MemoryStore:
    store = MemoryStore()
    store.add_movies(CATALOGUE)
    store.add_ratings(demo_ratings(n_users=10, seed=0))
    return store


def _demo_app(**options: Any) -> FastAPI:
    return create_app(
        _demo_store(), build_options={"rank": 4}, task_id_factory=counter_ids(), **options
    )


# ---------------------------------------------------------------- JWT shape


def check_protected(protected: Collection[tuple[str, str]]) -> None:
    """Check a set of `(method, path)` routes that would require a JWT.

    Every POST route must be in it, `GET /health` must not, and every entry
    must be a route the app really serves (path templates such as
    `/movies/{movie_id}`, as listed by `app_routes`).

    Raises:
        CheckFailed: an entry is unknown, a write is left open, or health is closed.
    """
    chosen = {(str(m).upper(), str(p)) for m, p in protected}
    known = app_routes()
    unknown = sorted(chosen - known)
    require(
        not unknown,
        f"{unknown} is not a route of the app; copy (method, path) pairs from "
        "app_routes(), e.g. ('POST', '/ratings')",
    )
    open_writes = sorted(MUST_PROTECT - chosen)
    require(
        not open_writes,
        f"{open_writes} changes data or starts a rebuild, yet anyone could call it: "
        "protect every POST",
    )
    closed = sorted(_MUST_STAY_OPEN & chosen)
    require(
        not closed,
        f"{closed} must stay open: load balancers and Docker health checks call it without a token",
    )
    extra = len(chosen - MUST_PROTECT)
    routes = "route" if extra == 1 else "routes"
    passed(
        f"{len(chosen)} routes need a token ({extra} read {routes} by your choice); /health open"
    )


# ---------------------------------------------------------------- observability


def check_status_counter(add_status_counter: Callable[[FastAPI], Counter[str]]) -> None:
    """Check `add_status_counter(app)` counts responses by class: `"2xx"`, `"4xx"`...

    The function must add a middleware to `app` and return the
    `collections.Counter` it fills. The check sends requests that
    answer 200, 201, 404, 422 and injected 503s, and compares the counter
    with the status codes the client saw.

    Raises:
        CheckFailed: the counter is missing, keyed differently or off.
    """
    from fastapi.testclient import TestClient

    app = _demo_app(failure_rate=0.3, seed=1)
    counter = add_status_counter(app)
    require(
        isinstance(counter, Counter),
        f"return the collections.Counter your middleware fills, got {type(counter).__name__}",
    )
    seen: Counter[str] = Counter()
    with TestClient(app) as client:
        calls = [
            *(("GET", f"/recommendations/{u}", None) for u in range(1, 9)),
            *(("GET", f"/movies/{m}", None) for m in (1, 2, 999)),
            ("POST", "/ratings", {"movie_id": 1, "user_id": 3, "score": 5}),
            ("POST", "/ratings", {"movie_id": 1, "user_id": 3, "score": 9}),
            ("GET", "/health", None),
        ]
        for method, url, body in calls:
            response = client.request(method, url, json=body)
            seen[f"{response.status_code // 100}xx"] += 1
    got = {k: v for k, v in counter.items() if v}
    require(
        bool(got),
        "the counter stayed empty: add the middleware with @app.middleware('http') inside "
        "your function, before returning the counter",
    )
    require(
        set(got) <= {"1xx", "2xx", "3xx", "4xx", "5xx"},
        f"keys should look like '2xx' or '4xx' (f\"{{status // 100}}xx\"), got {sorted(got)}",
    )
    require(
        got == dict(seen),
        f"the client saw {dict(sorted(seen.items()))} but your counter says "
        f"{dict(sorted(got.items()))}: count response.status_code after call_next, "
        "once per request",
    )
    summary = ", ".join(f"{k}: {v}" for k, v in sorted(seen.items()))
    passed(f"status classes counted like the client saw them ({summary})")


# ---------------------------------------------------------------- auto-rebuild


class _GatedBuilder:
    """A model builder that holds each build until the check lets it finish."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self._entered = threading.Semaphore(0)

    def __call__(self, ratings: Any, *, version: int, progress: Callable[[float], None]) -> Model:
        self._entered.release()  # the ratings snapshot has been taken
        if not self.gate.wait(timeout=10):
            msg = "the check's build was held for more than 10 s"
            raise TimeoutError(msg)
        return build_model(ratings, rank=4, version=version, progress=progress)

    def wait_started(self) -> bool:
        return self._entered.acquire(timeout=5)

    def drain(self) -> None:
        while self._entered.acquire(blocking=False):
            pass


def _wait_all(service: RebuildService) -> None:
    for task in service.tasks():
        service.wait(task.task_id, timeout=10)


def _rate_and_ask(
    rebuilder: Callable[[], str | None],
    client: Any,
    service: RebuildService,
    builder: _GatedBuilder,
    every: int,
    n_ratings: int,
) -> list[int]:
    """Post ratings one by one, call the rebuilder after each; return when it asked."""
    asked: list[int] = []
    for i in range(1, n_ratings + 1):
        client.post("/ratings", json={"movie_id": i, "user_id": 10_001, "score": 4})
        busy = any(not t.done for t in service.tasks())
        before = len(service.tasks())
        result = rebuilder()
        if result is not None:
            require(
                isinstance(result, str) and service.get(result) is not None,
                f"after rating {i} it returned {result!r}; return the task_id "
                "from the 202 answer, or None when you did not ask",
            )
            asked.append(i)
        if len(service.tasks()) > before and not busy:
            builder.wait_started()  # the build has its snapshot: hold it running
        if i % every == every - 1 or i == n_ratings:
            builder.gate.set()  # let every held build finish
            _wait_all(service)
            builder.drain()
            builder.gate.clear()
    return asked


def check_auto_rebuilder(
    factory: Callable[[Any, int], Callable[[], str | None]],
    *,
    every: int = 5,
    n_ratings: int = 15,
) -> None:
    """Check an auto-rebuilder asks for exactly one rebuild per `every` new ratings.

    `factory(client, every)` must return a callable that the check calls
    after each new rating; it returns the task id of a rebuild it asked for,
    or `None`. Each rebuild it starts is held *running* while the next
    `every - 1` ratings arrive (as a slow rebuild would be), then finishes.
    A correct rebuilder asks after ratings `every`, `2 * every`... and
    never while its own rebuild is still unfinished.

    Raises:
        CheckFailed: it asked too often, too rarely, at the wrong moments, or
            returned something that is not a task id.
    """
    from fastapi.testclient import TestClient

    builder = _GatedBuilder()
    service = RebuildService(_demo_store(), build=builder, task_id_factory=counter_ids())
    builder.gate.set()
    service.rebuild_now()  # the serving model: ratings_since_build is now 0
    builder.drain()
    builder.gate.clear()
    app = create_app(service=service)
    with TestClient(app) as client:
        try:
            asked = _rate_and_ask(
                factory(client, every), client, service, builder, every, n_ratings
            )
        finally:
            builder.gate.set()  # never leave a build held: the shutdown would wait for it
            _wait_all(service)
    expected = list(range(every, n_ratings + 1, every))
    extra = [i for i in asked if i not in expected]
    require(
        bool(asked),
        f"it never asked for a rebuild in {n_ratings} ratings with every={every}: "
        "compare GET /recommender's ratings_since_build with every (>=)",
    )
    require(
        not extra,
        f"it asked for rebuilds after ratings {asked}, but only {expected} were due: "
        "ratings that arrive while your rebuild is queued or running still count as "
        "'since the last build', so remember the task you started and skip until it is final",
    )
    require(
        asked == expected,
        f"it asked after ratings {asked}, expected {expected}: ask as soon as "
        "ratings_since_build reaches every (>=, not >)",
    )
    built = [t for t in service.tasks()[1:] if t.status is TaskStatus.COMPLETE]
    require(
        len(built) == len(expected),
        f"{len(built)} rebuilds completed instead of {len(expected)}",
    )
    passed(f"one rebuild per {every} ratings: after ratings {asked}, none while one was running")
