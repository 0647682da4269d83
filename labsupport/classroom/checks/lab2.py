"""Checks for Lab 2 in your own app: the retry client, idempotency keys, the shutdown.

Call them from a notebook cell with the folder that holds your `app/`
package (default `"app"`, relative to the notebook's folder; see
`labsupport.classroom.checks.lab`):

    from labsupport.classroom import checks
    checks.lab2.check_retry_client()   # app/retry_client.py, scripted answers, no real sleeping
    checks.lab2.check_polling()        # wait_for_rebuild on your rebuild, over real HTTP
    checks.lab2.check_idempotency()    # POST /recommender/rebuild with Idempotency-Key
    checks.lab2.check_shutdown()       # lifespan, and no task left queued or running

`check_polling` serves your app with uvicorn on a free 127.0.0.1 port and
polls over real HTTP; the others test in process (the last two with
Starlette's TestClient). Each
prints one `✔` sentence or raises `CheckFailed` with one sentence saying what
is wrong and what to change. All times are in seconds.
"""

from __future__ import annotations

import contextlib
import inspect
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx

from labsupport.classroom.checks import CheckFailed, passed, require
from labsupport.classroom.checks.lab import (
    StudentApp,
    capture_logs,
    describe,
    fastapi_app,
    student_module,
    tested,
)
from labsupport.classroom.checks.labhttp import START_HINT, UNFINISHED
from labsupport.classroom.checks.labpolling import check_polling

__all__ = ["check_idempotency", "check_polling", "check_retry_client", "check_shutdown"]

_URL = "http://127.0.0.1:8000/recommender/rebuild/task-1"
_CONNECT = "connect"  # a scripted outcome: httpx.ConnectError
_TESTCLIENT = "in process, with TestClient"
_RETRY_HINT = "retry only 429, 502, 503, 504 and httpx.TransportError (no answer at all)"


class _FakeTime:
    """Stands in for the `time` module: `sleep` records the wait and moves the clock on."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.waits.append(float(seconds))

    def _offset(self) -> float:
        return sum(max(0.0, w) for w in self.waits)

    def monotonic(self) -> float:
        return time.monotonic() + self._offset()

    def time(self) -> float:
        return time.time() + self._offset()

    def perf_counter(self) -> float:
        return time.perf_counter() + self._offset()

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@contextlib.contextmanager
def _instant_sleep(module: ModuleType) -> Iterator[_FakeTime]:
    """Make the module's `time.sleep` and `sleep` (from `from time import sleep`) instant."""
    fake = _FakeTime()
    saved = dict(vars(module))
    for name, value in saved.items():
        if value is time:
            setattr(module, name, fake)
        elif value is time.sleep:
            setattr(module, name, fake.sleep)
    try:
        yield fake
    finally:
        for name, value in saved.items():
            if value is time or value is time.sleep:
                setattr(module, name, value)


class _Script:
    """A `func` for `with_backoff`: answers (or raises) the scripted outcomes; the last repeats."""

    def __init__(self, *outcomes: int | str | tuple[int, dict[str, str]]) -> None:
        self.outcomes = outcomes
        self.calls = 0

    def __call__(self) -> httpx.Response:
        outcome = self.outcomes[min(self.calls, len(self.outcomes) - 1)]
        self.calls += 1
        request = httpx.Request("GET", _URL)
        if outcome == _CONNECT:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        status, headers = outcome if isinstance(outcome, tuple) else (int(outcome), {})
        return httpx.Response(status, headers=headers, json={"status": "x"}, request=request)


class _Trial:
    """One call of the student's `with_backoff` on a script, with its result and waits."""

    def __init__(self, with_backoff: Callable[..., Any], module: ModuleType) -> None:
        self.with_backoff = with_backoff
        self.module = module
        try:
            self.takes_sleep = "sleep" in inspect.signature(with_backoff).parameters
        except (TypeError, ValueError):
            self.takes_sleep = False

    def run(self, script: _Script, retries: int) -> tuple[Any, BaseException | None, list[float]]:
        with _instant_sleep(self.module) as fake:
            kwargs: dict[str, Any] = {"retries": retries, "backoff_factor": 0.1, "jitter": 0.0}
            if self.takes_sleep:
                kwargs["sleep"] = fake.sleep
            try:
                return self.with_backoff(script, **kwargs), None, fake.waits
            except Exception as exc:  # what the student's code raised is the answer
                return None, exc, fake.waits


