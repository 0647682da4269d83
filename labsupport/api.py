"""The movie API with a background recommendation rebuild, as a FastAPI app.

`create_app()` builds a fresh app around a store and a
`RebuildService`; the module-level `app` is one
with an empty in-memory store, so `uvicorn labsupport.api:app` works.

Endpoints (all JSON; every error carries a human `detail`):

=========================================  ========================================
`POST /movies`                           add a movie -> 201
`GET /movies`, `GET /movies/{id}`      list (`limit`/`offset`) or fetch one
`POST /ratings`                          add or replace a rating -> 201
`GET /recommendations/{user_id}`         ranked movie ids (`limit`, `exclude_rated`)
`POST /recommender/rebuild`              queue a rebuild -> 202 with `Location`
`GET /recommender/rebuild/{task_id}`     the task's status, progress and times
`GET /recommender`                       the serving model's summary
`GET /health`                            liveness
=========================================  ========================================
"""

from __future__ import annotations

import functools
import json
import logging
import random
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import BackgroundTasks, FastAPI, Header, HTTPException, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, StrictStr
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from labsupport import recommender
from labsupport.ratelimit import REBUILD_RATE, RateLimiter, retry_after_seconds
from labsupport.store import MemoryStore, Store, UnknownMovieError
from labsupport.tasks import RebuildService, ServiceClosedError, Task, TaskStatus

if TYPE_CHECKING:
    from labsupport.scaleout.service import RedisRebuildService

__all__ = ["MAX_BODY_BYTES", "MAX_ID", "app", "create_app"]

logger = logging.getLogger("labsupport.api")

MAX_ID = 2**63 - 1
"""Largest accepted user or movie id (SQLite's INTEGER range)."""
MAX_BODY_BYTES = 64 * 1024
"""Request bodies larger than this are refused with 413."""
RETRY_AFTER_SECONDS = 1
"""What `Retry-After` says while a task is unfinished or a 503 is injected."""


def _integral(value: object) -> object:
    """JSON Schema's `integer` includes `5.0`: read an integral float as that int."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


Integral = BeforeValidator(_integral)  # after Field(...): the JSON schema keeps minimum/maximum
Id = Annotated[StrictInt, Field(ge=1, le=MAX_ID), Integral]
IdempotencyKey = Annotated[
    str | None,
    Header(
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="Repeat a POST with the same key to get the same task back.",
    ),
]


class MovieIn(BaseModel):
    """A movie to add."""

    model_config = ConfigDict(extra="forbid")
    title: Annotated[StrictStr, Field(min_length=1, max_length=200)]
    year: Annotated[StrictInt, Field(ge=1878, le=2100), Integral]
    genre: Annotated[StrictStr, Field(min_length=1, max_length=50)]


class MovieOut(MovieIn):
    """A stored movie."""

    id: int


class RatingIn(BaseModel):
    """A user's score for a movie: an integer from 1 to 5."""

    model_config = ConfigDict(extra="forbid")
    movie_id: Id
    user_id: Id
    score: Annotated[StrictInt, Field(ge=1, le=5), Integral]


class TaskOut(BaseModel):
    """A rebuild task as the status endpoint reports it."""

    task_id: str
    status: TaskStatus
    sample: list[int] = Field(description="user 1's top 3 once the task is complete")
    progress: float
    queued_at: float
    started_at: float | None
    finished_at: float | None
    error: str | None
    model_version: int | None


class Queued(BaseModel):
    """The answer to `POST /recommender/rebuild`."""

    task_id: str
    status: TaskStatus


class ModelInfo(BaseModel):
    """The serving model (all null before the first build)."""

    version: int | None
    built_at: float | None
    n_users: int
    n_movies: int
    n_ratings: int
    rank: int | None
    method: str | None
    build_seconds: float | None
    ratings_since_build: int


class Detail(BaseModel):
    """An error."""

    detail: str


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": Detail} for code in codes}


