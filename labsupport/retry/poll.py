"""`poll_task`: wait for a background rebuild task, retrying each status GET through `with_backoff`.

A task that failed, was interrupted or is unknown to the server raises
`TaskFailedError`, whose message says in one sentence what to do next.
All times are in seconds.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import random
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import Any, Protocol, cast

from labsupport.errors import LabError
from labsupport.retry.backoff import ResponseLike, check_number, parse_retry_after, with_backoff

__all__ = ["TaskFailedError", "poll_task"]

_FAILED_STATUSES = frozenset({"failed", "interrupted", "unknown"})
_LOGGER_NAME = "labsupport.retry"  # one logger for the whole package

_Watch = Callable[[dict[str, Any]], None]
"""Something fed every status body: `on_status`, or what `progress` yields."""


class _SupportsGet(Protocol):
    """A client with `get(url)`: `httpx.Client`, `httpx2.Client`, `TestClient`."""

    def get(self, url: str, /) -> ResponseLike: ...


class TaskFailedError(LabError, RuntimeError):
    """A background task ended in `failed`, `interrupted` or `unknown`.

    The message says, in one sentence, what happened and what to do next.

    Attributes:
        task_id: The task's id.
        status: The final status the server reported.
        payload: The server's last JSON body.
    """

    def __init__(
        self, message: str, *, task_id: str, status: str, payload: Mapping[str, Any]
    ) -> None:
        super().__init__(message)
        self.task_id = task_id
        self.status = status
        self.payload = dict(payload)


def poll_task(
    client: _SupportsGet | Callable[[], ResponseLike],
    status_url: str | None = None,
    *,
    timeout: float = 30.0,
    interval: float = 0.2,
    max_interval: float = 5.0,
    retries: int = 3,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    rng: random.Random | None = None,
    on_status: _Watch | None = None,
    progress: Callable[[], AbstractContextManager[_Watch]] | None = None,
    logger: logging.Logger | None = None,
) -> dict[str, Any]:
    """Poll a rebuild task's status URL until it completes, fails or times out.

    Each GET goes through `with_backoff`, so a transient 503 or a
    dropped connection is retried (up to `retries` times, never past the
    overall `timeout`) instead of ending the wait; a 404 raises at once.
    The JSON body must have a `"status"`: `"complete"` ends the wait,
    `"failed"`, `"interrupted"` and `"unknown"` (the server forgot the
    task, e.g. after a restart) raise `TaskFailedError`, and anything
    else (`"queued"`, `"running"`) means wait `interval` seconds and
    ask again. A `Retry-After` header on those answers can lengthen the
    wait, up to `max_interval`. The last look happens at the timeout.

    With `progress=labsupport.classroom.display.progress_bar` a bar follows
    the task's `progress` field from 0 to 100 % while it waits (a widget in
    JupyterLab, a text bar on stderr elsewhere) and is closed when the wait
    ends, whatever the outcome.

    Args:
        client: A client with `get(url)` (`httpx.Client`, `TestClient`),
            or a zero-argument function returning a response if
            `status_url` is omitted.
        status_url: The task's status URL, e.g. `f"/recommender/rebuild/{task_id}"`.
        timeout: The most time to wait, in seconds.
        interval: The pause between polls.
        max_interval: The longest pause a `Retry-After` header can ask for.
        retries: Retries for each GET (see `with_backoff`).
        sleep: The function that waits (inject a fake in tests).
        clock: A monotonic clock (inject a fake in tests).
        rng: The random source for retry jitter.
        on_status: Called with every JSON body seen, in order, e.g. to record
            the `queued -> running -> complete` timeline.
        progress: A function of no arguments returning a context manager,
            entered for the whole wait, whose value is fed every JSON body
            like `on_status` (e.g. `labsupport.classroom.display.progress_bar`).
        logger: Where to log (default: `logging.getLogger("labsupport.retry")`).

    Returns:
        The final JSON body, whose status is `"complete"`.

    Raises:
        TaskFailedError: if the task failed, was interrupted or is unknown.
        TimeoutError: if it is still not complete after `timeout` seconds.
        httpx.HTTPStatusError: for a non-retryable status, or a retryable one
            that outlasted `retries`.
        httpx.TransportError: if the server stays unreachable.
        ValueError: if the body is not a JSON object with a `"status"`, or
            for a bad argument.
        TypeError: if `client` has no `get` (with a URL) or is not callable
            (without one).
    """
    check_number("timeout", timeout)
    check_number("interval", interval, positive=True)
    fetch = _fetcher(client, status_url)
    log = logger or logging.getLogger(_LOGGER_NAME)
    get = functools.partial(
        with_backoff, fetch, retries=retries, sleep=sleep, rng=rng, clock=clock, logger=log
    )
    watchers: list[_Watch] = [] if on_status is None else [on_status]
    with contextlib.ExitStack() as cleanup:
        if progress is not None:
            watchers.append(cleanup.enter_context(progress()))
        return _wait(get, status_url, watchers, timeout, interval, max_interval, sleep, clock, log)


def _wait(
    get: Callable[..., ResponseLike],
    status_url: str | None,
    watchers: list[_Watch],
    timeout: float,
    interval: float,
    max_interval: float,
    sleep: Callable[[float], None],
    clock: Callable[[], float],
    log: logging.Logger,
) -> dict[str, Any]:
    """The loop of `poll_task`: GET (retrying), tell the watchers, then return, raise or wait."""
    task_id = status_url.rstrip("/").rpartition("/")[2] if status_url else "<unknown>"
    started = clock()
    last_status: object = None
    while True:
        remaining = max(0.0, timeout - (clock() - started))
        response = get(deadline=remaining)
        payload = _status_json(response, status_url)
        for watch in watchers:
            watch(payload)
        task_id = str(payload.get("task_id", task_id))
        status = payload["status"]
        if status != last_status:
            log.info("Task %s is %s after %.2f s", task_id, status, clock() - started)
            last_status = status
        if status == "complete":
            return payload
        if status in _FAILED_STATUSES:
            raise TaskFailedError(
                _failure_message(task_id, str(status), payload),
                task_id=task_id,
                status=str(status),
                payload=payload,
            )
        waited = clock() - started
        if waited >= timeout:
            msg = (
                f"task {task_id} was still {status!r} after waiting {waited:.1f} s "
                f"(timeout={timeout} s); pass a longer timeout=, or check the server log "
                "for a rebuild that is stuck or never started"
            )
            raise TimeoutError(msg)
        pause = interval
        wanted = parse_retry_after(response.headers.get("Retry-After"))
        if wanted is not None:
            pause = max(interval, min(wanted, max_interval))
        sleep(min(pause, timeout - waited))


def _failure_message(task_id: str, status: str, payload: Mapping[str, Any]) -> str:
    """One sentence for a task that will never complete: what happened, what to do."""
    reason = payload.get("error") or payload.get("detail") or "the server gave no reason"
    if status == "failed":
        return (
            f"Task {task_id} failed ({reason}); fix what the error names (the data or the "
            "build code), then POST /recommender/rebuild again."
        )
    if status == "interrupted":
        return (
            f"Task {task_id} was interrupted ({reason}); POST /recommender/rebuild again, "
            "with a new Idempotency-Key if you send one."
        )
    return (
        f"The server does not know task {task_id} ({reason}); check the task id, or POST "
        "/recommender/rebuild again if the server restarted."
    )


def _fetcher(
    client: _SupportsGet | Callable[[], ResponseLike], status_url: str | None
) -> Callable[[], ResponseLike]:
    if status_url is not None:
        get = getattr(client, "get", None)
        if callable(get):
            return lambda: cast(ResponseLike, get(status_url))
        msg = f"poll_task(client, status_url) needs a client with .get(url); got {client!r}"
        raise TypeError(msg)
    if callable(client):
        return client
    msg = (
        f"poll_task({client!r}) needs a status URL too, e.g. "
        "poll_task(client, f'/recommender/rebuild/{task_id}')"
    )
    raise TypeError(msg)


def _status_json(response: ResponseLike, status_url: str | None) -> dict[str, Any]:
    where = status_url or "the status URL"
    try:
        payload = response.json()
    except ValueError as exc:
        msg = f"{where} did not return JSON (HTTP {response.status_code})"
        raise ValueError(msg) from exc
    if not isinstance(payload, dict) or "status" not in payload:
        msg = f'{where} should return a JSON object with a "status" key; got {payload!r}'
        raise ValueError(msg)
    return payload