def _status_of(result: Any, error: BaseException | None) -> str:
    if error is not None:
        return f"raised {describe(error)}"
    code = getattr(result, "status_code", None)
    return f"returned a {code} response" if code else f"returned {result!r}"


def _check_transient(trial: _Trial) -> None:
    script = _Script(503, 429, _CONNECT, 200)
    result, error, waits = trial.run(script, retries=3)
    labels = ["a 503", "a 429", "an httpx.ConnectError", "the 200"]
    gave_up_on = labels[min(max(script.calls, 1), 4) - 1]
    require(
        error is None and getattr(result, "status_code", None) == 200,
        f"when func answered 503, 429, a ConnectError, then 200 (retries=3), with_backoff gave "
        f"up on {gave_up_on} (it {_status_of(result, error)} after {script.calls} call(s)): "
        "retry 429, 502, 503, 504 and every httpx.TransportError (no answer at all)",
    )
    require(script.calls == 4, f"with_backoff made {script.calls} calls to reach the 4th answer")
    require(
        len(waits) >= 3 and all(w > 0 for w in waits[:3]),
        f"with_backoff waited {waits} between its 4 calls: sleep "
        "backoff_factor * 2 ** attempt (plus jitter) before every retry",
    )


def _check_final(trial: _Trial, status: int) -> None:
    script = _Script(status, 200)
    result, error, _ = trial.run(script, retries=3)
    require(
        script.calls == 1,
        f"with_backoff retried a {status} ({script.calls} calls): a {status} stays a {status} "
        f"however often you ask; {_RETRY_HINT}, and call raise_for_status() at once for the rest",
    )
    answered = getattr(result, "status_code", None) == status
    require(
        answered or isinstance(error, httpx.HTTPStatusError),
        f"after one {status} with_backoff {_status_of(result, error)}: raise "
        "httpx.HTTPStatusError (response.raise_for_status()) or return the response",
    )


def _check_exhausted(trial: _Trial) -> None:
    script = _Script(503)
    result, error, _ = trial.run(script, retries=2)
    require(
        script.calls <= 3,
        f"with retries=2 with_backoff made {script.calls} calls to an API that keeps answering "
        "503; make at most retries + 1 = 3",
    )
    require(
        getattr(result, "status_code", None) != 503,
        "after its 2 retries with_backoff returned the last 503 as if it were an answer: that "
        "is the seed's final `return func()`, one more, unguarded call; on the last attempt "
        "raise instead (response.raise_for_status(), or re-raise the error)",
    )
    require(
        isinstance(error, httpx.HTTPStatusError) and script.calls == 3,
        f"with an API that keeps answering 503 and retries=2 with_backoff "
        f"{_status_of(result, error)} after {script.calls} call(s): make 3 calls, then raise "
        "httpx.HTTPStatusError",
    )
    script = _Script(_CONNECT)
    result, error, _ = trial.run(script, retries=2)
    require(
        isinstance(error, httpx.TransportError) and script.calls == 3,
        f"with a server that never answers and retries=2 with_backoff "
        f"{_status_of(result, error)} after {script.calls} call(s): make 3 calls, then re-raise "
        "the httpx.ConnectError",
    )


def _check_retry_after(trial: _Trial) -> None:
    script = _Script((503, {"Retry-After": "2"}), 200)
    result, error, waits = trial.run(script, retries=2)
    require(
        error is None and script.calls == 2,
        f"after a 503 and then a 200 with_backoff {_status_of(result, error)} after "
        f"{script.calls} call(s): retry the 503 once and return the 200",
    )
    require(
        bool(waits) and waits[0] >= 2.0,
        f"with_backoff ignored `Retry-After: 2` (it waited {waits[0] if waits else 0:.2f} s "
        "before trying again): read response.headers['Retry-After'] and wait at least that long",
    )


