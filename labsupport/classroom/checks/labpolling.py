"""Lab 2's polling over real HTTP: the trial `checks.lab2.check_polling` runs.

The check serves your app with uvicorn on a free 127.0.0.1 port, POSTs a
rebuild, and calls your `app.retry_client.wait_for_rebuild` with an
`httpx.Client` for that server, while an ASGI middleware around your app
counts the status GETs and answers the second one with a 503. All times are
in seconds.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from labsupport.classroom.checks import CheckFailed, passed, require
from labsupport.classroom.checks.lab import (
    StudentApp,
    describe,
    quiet,
    served,
    student_module,
    tested,
)
from labsupport.classroom.checks.labhttp import UNFINISHED, accepted_task, client

__all__ = ["check_polling"]


class _FlakyStatus:
    """ASGI middleware around your app: counts the status GETs and answers the second with 503."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.times: list[float] = []  # when each status GET arrived

    @property
    def gets(self) -> int:
        return len(self.times)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        polled = (
            scope["type"] == "http"
            and scope["method"] == "GET"
            and scope["path"].startswith("/recommender/rebuild/")
        )
        if polled:
            self.times.append(time.monotonic())
        if polled and self.gets == _BUSY_GET:
            body = b'{"detail": "busy: a 503 injected by the check"}'
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
            ]
            await send({"type": "http.response.start", "status": 503, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


_BUSY_GET = 2  # the status GET answered 503: after one real answer, before 'complete'
_POLL_LIMIT = 5.0  # seconds wait_for_rebuild may take for a rebuild of about half a second
_LEAST_PAUSE = 0.05  # seconds between the first two polls: less means no sleep between them


def _run_in_thread(
    func: Callable[[], Any], timeout: float
) -> tuple[bool, Any, BaseException | None]:
    """Call `func` in a daemon thread; `(finished, result, error)` after at most `timeout`."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = func()
        except BaseException as exc:  # the student's code: whatever it raised is the answer
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="check-polling", daemon=True)
    thread.start()
    thread.join(timeout)
    return not thread.is_alive(), outcome.get("result"), outcome.get("error")


def _check_polled(
    student: StudentApp,
    finished: bool,
    result: Any,
    error: BaseException | None,
    times: list[float],
) -> None:
    """Name what went wrong with `wait_for_rebuild`'s run (raise `CheckFailed`)."""
    call = "wait_for_rebuild(client, task_id)"
    gets = len(times)
    require(
        finished,
        f"{call} had not returned after {_POLL_LIMIT:.0f} s, though the rebuild takes about half "
        "a second: stop polling once the status is neither 'queued' nor 'running', and return "
        "that last body",
    )
    if error is not None and gets <= _BUSY_GET:
        raise CheckFailed(
            f"{call} stopped at the one 503 the check injected on its second GET (it raised "
            f"{describe(error)}{student.where(error)}): send each GET through your with_backoff, "
            f'as in `with_backoff(lambda: client.get(f"/recommender/rebuild/{{task_id}}"))`'
        )
    if error is not None:
        raise student.failure(call, error, "fix it and run again")
    status = result.get("status") if isinstance(result, dict) else None
    require(
        status is not None,
        f"{call} returned {result!r:.80}: return the last status body, the dict "
        "{'task_id': ..., 'status': 'complete'} that response.json() gives",
    )
    require(
        status not in UNFINISHED,
        f"{call} returned while the task was still {status!r}: keep polling (with a short "
        "sleep) while the status is 'queued' or 'running'",
    )
    require(
        status == "complete",
        f"{call} returned {status!r}: the rebuild itself did not complete; "
        "checks.lab1.check_rebuild_endpoint (notebook 03) says why",
    )
    require(
        gets > _BUSY_GET,
        f"{call} returned 'complete' after {gets} GET(s), before the check could answer one with "
        "503, so it could not see your with_backoff retry it: keep Lab 1's time.sleep(0.5) in "
        "run_rebuild_task and run the check again",
    )
    pause = times[1] - times[0]
    require(
        pause >= _LEAST_PAUSE,
        f"{call} asked again {pause * 1000:.0f} ms after a 'queued' or 'running' answer: sleep "
        "between polls (time.sleep(0.2), or the Retry-After the status endpoint sends)",
    )


def check_polling(app_dir: str | Path = "app") -> None:
    """Check Lab 2's `wait_for_rebuild(client, task_id)` on your own rebuild, over real HTTP.

    The check serves your app with uvicorn on a free 127.0.0.1 port, POSTs a
    rebuild, and calls your `app.retry_client.wait_for_rebuild` with an
    `httpx.Client` for that server. It answers the second status GET with a
    503 (the server is "busy"), so only a poll that goes through your
    `with_backoff` gets past it.

    Raises:
        CheckFailed: naming the mistake: no `wait_for_rebuild`, a 503 that
            ends the polling, a return while the task is still queued or
            running, a poll that never stops, or polling with no pause.
    """
    with student_module(app_dir) as student, quiet():
        require(
            (student.folder / "app" / "retry_client.py").is_file(),
            "there is no app/retry_client.py yet: create it with with_backoff (the step above)",
        )
        try:
            retry_client = importlib.import_module("app.retry_client")
        except Exception as exc:
            raise student.failure("importing app/retry_client.py", exc, "fix it") from None
        wait = getattr(retry_client, "wait_for_rebuild", None)
        require(
            callable(wait),
            "app/retry_client.py has no wait_for_rebuild(client, task_id) yet: add the polling "
            "function of this step under with_backoff",
        )
        assert wait is not None  # for mypy: require() checked it
        flaky: list[_FlakyStatus] = []

        def wrap(app: Any) -> _FlakyStatus:
            flaky.append(_FlakyStatus(app))
            return flaky[0]

        with served(student, wrap) as (base, log), client(base) as http:
            where = f"over real HTTP, the check serving your app at {base}"
            with tested(where):
                task_id, _ = accepted_task(http.post("/recommender/rebuild"), log)
            finished, result, error = _run_in_thread(lambda: wait(http, task_id), _POLL_LIMIT)
            times = list(flaky[0].times)
        with tested(where):
            _check_polled(student, finished, result, error, times)
    passed(
        f"wait_for_rebuild polled your rebuild with {len(times)} GETs until 'complete', "
        f"retrying the 503 the check injected on the second one (tested {where})"
    )
