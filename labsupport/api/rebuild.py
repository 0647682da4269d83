"""The recommender's routes: queue a rebuild, follow it, describe the serving model.

- `POST /recommender/rebuild` queues a rebuild and answers `202` at once, with
  the task's URL in `Location`; the build starts after the answer is sent.
  An `Idempotency-Key` (or `X-Task-Id`) header makes a retried request safe,
  and a client that starts too many rebuilds gets `429` with `Retry-After`.
- `GET /recommender/rebuild/{task_id}` reports the task's status, progress and
  times, with `Retry-After` while it is unfinished.
- `DELETE /recommender/rebuild/{task_id}` cancels a queued or running rebuild:
  `200` with the task, now `canceled`; `409` once it is final; `404` unknown.
- `GET /recommender` summarises the serving model and how stale it is.

`rebuild_router(limiter)` makes the routes, for each app anew: whether the
`429` appears in the OpenAPI schema depends on whether the app has a limit.
"""

from __future__ import annotations

import threading
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Header, HTTPException, Path, Request, Response

from labsupport.api.guards import RETRY_AFTER_SECONDS
from labsupport.api.schemas import Detail, ModelInfo, Queued, TaskOut, TaskRef, error_responses
from labsupport.api.state import service_of
from labsupport.ratelimit import RateLimiter, retry_after_seconds
from labsupport.recommender import recommend
from labsupport.tasks import (
    RebuildServiceProtocol,
    ServiceClosedError,
    Task,
    TaskFinishedError,
    TaskStatus,
)

__all__ = ["rebuild_router"]

_IdempotencyKey = Annotated[
    str | None,
    Header(
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="Repeat a POST with the same key to get the same task back.",
    ),
]

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


def rebuild_router(limiter: RateLimiter | None) -> APIRouter:
    """Make the `/recommender` routes for an app with this rebuild limit.

    Args:
        limiter: the app's `app.state.rebuild_limiter`; unless it is `None`,
            `POST /recommender/rebuild` documents its `429` in the OpenAPI
            schema. (The endpoint itself reads the limiter from `app.state`.)

    Returns:
        A router with the four routes.
    """
    router = APIRouter(tags=["recommender"])
    router.add_api_route(
        "/recommender/rebuild",
        rebuild,
        methods=["POST"],
        status_code=202,
        responses=error_responses(422, 503) | (_TOO_MANY_REBUILDS if limiter else {}),
    )
    router.add_api_route(
        "/recommender/rebuild/{task_id}",
        rebuild_status,
        methods=["GET"],
        responses=error_responses(404, 422, 503),
    )
    router.add_api_route(
        "/recommender/rebuild/{task_id}",
        cancel_rebuild,
        methods=["DELETE"],
        responses=error_responses(404, 409, 422, 503),
    )
    router.add_api_route(
        "/recommender", model_info, methods=["GET"], responses=error_responses(503)
    )
    return router


def rebuild(
    request: Request,
    background: BackgroundTasks,
    response: Response,
    idempotency_key: _IdempotencyKey = None,
    x_task_id: _IdempotencyKey = None,
) -> Queued:
    """Queue a rebuild and return at once; poll the `Location` for progress.

    Send an `Idempotency-Key` (or `X-Task-Id`) header to make retries
    safe: the same key returns the same task for 24 hours, whatever its
    state. A rebuild asked for while another is still queued joins it.
    A client that starts too many rebuilds gets 429 with `Retry-After`.
    """
    service = service_of(request)
    key = idempotency_key or x_task_id
    client = request.client.host if request.client else "unknown"
    limiter: RateLimiter | None = request.app.state.rebuild_limiter
    gate: threading.Lock = request.app.state.rebuild_gate
    with gate:  # one rebuild request at a time checks its budget and asks
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


def rebuild_status(
    task_id: Annotated[str, Path(max_length=255)], request: Request, response: Response
) -> TaskOut:
    """Report a rebuild's status; `Retry-After` says when to ask again."""
    service = service_of(request)
    task = service.get(task_id)
    if task is None:
        raise HTTPException(
            404, f"no rebuild task {task_id!r}; POST /recommender/rebuild returns a task_id"
        )
    if not task.done:
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return _task_out(task, service)


def cancel_rebuild(task_id: Annotated[str, Path(max_length=255)], request: Request) -> TaskOut:
    """Cancel a queued or running rebuild; the serving model stays as it was.

    A queued task is canceled at once; a running build is stopped too. The
    task reads `canceled` from now on, and its idempotency key, sent again,
    starts a new rebuild. A task already final answers 409.
    """
    service = service_of(request)
    try:
        task = service.cancel(task_id)
    except KeyError:
        raise HTTPException(
            404, f"no rebuild task {task_id!r}; POST /recommender/rebuild returns a task_id"
        ) from None
    except TaskFinishedError as exc:
        raise HTTPException(409, str(exc)) from None
    return _task_out(task, service)


def model_info(request: Request) -> ModelInfo:
    """Describe the serving model, how many ratings arrived since it was built, and how stale."""
    service = service_of(request)
    model = service.model
    summary: dict[str, Any] = (
        model.summary()
        if model
        else dict.fromkeys(("version", "built_at", "rank", "method", "build_seconds"))
        | {"n_users": 0, "n_movies": 0, "n_ratings": 0}
    )
    staleness = service.staleness_seconds()
    tasks = service.tasks()
    last = tasks[-1] if tasks else None
    return ModelInfo(
        **summary,
        ratings_since_build=service.ratings_since_build(),
        staleness_seconds=None if staleness is None else round(staleness, 3),
        last_task=None
        if last is None
        else TaskRef.model_validate(
            {"task_id": last.task_id, "status": last.status, "trigger": last.trigger}
        ),
    )


def _task_out(task: Task, service: RebuildServiceProtocol) -> TaskOut:
    model = service.model
    sample: list[int] = []
    if task.status is TaskStatus.COMPLETE and model is not None:
        sample = recommend(model, 1, limit=3)
    data = task.to_dict()
    data.pop("idempotency_key")  # keys are the client's secrets: never echoed
    data.pop("joined_keys")
    return TaskOut(**data, sample=sample)