def check_retry_client(app_dir: str | Path = "app") -> None:
    """Check Lab 2's `with_backoff(func, retries=..., backoff_factor=..., jitter=...)`.

    `func` is scripted: `httpx.Response` objects (with their request, so
    `raise_for_status()` works) and `httpx.ConnectError`s. Sleeping is made
    instant, whether the module calls `time.sleep`, a `sleep` it imported
    from `time`, or takes a `sleep=` argument, and every wait is recorded.

    Raises:
        CheckFailed: naming the mistake: a transient failure not retried, a
            404 or 422 retried, the seed's final `return func()`, too many
            calls, or `Retry-After` ignored.
    """
    missing = (
        "there is no app/retry_client.py yet: create it with the fixed with_backoff "
        "(the block of Lab 2 · step 1 in notebook 04)"
    )
    with student_module(app_dir, "app.retry_client", missing=missing) as student:
        with_backoff = getattr(student.module, "with_backoff", None)
        require(callable(with_backoff), "app/retry_client.py defines no with_backoff function")
        assert with_backoff is not None  # for mypy: require() checked it
        try:
            inspect.signature(with_backoff).bind(
                _Script(200), retries=1, backoff_factor=0.1, jitter=0.0
            )
        except TypeError:
            msg = (
                "with_backoff should be callable as "
                "with_backoff(func, retries=5, backoff_factor=0.5, jitter=0.2)"
            )
            raise CheckFailed(msg) from None
        except ValueError:
            pass  # no signature to read: let the calls decide
        trial = _Trial(with_backoff, student.module)
        with tested("in process, with scripted answers and instant sleeps"):
            _check_transient(trial)
            _check_final(trial, 404)
            _check_final(trial, 422)
            _check_exhausted(trial)
            _check_retry_after(trial)
    passed(
        "with_backoff retries 503, 429 and connection errors, never 404 or 422, raises once "
        "its retries are spent (retries + 1 calls at most) and honours Retry-After: 2 "
        "(tested in process with scripted answers and instant sleeps)"
    )


def _count_builds(student: StudentApp) -> list[int]:
    """Wrap `build_model` where `app.main` finds it; the list's one number counts the calls."""
    count = [0]
    main = student.module
    recommender = getattr(main, "recommender", None)
    for owner in (recommender, main):
        original = getattr(owner, "build_model", None)
        if isinstance(owner, ModuleType) and callable(original):

            def counted(*args: Any, _build: Any = original, **kwargs: Any) -> Any:
                count[0] += 1
                return _build(*args, **kwargs)

            owner.build_model = counted  # type: ignore[attr-defined]
    return count


def _post(student: StudentApp, http: Any, key: str | None) -> str:
    """POST a rebuild (with `Idempotency-Key: key` unless None) and return its task id."""
    headers = {} if key is None else {"Idempotency-Key": key}
    try:
        answer = http.post("/recommender/rebuild", headers=headers)
    except Exception as exc:  # TestClient re-raises the app's exceptions
        raise student.failure("POST /recommender/rebuild", exc, "fix it and run again") from None
    code = answer.status_code
    require(code not in (404, 405), f"POST /recommender/rebuild answered {code}: {START_HINT}")
    sent = "with" if key else "without"
    require(
        code in (200, 202) and isinstance(answer.json(), dict) and "task_id" in answer.json(),
        f"POST /recommender/rebuild {sent} an Idempotency-Key answered {code} "
        f"{answer.text[:120]}"
        + ("; make the header optional (`= None`)" if key is None and code == 422 else ""),
    )
    return str(answer.json()["task_id"])


def check_idempotency(app_dir: str | Path = "app") -> None:
    """Check Lab 2's idempotency keys on `POST /recommender/rebuild`, in process.

    Two POSTs with the same `Idempotency-Key` must return the same task id
    and start one build (the check counts calls of your
    `recommender.build_model`); two POSTs without a key must still start
    rebuilds (two tasks, or one they share: either is fine). TestClient runs
    each background task before it returns, so every build is counted.

    Raises:
        CheckFailed: naming the mistake: a new task for a repeated key, or a
            second build for it.
    """
    from fastapi.testclient import TestClient

    with (
        student_module(app_dir) as student,
        capture_logs(student.folder),
        tested(_TESTCLIENT),
    ):
        app = fastapi_app(student)
        builds = _count_builds(student)
        with TestClient(app) as http:
            key = f"check-{uuid.uuid4().hex}"
            first, second = _post(student, http, key), _post(student, http, key)
            keyed = builds[0]
            third, fourth = _post(student, http, None), _post(student, http, None)
            plain = builds[0] - keyed
    with tested(_TESTCLIENT):
        _check_keys(first, second, keyed, plain)
    shared = "two tasks" if third != fourth else "one shared task"
    passed(
        "two POSTs with the same Idempotency-Key returned one task id and started one build, "
        f"and POSTs without a key still rebuild, as {shared} (tested in process with TestClient)"
    )