def create_app(
    store: Store | None = None,
    *,
    service: RebuildService | RedisRebuildService | None = None,
    build_options: Mapping[str, Any] | None = None,
    build_delay: float = 0.0,
    executor: str = "auto",
    failure_rate: float = 0.0,
    seed: int = 0,
    shutdown_grace: float = 5.0,
    task_id_factory: Callable[[], str] | None = None,
    rebuild_rate: tuple[int, float] | RateLimiter | None = REBUILD_RATE,
) -> FastAPI:
    """Build the movie API around a store and a rebuild service.

    Args:
        store: the repository; a new empty `MemoryStore`
            by default.
        service: a ready `RebuildService` (built from
            `store` and the options below when omitted), or a
            `RedisRebuildService` to share
            tasks and the model with other processes through Redis.
        build_options: keyword arguments for `build_model` (`rank`...).
        build_delay: extra seconds per build, so `running` is visible in class.
        executor: `"auto"`, `"thread"` or `"process"`: where builds
            run (see `RebuildService`).
        failure_rate: fraction of requests (`/health` and the docs aside)
            answered `503` with `Retry-After`, deterministically from
            `seed`: the Lab 2 switch for showing the retry client at work.
        seed: seeds the failure injection.
        shutdown_grace: seconds a running rebuild gets at shutdown before it
            is marked `interrupted`.
        task_id_factory: makes task ids (random UUIDs by default).
        rebuild_rate: `(burst, per_minute)`: how many rebuilds one client
            (one address) may start at once, and then per minute; more get
            `429` with `Retry-After`. Only a request that creates a task
            counts: a replayed key or a join of a queued task is free. A
            ready `RateLimiter` (e.g. with a
            fake clock) also works; `None` turns the limit off.

    Returns:
        The app; `app.state.store`, `app.state.service` and
        `app.state.rebuild_limiter` (`None` when off) hold its parts.

    Raises:
        ValueError: for a `failure_rate` outside 0..1 or a bad `rebuild_rate`.
    """
    if not 0.0 <= failure_rate <= 1.0:
        msg = f"failure_rate must be between 0 and 1, got {failure_rate!r}"
        raise ValueError(msg)
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

    # FastAPIOffline: /docs and /redoc load Swagger UI and ReDoc from the
    # package, not a CDN, so they work offline (classrooms, trains, CI).
    app = FastAPIOffline(
        title="Movie API: Session 09",
        summary="Movies, ratings and recommendations rebuilt in the background.",
        version="0.9.0",
        lifespan=lifespan,
        static_url="/docs/static",  # under /docs: never a target of injected failures
    )
    app.state.store = store
    app.state.service = service
    app.state.rebuild_limiter = limiter
    _install_guards(app, failure_rate=failure_rate, seed=seed)
    answers = _AnswerCache()

    @app.get("/health", tags=["service"])
    async def health() -> dict[str, str]:
        """Say the server is up (and whether it accepts rebuilds)."""
        return {"status": "ok" if service.accepting else "shutting down"}

    @app.post("/movies", status_code=201, tags=["movies"], responses=_errors(400, 413, 422))
    def add_movie(movie: MovieIn) -> MovieOut:
        """Add a movie to the catalogue."""
        return MovieOut(**store.add_movie(movie.title, movie.year, movie.genre).to_dict())

    @app.get("/movies", tags=["movies"], responses=_errors(422))
    def list_movies(
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    ) -> list[MovieOut]:
        """List movies by id."""
        return [MovieOut(**m.to_dict()) for m in store.list_movies(limit=limit, offset=offset)]

    @app.get("/movies/{movie_id}", tags=["movies"], responses=_errors(404, 422))
    def get_movie(movie_id: Annotated[int, Path(ge=1, le=MAX_ID)]) -> MovieOut:
        """Fetch one movie."""
        movie = store.get_movie(movie_id)
        if movie is None:
            raise HTTPException(404, f"movie {movie_id} does not exist")
        return MovieOut(**movie.to_dict())

    @app.post("/ratings", status_code=201, tags=["ratings"], responses=_errors(400, 404, 413, 422))
    def add_rating(rating: RatingIn) -> RatingIn:
        """Record a rating; rating the same movie again replaces the score."""
        try:
            store.add_rating(rating.user_id, rating.movie_id, rating.score)
        except UnknownMovieError:
            raise HTTPException(
                404, f"movie {rating.movie_id} does not exist; add it with POST /movies first"
            ) from None
        return rating

    @app.get(
        "/recommendations/{user_id}",
        tags=["recommendations"],
        response_model=list[int],
        responses=_errors(422),
    )
    async def recommendations(
        user_id: Annotated[int, Path(ge=1, le=MAX_ID)],
        limit: Annotated[int, Query(ge=1, le=100)] = 5,
        exclude_rated: bool = False,
    ) -> Response:
        """Return the user's top movie ids from the serving model.

        Never builds anything: before the first rebuild it returns the
        catalogue in id order and says so with `X-Model-Version: none`.
        The model's version is in the `X-Model-Version` header.
        """
        # `async def` and a ready-made JSON body: the work is a top-k over one
        # user's scores (tens of microseconds), cheaper than a trip through the
        # thread pool and a response-model validation of a list of ints.
        model = service.model  # read the reference once: one model per request
        if model is None:
            movies = await run_in_threadpool(store.list_movies, limit=limit)
            body, version = _json([m.id for m in movies]), "none"
        else:
            body, version = answers.get(model)(user_id, limit, exclude_rated), str(model.version)
        return Response(body, media_type="application/json", headers={"X-Model-Version": version})

    rebuild_gate = threading.Lock()  # one rebuild request at a time checks its budget and asks

    @app.post(
        "/recommender/rebuild",
        status_code=202,
        tags=["recommender"],
        responses=_errors(422, 503) | (_TOO_MANY_REBUILDS if limiter else {}),
    )
    def rebuild(
        request: Request,
        background: BackgroundTasks,
        response: Response,
        idempotency_key: IdempotencyKey = None,
        x_task_id: IdempotencyKey = None,
    ) -> Queued:
        """Queue a rebuild and return at once; poll the `Location` for progress.

        Send an `Idempotency-Key` (or `X-Task-Id`) header to make retries
        safe: the same key returns the same task for 24 hours, whatever its
        state. A rebuild asked for while another is still queued joins it.
        A client that starts too many rebuilds gets 429 with `Retry-After`.
        """
        key = idempotency_key or x_task_id
        client = request.client.host if request.client else "unknown"
        with rebuild_gate:
            # only a request that will create a task pays: a replay or a join starts no build
            if limiter is not None and not service.reuses(key):
                wait = limiter.acquire(client)  # 0.0: a token was taken
                if wait:
                    seconds = retry_after_seconds(wait)
                    raise HTTPException(
                        429,
                        f"too many rebuilds from this client: try again in {seconds} s",
                        headers={"Retry-After": str(seconds)},
                    )
            try:
                task, created = service.request(key)
            except ServiceClosedError as exc:
                raise HTTPException(
                    503, str(exc), headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
                ) from None
        if created:
            background.add_task(service.start, task.task_id)  # after the 202 is sent
        response.headers["Location"] = f"/recommender/rebuild/{task.task_id}"
        return Queued(task_id=task.task_id, status=TaskStatus.QUEUED if created else task.status)

    @app.get("/recommender/rebuild/{task_id}", tags=["recommender"], responses=_errors(404, 422))
    def rebuild_status(
        task_id: Annotated[str, Path(max_length=255)], response: Response
    ) -> TaskOut:
        """Report a rebuild's status; `Retry-After` says when to ask again."""
        task = service.get(task_id)
        if task is None:
            raise HTTPException(
                404, f"no rebuild task {task_id!r}; POST /recommender/rebuild returns a task_id"
            )
        if not task.done:
            response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return _task_out(task, service)

    @app.get("/recommender", tags=["recommender"])
    def model_info() -> ModelInfo:
        """Describe the serving model and how many ratings arrived since it was built."""
        model = service.model
        summary: dict[str, Any] = (
            model.summary()
            if model
            else dict.fromkeys(("version", "built_at", "rank", "method", "build_seconds"))
            | {"n_users": 0, "n_movies": 0, "n_ratings": 0}
        )
        return ModelInfo(**summary, ratings_since_build=service.ratings_since_build())

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = FastAPI.openapi(app)  # builds and caches app.openapi_schema
            # FastAPI's OpenAPI model types bounds as floats, so MAX_ID came out as
            # 9.223372036854776e+18 (2**63); put pydantic's exact schemas back.
            for model in (MovieIn, RatingIn):
                schema["components"]["schemas"][model.__name__] = model.model_json_schema()
        return FastAPI.openapi(app)  # the cached, corrected schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _json(ids: list[int]) -> bytes:
    return json.dumps(ids, separators=(",", ":")).encode()


