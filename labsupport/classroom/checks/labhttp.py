"""Lab 1's rebuild over real HTTP: the trial `check_rebuild_endpoint` and `check_demo_flow` run.

A new user rates a movie, a rebuild is posted and timed, a second request
times how long `GET /health` waits meanwhile, the task is polled until it
is neither queued nor running (or a few seconds pass), and an unknown task
id and the user's recommendations are asked for. Over real HTTP, because
Starlette's TestClient waits for background tasks and so never shows
`running`. All times are in seconds.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from labsupport.classroom.checks import CheckFailed, require
from labsupport.classroom.checks.lab import LogCapture, describe

__all__ = [
    "FAST",
    "STALL",
    "START_HINT",
    "TIMEOUT",
    "UNFINISHED",
    "RebuildTrial",
    "accepted_task",
    "client",
    "json_or_none",
    "poll",
    "run_rebuild_trial",
    "talking_to",
]

START_HINT = (
    "the endpoint does not exist yet; add it to app/main.py (Lab 1, 'Wire the Background "
    'Task\'): `@app.post("/recommender/rebuild", status_code=202)` that sets '
    "TASK_STATUS[task_id] = 'queued' and calls `background.add_task(run_rebuild_task, task_id)`"
)
"""The hint when `POST /recommender/rebuild` is not there (the starter app)."""

UNFINISHED = ("queued", "running")
FAST = 0.4  # a POST that only queues the work answers well within this
STALL = 0.3  # a GET /health waiting this long means the event loop was blocked
TIMEOUT = 3.0  # how long a 0.5 s rebuild may take to read 'complete'
_POLL = 0.05
_GRACE = 0.5  # polling goes on this long after the log shows an exception


def client(base: str) -> httpx.Client:
    """An HTTP client for the check: no proxies, a fresh connection per request, 5 s timeout.

    A fresh connection each time means a server that closed one (after an
    exception in a background task) does not make the next request fail.
    """
    return httpx.Client(
        base_url=base, timeout=5.0, trust_env=False, headers={"Connection": "close"}
    )


def json_or_none(response: httpx.Response) -> Any:
    """The decoded JSON body, or None when it is not JSON."""
    try:
        return response.json()
    except ValueError:
        return None


def _logged_error(log: LogCapture | None) -> str | None:
    """The first exception the server logged, waiting briefly for it to arrive."""
    if log is None:
        return None
    deadline = time.monotonic() + _GRACE
    while not log.errors and time.monotonic() < deadline:
        time.sleep(_POLL)
    return log.error_with()


def accepted_task(answer: httpx.Response, log: LogCapture | None) -> tuple[str, str]:
    """The `(task_id, status)` of a `POST /recommender/rebuild` answer, checked to be a 202."""
    code = answer.status_code
    require(code not in (404, 405), f"POST /recommender/rebuild answered {code}: {START_HINT}")
    if code >= 500:
        error = _logged_error(log)
        cause = f"the endpoint raised {error}" if error else "see the server's log"
        raise CheckFailed(f"POST /recommender/rebuild answered {code} ({cause}): fix the endpoint")
    require(
        code == 202,
        f"POST /recommender/rebuild answered {code}, not 202: add status_code=202 to its "
        "decorator (202 Accepted: the work is queued, not done)",
    )
    body = json_or_none(answer)
    require(
        isinstance(body, dict) and isinstance(body.get("task_id"), (str, int)),
        "the POST should answer JSON like {'task_id': '...', 'status': 'queued'}, not "
        f"{answer.text[:120]}",
    )
    return str(body["task_id"]), str(body.get("status"))


def poll(
    http: httpx.Client, task_id: str, *, timeout: float, log: LogCapture | None = None
) -> list[str]:
    """Poll the task until it is neither queued nor running, or `timeout` passes.

    Polling stops early `_GRACE` seconds after the log shows an exception.

    Returns:
        Every status read, in order.
    """
    deadline = time.monotonic() + timeout
    statuses: list[str] = []
    first_error: float | None = None
    while True:
        answer = http.get(f"/recommender/rebuild/{task_id}")
        body = json_or_none(answer)
        require(
            answer.status_code == 200 and isinstance(body, dict) and "status" in body,
            f"GET /recommender/rebuild/{task_id} answered {answer.status_code} "
            f"{answer.text[:120]}: it should answer 200 with the task's status",
        )
        statuses.append(str(body["status"]))
        now = time.monotonic()
        if log is not None and log.errors and first_error is None:
            first_error = now
        late = first_error is not None and now - first_error > _GRACE
        if statuses[-1] not in UNFINISHED or now > deadline or late:
            return statuses
        time.sleep(_POLL)


@dataclass
class RebuildTrial:
    """What one rebuild over HTTP showed.

    Attributes:
        user: The new user who rated a movie before the rebuild.
        before: Their recommendations before the rebuild.
        after: Their recommendations after it.
        took: How long the POST took.
        health: How long a `GET /health` right after it took.
        statuses: The POST's status, then every polled one.
        unknown_code: The status code for an unknown task id.
        unknown_body: Its body, shortened.
        log: The server's captured log (None for a server the check did not start).
        is_async: Whether `run_rebuild_task` is an `async def` (False when unknown).
    """

    user: int
    before: Any
    after: Any
    took: float
    health: float
    statuses: list[str]
    unknown_code: int
    unknown_body: str
    log: LogCapture | None
    is_async: bool


def _rate(http: httpx.Client, user: int, log: LogCapture | None) -> Any:
    """Let `user` rate the first movie; return their recommendations before any rebuild."""
    movies = json_or_none(http.get("/movies"))
    require(
        isinstance(movies, list) and bool(movies) and isinstance(movies[0], dict),
        "GET /movies answered no movies: add one with POST /movies first",
    )
    rating = http.post("/ratings", json={"movie_id": movies[0]["id"], "user_id": user, "score": 5})
    require(
        rating.status_code == 201,
        f"POST /ratings answered {rating.status_code} {rating.text[:120]}, expected 201",
    )
    before = http.get(f"/recommendations/{user}", params={"limit": 5})
    if before.status_code != 200:
        error = _logged_error(log)
        raise CheckFailed(
            f"GET /recommendations/{user} answered {before.status_code} before any rebuild"
            + (f" (it raised {error})" if error else "")
            + ": a request should not build the model; fall back to Session 08's most-rated list"
        )
    return json_or_none(before)


def _trial(
    http: httpx.Client, second: httpx.Client, user: int, log: LogCapture | None, is_async: bool
) -> RebuildTrial:
    before = _rate(http, user, log)
    start = time.perf_counter()
    answer = http.post("/recommender/rebuild")
    took = time.perf_counter() - start
    task_id, status = accepted_task(answer, log)
    start = time.perf_counter()
    second.get("/health")  # while the build runs: does the server answer others?
    health = time.perf_counter() - start
    statuses = [status, *poll(http, task_id, timeout=TIMEOUT, log=log)]
    unknown = http.get("/recommender/rebuild/no-such-task-0000")
    after = json_or_none(http.get(f"/recommendations/{user}", params={"limit": 5}))
    return RebuildTrial(
        user, before, after, took, health, statuses, unknown.status_code, unknown.text[:80],
        log, is_async,
    )  # fmt: skip


@contextlib.contextmanager
def talking_to(base: str) -> Iterator[httpx.Client]:
    """A `client` for `base` whose connection failures become one-sentence `CheckFailed`s."""
    try:
        with client(base) as http:
            yield http
    except httpx.ConnectError:
        msg = (
            f"nothing answers at {base}: start your server from the app's folder with "
            "`uvicorn app.main:app --reload`, or leave out url= to let the check serve it"
        )
        raise CheckFailed(msg) from None
    except httpx.TransportError as exc:
        msg = f"the server stopped answering ({describe(exc)}): is something blocking it?"
        raise CheckFailed(msg) from None


def run_rebuild_trial(
    base: str, *, user: int, log: LogCapture | None, is_async: bool
) -> RebuildTrial:
    """Rate, rebuild, time, poll and ask again, over real HTTP at `base`.

    Raises:
        CheckFailed: nothing answers at `base`, the server stopped answering, or
            an answer is not what the lab asks for.
    """
    with talking_to(base) as http, client(base) as second:
        return _trial(http, second, user, log, is_async)
