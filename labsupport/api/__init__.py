"""The movie API with a background recommendation rebuild, as a FastAPI app.

`create_app()` builds a fresh app around a store and a rebuild service; the
module-level `app` is one with an empty in-memory store, so
`uvicorn labsupport.api:app` works.

Endpoints (all JSON but `/metrics`; every error carries a human `detail`), one router per
resource, each in its own module:

| endpoint | what it does |
|---|---|
| `POST /movies` (`movies`) | add a movie -> 201 |
| `GET /movies`, `GET /movies/{id}` (`movies`) | list (`limit`/`offset`) or fetch one |
| `POST /ratings` (`ratings`) | add or replace a rating -> 201 |
| `GET /recommendations/{user_id}` (`recommendations`) | ranked movie ids |
| `POST /recommender/rebuild` (`rebuild`) | queue a rebuild -> 202 with `Location` |
| `GET /recommender/rebuild/{task_id}` (`rebuild`) | the task's status, progress, times, trigger |
| `DELETE /recommender/rebuild/{task_id}` (`rebuild`) | cancel a queued or running rebuild |
| `GET /recommender` (`rebuild`) | the serving model's summary, with its staleness |
| `GET /health` (`health`) | liveness |
| `GET /metrics` (`metrics`) | Prometheus metrics: rebuilds, model, HTTP answers |

`create_app` hands the routers' routes to the app (`routes=`) instead of
calling `app.include_router`: since FastAPI 0.137 an included router stays one
node in `app.routes`, so `app.routes` would no longer list the endpoints, and
every request would search the routers one by one before it found its route.

The other modules: `schemas` (the request and response bodies), `guards`
(body-size limit, injected failures, error answers), `metrics` (the
Prometheus registry and the answer counter) and `state` (how an
endpoint gets the store and the service from `app.state`).

`create_app`'s options in more detail:

- `service`: a ready service instead of a new `RebuildService`, e.g. a
  `RedisRebuildService` (`labsupport.scaleout.service`) to share tasks and
  the model with other processes through Redis. Anything with the methods of
  `labsupport.tasks.RebuildServiceProtocol` works.
- `executor`: see `RebuildService`; `"auto"` builds on a thread for small
  data and in a child process from there on.
- `failure_rate`: the Lab 2 switch for showing the retry client at work: that
  fraction of requests (`/health`, `/metrics` and the docs aside) gets `503` with
  `Retry-After`. Which requests fail is drawn from a random generator seeded
  with `seed`, so a run is repeatable.
- `refresh_after`, `refresh_every`: the automatic refresh (`AutoRefresh`),
  off unless one is given: a rebuild starts by itself once that many ratings
  arrived since the serving model was built, or once the oldest rating the
  model has not seen is that many seconds old. It asks through the same
  queue as `POST /recommender/rebuild` (its tasks say `"trigger": "auto"`).
- `fold_in`: off by default (the lesson's recommendations change at a
  rebuild). When on, `GET /recommendations/{user_id}` answers a user who
  rated since the serving model was built from their current ratings,
  projected onto that model's movie factors: no rebuild, the same
  `X-Model-Version`, and `X-Fold-In: yes` (`labsupport.api.recommendations`).
- `rebuild_rate`: `(burst, per_minute)`: how many rebuilds one client (one
  address) may start at once, and then per minute; more get `429` with
  `Retry-After`. Only a request that creates a task counts: a replayed key or
  a join of a queued task is free. A ready `RateLimiter` (e.g. with a fake
  clock) also works; `None` turns the limit off.

The app keeps its parts in `app.state`: `store`, `service`,
`rebuild_limiter` (`None` when off), `refresh` (the `AutoRefresh`, `None`
when off), `rebuild_gate` (the lock that lets one
rebuild request at a time check its budget and ask), `answers` (the
serving model's cached recommendation answers) and `metrics` (the app's own
Prometheus registry, which `GET /metrics` shows).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from starlette.routing import BaseRoute

from labsupport.api.guards import MAX_BODY_BYTES, check_failure_rate, install_guards
from labsupport.api.health import router as health_router
from labsupport.api.metrics import install_metrics
from labsupport.api.metrics import router as metrics_router
from labsupport.api.movies import router as movies_router
from labsupport.api.ratings import router as ratings_router
from labsupport.api.rebuild import rebuild_router
from labsupport.api.recommendations import AnswerCache
from labsupport.api.recommendations import router as recommendations_router
from labsupport.api.schemas import MAX_ID, exact_openapi
from labsupport.ratelimit import REBUILD_RATE, RateLimiter
from labsupport.store import MemoryStore, Store
from labsupport.tasks import AutoRefresh, RebuildService, RebuildServiceProtocol

__all__ = ["MAX_BODY_BYTES", "MAX_ID", "app", "create_app"]

# FastAPIOffline serves Swagger UI and ReDoc from the package, not a CDN, so
# /docs and /redoc work offline (classrooms, trains, CI).
_DOCS: dict[str, Any] = {
    "title": "Movie API: Session 09",
    "summary": "Movies, ratings and recommendations rebuilt in the background.",
    "version": "0.9.0",
    "static_url": "/docs/static",  # under /docs: never a target of injected failures
}


def _routes(limiter: RateLimiter | None) -> list[BaseRoute]:
    """Every router's routes: one router per resource, served as the app's own (module doc)."""
    routers = [health_router, metrics_router, movies_router, ratings_router, recommendations_router]
    return [route for router in [*routers, rebuild_router(limiter)] for route in router.routes]


def _lifespan(
    service: RebuildServiceProtocol, refresh: AutoRefresh | None, shutdown_grace: float
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The app's lifespan: the automatic refresh while it serves, the rebuild shutdown after."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if refresh is not None:  # create_app(refresh_after=..., refresh_every=...)
            refresh.start()
        yield
        if refresh is not None:
            refresh.stop()
        # Shutdown: refuse new rebuilds, give a running one `shutdown_grace`
        # seconds, mark whatever is left `interrupted` (and persist that).
        service.shutdown(shutdown_grace)

    return lifespan


def create_app(
    store: Store | None = None,
    *,
    service: RebuildServiceProtocol | None = None,
    build_options: Mapping[str, Any] | None = None,
    build_delay: float = 0.0,
    executor: str = "auto",
    failure_rate: float = 0.0,
    seed: int = 0,
    shutdown_grace: float = 5.0,
    task_id_factory: Callable[[], str] | None = None,
    rebuild_rate: tuple[int, float] | RateLimiter | None = REBUILD_RATE,
    refresh_after: int | None = None,
    refresh_every: float | None = None,
    fold_in: bool = False,
) -> FastAPI:
    """Build the movie API around a store and a rebuild service (more in `help(labsupport.api)`).

    Args:
        store: the repository; a new empty `MemoryStore` by default.
        service: a ready rebuild service; by default a `RebuildService` on `store`.
        build_options: keyword arguments for `build_model` (`rank`...).
        build_delay: extra seconds per build, so `running` is visible in class.
        executor: where builds run: `"auto"`, `"thread"` or `"process"`.
        failure_rate: fraction of requests answered `503` with `Retry-After`.
        seed: seeds the failure injection.
        shutdown_grace: seconds a running rebuild gets at shutdown, then `interrupted`.
        task_id_factory: makes task ids (random UUIDs by default).
        rebuild_rate: `(burst, per_minute)` rebuilds per client, a `RateLimiter` or `None`.
        refresh_after: rebuild by itself after this many new ratings (`AutoRefresh`).
        refresh_every: rebuild by itself once the oldest unseen rating is this old.
        fold_in: answer a user who rated since the build from their current ratings.

    Returns:
        The app; `app.state` holds its parts (`store`, `service`, `rebuild_limiter`...).

    Raises:
        ValueError: a `failure_rate` outside 0..1, or a bad `rebuild_rate` or refresh.
    """
    check_failure_rate(failure_rate)
    limiter = RateLimiter(*rebuild_rate) if isinstance(rebuild_rate, tuple) else rebuild_rate
    store = store if store is not None else (service.store if service else MemoryStore())
    service = service or RebuildService(
        store,
        build_options=build_options,
        build_delay=build_delay,
        executor=executor,
        task_id_factory=task_id_factory,
    )
    refresh = AutoRefresh.if_asked(service, after=refresh_after, every=refresh_every)
    lifespan = _lifespan(service, refresh, shutdown_grace)
    app = FastAPIOffline(**_DOCS, lifespan=lifespan, routes=_routes(limiter))  # offline /docs
    app.state.store, app.state.service, app.state.rebuild_limiter = store, service, limiter
    app.state.refresh = refresh  # the AutoRefresh, or None when off
    app.state.rebuild_gate, app.state.answers = threading.Lock(), AnswerCache(fold_in=fold_in)
    install_guards(app, failure_rate=failure_rate, seed=seed)
    install_metrics(app)  # after the guards: it counts their answers too
    app.openapi = functools.partial(exact_openapi, app)  # type: ignore[method-assign]
    return app


app = create_app()
"""An app with an empty in-memory store: `uvicorn labsupport.api:app`."""
