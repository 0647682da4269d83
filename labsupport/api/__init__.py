"""The movie API with a background recommendation rebuild, as a FastAPI app.

`create_app()` builds a fresh app around a store and a rebuild service; the
module-level `app` is one with an empty in-memory store, so
`uvicorn labsupport.api:app` works.

Endpoints (all JSON; every error carries a human `detail`), one router per
resource, each in its own module:

| endpoint | what it does |
|---|---|
| `POST /movies` (`movies`) | add a movie -> 201 |
| `GET /movies`, `GET /movies/{id}` (`movies`) | list (`limit`/`offset`) or fetch one |
| `POST /ratings` (`ratings`) | add or replace a rating -> 201 |
| `GET /recommendations/{user_id}` (`recommendations`) | ranked movie ids |
| `POST /recommender/rebuild` (`rebuild`) | queue a rebuild -> 202 with `Location` |
| `GET /recommender/rebuild/{task_id}` (`rebuild`) | the task's status, progress and times |
| `GET /recommender` (`rebuild`) | the serving model's summary |
| `GET /health` (`health`) | liveness |

`create_app` hands the routers' routes to the app (`routes=`) instead of
calling `app.include_router`: since FastAPI 0.137 an included router stays one
node in `app.routes`, so `app.routes` would no longer list the endpoints, and
every request would search the routers one by one before it found its route.

The other modules: `schemas` (the request and response bodies), `guards`
(body-size limit, injected failures, error answers) and `state` (how an
endpoint gets the store and the service from `app.state`).

`create_app`'s options in more detail:

- `service`: a ready service instead of a new `RebuildService`, e.g. a
  `RedisRebuildService` (`labsupport.scaleout.service`) to share tasks and
  the model with other processes through Redis. Anything with the methods of
  `labsupport.tasks.RebuildServiceProtocol` works.
- `executor`: see `RebuildService`; `"auto"` builds on a thread for small
  data and in a child process from there on.
- `failure_rate`: the Lab 2 switch for showing the retry client at work: that
  fraction of requests (`/health` and the docs aside) gets `503` with
  `Retry-After`. Which requests fail is drawn from a random generator seeded
  with `seed`, so a run is repeatable.
- `rebuild_rate`: `(burst, per_minute)`: how many rebuilds one client (one
  address) may start at once, and then per minute; more get `429` with
  `Retry-After`. Only a request that creates a task counts: a replayed key or
  a join of a queued task is free. A ready `RateLimiter` (e.g. with a fake
  clock) also works; `None` turns the limit off.

The app keeps its parts in `app.state`: `store`, `service`,
`rebuild_limiter` (`None` when off), `rebuild_gate` (the lock that lets one
rebuild request at a time check its budget and ask) and `answers` (the
serving model's cached recommendation answers).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from labsupport.api.guards import MAX_BODY_BYTES, check_failure_rate, install_guards
from labsupport.api.health import router as health_router
from labsupport.api.movies import router as movies_router
from labsupport.api.ratings import router as ratings_router
from labsupport.api.rebuild import rebuild_router
from labsupport.api.recommendations import AnswerCache
from labsupport.api.recommendations import router as recommendations_router
from labsupport.api.schemas import MAX_ID, exact_openapi
from labsupport.ratelimit import REBUILD_RATE, RateLimiter
from labsupport.store import MemoryStore, Store
from labsupport.tasks import RebuildService, RebuildServiceProtocol

__all__ = ["MAX_BODY_BYTES", "MAX_ID", "app", "create_app"]

# FastAPIOffline serves Swagger UI and ReDoc from the package, not a CDN, so
# /docs and /redoc work offline (classrooms, trains, CI).
_DOCS: dict[str, Any] = {
    "title": "Movie API: Session 09",
    "summary": "Movies, ratings and recommendations rebuilt in the background.",
    "version": "0.9.0",
    "static_url": "/docs/static",  # under /docs: never a target of injected failures
}


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

    Returns:
        The app; `app.state` holds its parts (`store`, `service`, `rebuild_limiter`...).

    Raises:
        ValueError: for a `failure_rate` outside 0..1 or a bad `rebuild_rate`.
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

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        # Shutdown: refuse new rebuilds, give a running one `shutdown_grace`
        # seconds, mark whatever is left `interrupted` (and persist that).
        service.shutdown(shutdown_grace)

    # One router per resource; the app serves their routes as its own (see the module doc).
    routers = [health_router, movies_router, ratings_router, recommendations_router]
    routes = [route for router in [*routers, rebuild_router(limiter)] for route in router.routes]
    app = FastAPIOffline(**_DOCS, lifespan=lifespan, routes=routes)  # /docs works offline
    app.state.store, app.state.service, app.state.rebuild_limiter = store, service, limiter
    app.state.rebuild_gate, app.state.answers = threading.Lock(), AnswerCache()
    install_guards(app, failure_rate=failure_rate, seed=seed)
    app.openapi = functools.partial(exact_openapi, app)  # type: ignore[method-assign]
    return app


app = create_app()
"""An app with an empty in-memory store: `uvicorn labsupport.api:app`."""