class _AnswerCache:
    """Recent recommendation answers of the serving model, as ready JSON bytes.

    A model never changes, so its answer for (user, limit, exclude_rated)
    never does either; a new model gets a new, empty cache, and the old one
    (with the old model it references) is dropped at once.
    """

    def __init__(self, maxsize: int = 65_536) -> None:
        self.maxsize = maxsize
        self._model: recommender.Model | None = None
        self._answer: Callable[[int, int, bool], bytes] = lambda *_: b"[]"

    def get(self, model: recommender.Model) -> Callable[[int, int, bool], bytes]:
        if model is not self._model:

            @functools.lru_cache(maxsize=self.maxsize)
            def answer(user_id: int, limit: int, exclude_rated: bool) -> bytes:
                return _json(recommender.recommend(model, user_id, limit, exclude_rated))

            self._model, self._answer = model, answer
        return self._answer


_TOO_MANY_REBUILDS: dict[int | str, dict[str, Any]] = {
    429: {
        "model": Detail,
        "description": "This client started too many rebuilds; ask again after Retry-After.",
        "headers": {
            "Retry-After": {
                "description": "Whole seconds until this client may start a rebuild.",
                "required": True,
                "schema": {"type": "integer", "minimum": 1},
            }
        },
    }
}


def _task_out(task: Task, service: RebuildService | RedisRebuildService) -> TaskOut:
    model = service.model
    sample: list[int] = []
    if task.status is TaskStatus.COMPLETE and model is not None:
        sample = recommender.recommend(model, 1, limit=3)
    data = task.to_dict()
    data.pop("idempotency_key")  # keys are the client's secrets: never echoed
    data.pop("joined_keys")
    return TaskOut(**data, sample=sample)