def _check_keys(first: str, second: str, keyed: int, plain: int) -> None:
    """One task and one build for a repeated key; rebuilds still without a key."""
    require(
        first == second,
        f"two POSTs with the same Idempotency-Key got two task ids ({first} and {second}) and "
        f"started {keyed} builds: read the header (`idempotency_key: Annotated[str | None, "
        "Header()] = None`), remember key -> task id, and answer a repeated key with its task",
    )
    require(
        keyed == 1,
        f"two POSTs with the same Idempotency-Key returned one task id but started {keyed} "
        "builds: call background.add_task only when the key is new"
        + ("" if keyed else " (does run_rebuild_task call recommender.build_model?)"),
    )
    require(plain >= 1, "two POSTs without an Idempotency-Key started no build")


def _check_no_on_event(student: StudentApp, app: Any) -> None:
    """Shutdown code in `@app.on_event("shutdown")` instead of a lifespan: name it."""
    router = getattr(app, "router", None)
    handlers = [*getattr(router, "on_startup", []), *getattr(router, "on_shutdown", [])]
    warned = next((w for w in student.import_warnings if "on_event" in w), None)
    require(
        not handlers and warned is None,
        "app/main.py registers its shutdown code with `@app.on_event(...)`, which FastAPI "
        f"deprecates (DeprecationWarning: {(warned or 'on_event is deprecated').splitlines()[0]}): "
        "move that code after the `yield` of a lifespan function and create the app with "
        "`FastAPI(lifespan=lifespan)`",
    )
    lifespan = getattr(router, "lifespan_context", None)
    require(
        lifespan is not None and type(lifespan).__name__ != "_DefaultLifespan",
        "the app has no lifespan: write `@asynccontextmanager async def lifespan(app)` whose "
        "code after `yield` runs at shutdown, and create the app with FastAPI(lifespan=lifespan)",
    )


def check_shutdown(app_dir: str | Path = "app") -> None:
    """Check Lab 2's graceful shutdown: a `lifespan`, and no task left queued or running.

    The app must use `FastAPI(lifespan=...)`, not `@app.on_event("shutdown")`
    (deprecated). The check then starts the app with TestClient, plants a
    `running` and a `queued` task in your `TASK_STATUS`, shuts the app down,
    and expects both to read a final state such as `interrupted`.

    Raises:
        CheckFailed: naming `on_event`, a missing lifespan, or the tasks
            still unfinished (or gone) after the shutdown.
    """
    from fastapi.testclient import TestClient

    with (
        student_module(app_dir) as student,
        capture_logs(student.folder),
        tested(_TESTCLIENT),
    ):
        app = fastapi_app(student)
        _check_no_on_event(student, app)
        status = getattr(student.module, "TASK_STATUS", None)
        require(
            isinstance(status, dict),
            "app/main.py has no TASK_STATUS dict: Lab 1's rebuild keeps each task's status there",
        )
        assert isinstance(status, dict)  # for mypy: require() checked it
        planted = {f"check-{state}-{uuid.uuid4().hex[:8]}": state for state in UNFINISHED}
        try:
            with TestClient(app):
                status.update(planted)
        except Exception as exc:
            raise student.failure("the app's lifespan", exc, "fix it and run again") from None
        after = {task: status.get(task) for task in planted}
    with tested(_TESTCLIENT):
        finals = _check_finals(after)
    passed(
        "the app shuts down through its lifespan (no on_event), and tasks left running or "
        f"queued read {finals} afterwards (tested in process with TestClient)"
    )


def _check_finals(after: dict[str, Any]) -> str:
    """Check no planted task is gone or unfinished; return their final states for the message."""
    gone = [task for task, state in after.items() if state is None]
    require(
        not gone,
        "the shutdown removed the unfinished tasks from TASK_STATUS: keep them, with a final "
        "state such as 'interrupted', so a client polling after a restart learns what happened",
    )
    left = sorted({str(state) for state in after.values() if state in UNFINISHED})
    require(
        not left,
        f"after the shutdown, tasks still read {' and '.join(map(repr, left))}: in the lifespan, "
        "after the `yield`, set every task still queued or running to 'interrupted'",
    )
    return " and ".join(sorted({repr(state) for state in after.values()}))
