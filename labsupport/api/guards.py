"""What stands around every endpoint: limits, injected failures and error answers.

`install_guards(app, ...)` adds them to an app:

- **a body-size limit**: a request body over `MAX_BODY_BYTES` gets `413`,
  whether it says so in `Content-Length` or not;
- **injected failures**: with a `failure_rate`, that fraction of requests
  (`/health`, `/metrics` and the docs aside) gets `503` with `Retry-After`, drawn from a
  seeded random generator, so a retrying client can be shown at work;
- **human-readable errors**: every error answer is JSON with a `detail`
  sentence. A validation error names the field (`year: Input should be a
  valid integer`) and keeps pydantic's list in `errors`; a `405` lists every
  method the path allows in `Allow`; Redis or the database server out of
  reach is a `503` with `Retry-After`, not a crash; any other exception is
  logged with its traceback and answered `500` without one.
"""

from __future__ import annotations

import logging
import random
import threading

from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from labsupport.store import StoreUnavailableError

__all__ = ["MAX_BODY_BYTES", "RETRY_AFTER_SECONDS", "check_failure_rate", "install_guards"]

logger = logging.getLogger("labsupport.api")

MAX_BODY_BYTES = 64 * 1024
"""Request bodies larger than this are refused with 413."""
RETRY_AFTER_SECONDS = 1
"""What `Retry-After` says while a task is unfinished or a 503 is answered."""


class _Guard:
    """Pure ASGI middleware: the body-size limit and the injected failures.

    (Pure ASGI rather than `@app.middleware`: it adds no per-request task
    and leaves `BackgroundTasks` and streaming untouched.)
    """

    exempt = ("/health", "/metrics", "/docs", "/redoc", "/openapi.json")

    def __init__(self, app: ASGIApp, *, failure_rate: float, seed: int) -> None:
        self.app = app
        self.failure_rate = failure_rate
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer 413 or an injected 503 here, or pass the request on."""
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


def check_failure_rate(failure_rate: float) -> None:
    """Refuse a `failure_rate` that is not a fraction.

    `create_app` checks it first, before it starts a rebuild service.

    Args:
        failure_rate: the fraction of requests to answer with an injected `503`.

    Raises:
        ValueError: `failure_rate` is outside 0..1.
    """
    if not 0.0 <= failure_rate <= 1.0:
        msg = f"failure_rate must be between 0 and 1, got {failure_rate!r}"
        raise ValueError(msg)


def install_guards(app: FastAPI, *, failure_rate: float, seed: int) -> None:
    """Add the body-size limit, injected failures and human-readable errors.

    Args:
        app: the app to guard.
        failure_rate: fraction of requests answered with an injected `503`.
        seed: seeds the choice of those requests.
    """
    app.add_middleware(_Guard, failure_rate=failure_rate, seed=seed)
    # (Starlette types a handler's `exc` as any Exception, hence the ignores.)
    app.add_exception_handler(RequestValidationError, _invalid)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    for outage in _redis_outages():
        app.add_exception_handler(outage, _redis_outage)
    app.add_exception_handler(StoreUnavailableError, _store_outage)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _crash)


async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    """A 422 whose `detail` names each bad field; pydantic's list stays in `errors`."""
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    detail = "; ".join(
        f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}" for e in errors
    )
    return JSONResponse({"detail": detail, "errors": jsonable_encoder(errors)}, 422)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """An HTTP error as `{"detail": ...}`; a 405 lists every allowed method."""
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
    return JSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code, headers=headers)


async def _redis_outage(request: Request, exc: Exception) -> JSONResponse:
    """A 503 with `Retry-After`: shared state in Redis is out of reach, but that passes."""
    logger.warning("Redis unreachable on %s %s: %s", request.method, request.url.path, exc)
    return JSONResponse(
        {"detail": "the shared task store (Redis) is unreachable; try again shortly"},
        503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


async def _store_outage(request: Request, exc: StoreUnavailableError) -> JSONResponse:
    """A 503 with `Retry-After` and the store's one sentence: the database server is away."""
    logger.warning("database unreachable on %s %s: %s", request.method, request.url.path, exc)
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    return JSONResponse({"detail": str(exc)}, 503, headers=headers)


def _redis_outages() -> tuple[type[Exception], ...]:
    """redis-py's exceptions for an unreachable server; none when redis is not installed."""
    try:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError
    except ImportError:
        return ()
    return (RedisConnectionError, RedisTimeoutError)


async def _crash(request: Request, exc: Exception) -> JSONResponse:
    """A 500 without the traceback, which goes to the log instead."""
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse({"detail": "internal error; the server log has details"}, 500)