class _Guard:
    """Pure ASGI middleware: the body-size limit and the injected failures.

    (Pure ASGI rather than `@app.middleware`: it adds no per-request task
    and leaves `BackgroundTasks` and streaming untouched.)
    """

    exempt = ("/health", "/docs", "/redoc", "/openapi.json")

    def __init__(self, app: ASGIApp, *, failure_rate: float, seed: int) -> None:
        self.app = app
        self.failure_rate = failure_rate
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            detail = f"request body too large: the limit is {MAX_BODY_BYTES} bytes"
            await JSONResponse({"detail": detail}, 413)(scope, receive, send)
            return
        if self.failure_rate and not scope["path"].startswith(self.exempt):
            with self._lock:
                fail = self._rng.random() < self.failure_rate
            if fail:
                await JSONResponse(
                    {"detail": "injected failure (failure_rate): retry after a pause"},
                    503,
                    headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
                )(scope, receive, send)
                return
        await self.app(scope, _limited(receive), send)


def _limited(receive: Receive) -> Receive:
    """Wrap `receive` so a body without Content-Length still stops at the limit."""
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > MAX_BODY_BYTES:
                detail = f"request body too large: the limit is {MAX_BODY_BYTES} bytes"
                raise HTTPException(413, detail)
        return message

    return wrapped


def _install_guards(app: FastAPI, *, failure_rate: float, seed: int) -> None:
    """Add the body-size limit, injected failures and human-readable errors."""
    app.add_middleware(_Guard, failure_rate=failure_rate, seed=seed)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}"
            for e in errors
        )
        return JSONResponse({"detail": detail, "errors": jsonable_encoder(errors)}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = exc.headers
        if exc.status_code == 405:
            # Starlette answers from the first route whose path matches (POST /movies
            # for /movies), so its Allow names one method; list every route's.
            allowed = {
                method
                for route in request.app.router.routes
                if isinstance(route, Route) and route.matches(request.scope)[0] is not Match.NONE
                for method in route.methods or ()
            }
            headers = {**(headers or {}), "Allow": ", ".join(sorted(allowed))}
        return JSONResponse(
            {"detail": str(exc.detail)}, status_code=exc.status_code, headers=headers
        )

    async def redis_outage(request: Request, exc: Exception) -> JSONResponse:
        # Shared state in Redis is out of reach: it passes, so ask the client to retry.
        logger.warning("Redis unreachable on %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse(
            {"detail": "the shared task store (Redis) is unreachable; try again shortly"},
            503,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    for outage in _redis_outages():
        app.add_exception_handler(outage, redis_outage)

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error; the server log has details"}, 500)


def _redis_outages() -> tuple[type[Exception], ...]:
    """redis-py's exceptions for an unreachable server; none when redis is not installed."""
    try:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError
    except ImportError:
        return ()
    return (RedisConnectionError, RedisTimeoutError)


app = create_app()
"""An app with an empty in-memory store: `uvicorn labsupport.api:app`."""
