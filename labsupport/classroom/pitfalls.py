"""Throwaway apps that reproduce the seed's troubleshooting cases on purpose, and their fixes.

The lesson plan lists two ways a background rebuild goes wrong:

- "If the task never runs, verify `run_rebuild_task` is synchronous and you
  are not `await`-ing it inside the endpoint": `blocking_app` builds
  the endpoint that awaits the work (or calls it directly) instead of handing
  it to `BackgroundTasks`, so the request only returns after the build.
- The same warning covers the slips that keep the background task from ever
  running: `never_runs_app` calls `run_rebuild_task(task_id)` where it
  should hand over the function, inside `add_task(...)` or with no
  `add_task` at all. `rebuild_outcome` serves such an app for one POST and
  keeps what it logged and warned as text, so a notebook can quote the
  messages without a traceback or a warning reaching stderr.
- "When status stays `queued`, ensure `background.add_task(...)` is
  reached (no earlier exception)": `early_error_app` registers the task,
  then refuses the request, so the task is never scheduled and stays
  `queued` forever.

`seed_style_app` is the seed's own wiring, with nothing broken: a
synchronous background function that does the whole build. Notebook 03 uses
it to show what Starlette's in-process `TestClient` waits for.

Each app keeps the seed's shape (a `TASK_STATUS`-style dict and two
endpoints) but owns its state, so starting several in one notebook is safe.
The "build" is `build_delay` seconds of real CPU work (small SVDs, as a
rebuild does): the bugs are about *where* that work runs, and only real work
shows that an `async def` around it does not free the event loop.
`post_while_probing` times a second client while a POST runs, which is how a
frozen loop shows. All times are in seconds.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated, Literal

import httpx
import numpy as np
from fastapi import BackgroundTasks, FastAPI, Header, HTTPException, Query

from labsupport.server import serve_in_thread
from labsupport.tasks import counter_ids

__all__ = [
    "RebuildOutcome",
    "TaskBoard",
    "blocking_app",
    "early_error_app",
    "never_runs_app",
    "post_while_probing",
    "rebuild_outcome",
    "seed_style_app",
]

_MISTAKES: tuple[str, ...] = ("await", "direct")
"""The ways `blocking_app` can run the build inside the request."""

_SLIPS: tuple[str, ...] = ("sync_call", "async_call", "no_await")
"""The ways `never_runs_app` calls `run_rebuild_task` instead of handing it over."""

_SERVER_LOGGER = "uvicorn.error"
"""Where uvicorn logs an exception raised while it runs the app (background tasks included)."""

_TaskId = Annotated[str | None, Header(description="the client's own task id (seed's X-Task-Id)")]


class TaskBoard:
    """The seed's `TASK_STATUS` dict, one per app, with a fake build.

    Args:
        build_delay: how long one fake build takes, in seconds.

    Attributes:
        status: task id -> `"queued"`, `"running"`, `"complete"` or `"failed"`.
        build_delay: seconds per build.
    """

    def __init__(self, build_delay: float) -> None:
        if build_delay < 0:
            msg = f"build_delay must be >= 0 seconds, got {build_delay!r}"
            raise ValueError(msg)
        self.status: dict[str, str] = {}
        self.build_delay = build_delay
        self._new_id = counter_ids()

    def new_id(self) -> str:
        """Return the next task id: `task-1`, `task-2`..."""
        return self._new_id()

    def build(self) -> None:
        """Keep the CPU busy for `build_delay` seconds with SVDs of a small matrix."""
        deadline = time.perf_counter() + self.build_delay
        matrix = np.random.default_rng(0).random((120, 80))
        while time.perf_counter() < deadline:
            np.linalg.svd(matrix, full_matrices=False)

    def run_rebuild_task(self, task_id: str) -> None:
        """Do the build synchronously, as the seed's `run_rebuild_task` does."""
        self.status[task_id] = "running"
        self.build()
        self.status[task_id] = "complete"

    async def run_rebuild_task_async(self, task_id: str) -> None:
        """The same build made `async def` with its body unchanged, as people do by mistake.

        Nothing in it awaits, so whoever awaits it runs the whole build on the
        event loop: `async def` does not make CPU work non-blocking.
        """
        self.status[task_id] = "running"
        self.build()
        self.status[task_id] = "complete"

    def install_status_route(self, app: FastAPI) -> None:
        """Add the seed's `GET /recommender/rebuild/{task_id}` (`"unknown"` if never seen)."""

        @app.get("/recommender/rebuild/{task_id}")
        async def rebuild_status(task_id: str) -> dict[str, str]:
            return {"task_id": task_id, "status": self.status.get(task_id, "unknown")}


def seed_style_app(*, build_delay: float) -> FastAPI:
    """Return the seed's wiring: a sync `run_rebuild_task` handed to `add_task`.

    Over real HTTP the 202 goes out first and the build runs afterwards in
    Starlette's thread pool. Starlette's `TestClient` instead returns only
    once the background function has finished, so in-process tests never see
    `running`.

    Args:
        build_delay: seconds the build takes.

    Returns:
        The app; `app.state.board` is its `TaskBoard`.
    """
    board = TaskBoard(build_delay)
    app = FastAPI(title="Seed-style rebuild")
    app.state.board = board

    @app.post("/recommender/rebuild", status_code=202)
    async def rebuild(background: BackgroundTasks) -> dict[str, str]:
        task_id = board.new_id()
        board.status[task_id] = "queued"
        background.add_task(board.run_rebuild_task, task_id)
        return {"task_id": task_id, "status": "queued"}

    board.install_status_route(app)
    return app


def blocking_app(*, build_delay: float, mistake: Literal["await", "direct"] | None) -> FastAPI:
    """Return an app whose rebuild endpoint runs the build inside the request, or the fix.

    - `mistake="await"`: `run_rebuild_task` was made `async` (its body
      unchanged) and the endpoint does `await run_rebuild_task(task_id)`.
      The request answers only when the build is over, and since nothing in
      the build awaits, the event loop is blocked for every other client too.
    - `mistake="direct"`: the endpoint calls the sync `run_rebuild_task`
      directly: the same blocked loop, by a shorter route.
    - `mistake=None`: the fix, `background.add_task(run_rebuild_task, task_id)`
      with the sync function: the 202 goes out at once.

    The answer's `status` is read back from the board after the endpoint's
    work, so a blocking variant answers `"complete"`.

    Args:
        build_delay: seconds the build takes.
        mistake: `"await"` or `"direct"`, or `None` for the fixed endpoint.

    Returns:
        The app; `app.state.board` is its `TaskBoard`.

    Raises:
        ValueError: for an unknown `mistake`.
    """
    if mistake is not None and mistake not in _MISTAKES:
        choices = ", ".join(_MISTAKES)
        msg = f"unknown mistake {mistake!r}; choose one of {choices}, or None for the fix"
        raise ValueError(msg)
    board = TaskBoard(build_delay)
    app = FastAPI(title=f"Rebuild, mistake={mistake}")
    app.state.board = board

    @app.post("/recommender/rebuild", status_code=202)
    async def rebuild(background: BackgroundTasks) -> dict[str, str]:
        task_id = board.new_id()
        board.status[task_id] = "queued"
        if mistake == "await":
            await board.run_rebuild_task_async(task_id)  # BUG: the request waits for the build
        elif mistake == "direct":
            board.run_rebuild_task(task_id)  # BUG: blocks the event loop for every client
        else:
            background.add_task(board.run_rebuild_task, task_id)  # the fix: runs after the 202
        return {"task_id": task_id, "status": board.status[task_id]}

    board.install_status_route(app)
    return app


def never_runs_app(
    *, build_delay: float, slip: Literal["sync_call", "async_call", "no_await"]
) -> FastAPI:
    """Return an app whose endpoint calls `run_rebuild_task` instead of handing it over.

    - `slip="sync_call"`: `background.add_task(run_rebuild_task(task_id))`
      with the synchronous function. The call does the whole build inside the
      request, and `add_task` receives its return value, `None`; after
      the response Starlette tries to run `None` and raises `TypeError`.
    - `slip="async_call"`: the same line with `async def run_rebuild_task`.
      The call only creates a coroutine; `add_task` receives it, Starlette
      raises the same `TypeError`, and the coroutine is never awaited:
      Python warns `RuntimeWarning` when it is discarded.
    - `slip="no_await"`: `run_rebuild_task(task_id)` alone, with the
      `async def` function: a coroutine created and dropped at once, so only
      the `RuntimeWarning`.

    In the two `async` slips the build never starts, and the task stays
    `queued`. The fix is `blocking_app`'s fixed endpoint: hand the function
    and its argument, `background.add_task(run_rebuild_task, task_id)`.

    Args:
        build_delay: seconds the build takes.
        slip: `"sync_call"`, `"async_call"` or `"no_await"`.

    Returns:
        The app; `app.state.board` is its `TaskBoard`.

    Raises:
        ValueError: for an unknown `slip`.
    """
    if slip not in _SLIPS:
        msg = f"unknown slip {slip!r}; choose one of {', '.join(_SLIPS)}"
        raise ValueError(msg)
    board = TaskBoard(build_delay)
    app = FastAPI(title=f"Rebuild, slip={slip}")
    app.state.board = board

    def run_rebuild_task(task_id: str) -> None:
        board.run_rebuild_task(task_id)

    async def run_rebuild_task_async(task_id: str) -> None:
        await board.run_rebuild_task_async(task_id)

    # Python's warning names the coroutine by its qualified name: make it read as
    # it does for the module-level `async def run_rebuild_task` a student writes.
    run_rebuild_task_async.__qualname__ = "run_rebuild_task"

    @app.post("/recommender/rebuild", status_code=202)
    async def rebuild(background: BackgroundTasks) -> dict[str, str]:
        task_id = board.new_id()
        board.status[task_id] = "queued"
        # The slips are bugs on purpose; mypy sees each one, hence the ignores.
        if slip == "sync_call":  # BUG: builds now, inside the request, and hands over None
            background.add_task(run_rebuild_task(task_id))  # type: ignore[arg-type,func-returns-value]
        elif slip == "async_call":  # BUG: hands over a coroutine, which nothing awaits
            background.add_task(run_rebuild_task_async(task_id))  # type: ignore[arg-type]
        else:  # BUG: creates a coroutine and drops it, never awaited
            run_rebuild_task_async(task_id)  # type: ignore[unused-coroutine]
        return {"task_id": task_id, "status": board.status[task_id]}

    board.install_status_route(app)
    return app


@dataclass
class RebuildOutcome:
    """What one `POST /recommender/rebuild` did, as `rebuild_outcome` saw it.

    Attributes:
        status_code: The POST's HTTP status.
        answer: The POST's JSON body.
        took: Seconds the POST took.
        status: The task's status `waited` seconds after the POST answered.
        waited: Those seconds.
        logged: Each exception the server logged, as `"TypeError: the message"`
            (other warnings and errors it logged: their message).
        warned: Each warning raised, as `"RuntimeWarning: the message"`.
    """

    status_code: int
    answer: dict[str, str]
    took: float
    status: str
    waited: float
    logged: list[str] = field(default_factory=list)
    warned: list[str] = field(default_factory=list)


class _ErrorLog(logging.Handler):
    """Keeps each warning or error logged as one line of text.

    A logged exception becomes `"TypeError: the message"`; the exception
    object itself is not kept, since its traceback holds frames (and whatever
    they hold, such as a coroutine that should be collected).
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            exc = record.exc_info[1] if record.exc_info else None
            line = record.getMessage() if exc is None else f"{type(exc).__name__}: {exc}"
            self.lines.append(line)
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def _server_errors() -> Iterator[_ErrorLog]:
    """Send the server's warnings and errors to an `_ErrorLog` instead of stderr.

    Attach it after the server started: uvicorn configures its loggers when a
    server is created.
    """
    handler, logger = _ErrorLog(), logging.getLogger(_SERVER_LOGGER)
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False  # uvicorn's own handler, on its parent logger, prints to stderr
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def rebuild_outcome(app: FastAPI, *, wait: float) -> RebuildOutcome:
    """Serve `app` over real HTTP, POST one rebuild, and read its status `wait` seconds later.

    The app's rebuild endpoint must answer a `task_id` and serve
    `GET /recommender/rebuild/{task_id}`, as the apps of this module do.
    While the server runs, every warning is recorded instead of shown and the
    exceptions uvicorn logs are kept as text instead of printed; the server is
    stopped and the garbage collected before recording ends, so a coroutine
    that was never awaited has warned by the time this returns.

    Args:
        app: The app to try.
        wait: Seconds to wait after the POST before reading the status.

    Returns:
        The POST's answer and timing, the status, and what was logged and warned.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        server = serve_in_thread(app)
        with _server_errors() as errors:
            try:
                with httpx.Client(base_url=server.url, timeout=60) as client:
                    start = time.perf_counter()
                    response = client.post("/recommender/rebuild")
                    took = time.perf_counter() - start
                    time.sleep(wait)
                    answer = response.json()
                    polled = client.get(f"/recommender/rebuild/{answer['task_id']}").json()
            finally:
                server.stop()  # still capturing: what the shutdown logs is kept too
        gc.collect()  # a discarded coroutine warns when it is collected: here, while recording
    return RebuildOutcome(
        status_code=response.status_code,
        answer=answer,
        took=took,
        status=polled["status"],
        waited=wait,
        logged=errors.lines,
        warned=[f"{w.category.__name__}: {w.message}" for w in caught],
    )


def early_error_app(*, build_delay: float, fixed: bool = False) -> FastAPI:
    """Return an app whose rebuild can fail between registering and scheduling, or the fix.

    The endpoint takes the seed's `X-Task-Id` header as the task id (so the
    client knows the id even when the POST fails) and a `rank` query
    parameter (1 to 50).

    - `fixed=False`: the task is registered `queued` first, then `rank`
      is checked by hand and a bad one raises `HTTPException(422)`, so
      `add_task` is never reached. The client gets its 422, but polling the
      id shows `queued` forever.
    - `fixed=True`: FastAPI validates `rank` before the endpoint body runs
      (`Query(ge=1, le=50)`), so nothing is registered for a bad request;
      and everything after the registration sits in `try`/`except`, which
      marks the task `failed` before re-raising.

    Args:
        build_delay: seconds the build takes.
        fixed: build the fixed endpoint instead of the broken one.

    Returns:
        The app; `app.state.board` is its `TaskBoard`.
    """
    board = TaskBoard(build_delay)
    app = FastAPI(title=f"Rebuild, fixed={fixed}")
    app.state.board = board

    if not fixed:

        @app.post("/recommender/rebuild", status_code=202)
        async def rebuild(
            background: BackgroundTasks, rank: int = 10, x_task_id: _TaskId = None
        ) -> dict[str, str]:
            task_id = x_task_id or board.new_id()
            board.status[task_id] = "queued"  # registered first ...
            if not 1 <= rank <= 50:  # ... then validated: too late
                raise HTTPException(422, f"rank must be between 1 and 50, got {rank}")
            background.add_task(board.run_rebuild_task, task_id)  # never reached for a bad rank
            return {"task_id": task_id, "status": "queued"}

    else:

        @app.post("/recommender/rebuild", status_code=202)
        async def rebuild_fixed(
            background: BackgroundTasks,
            rank: Annotated[int, Query(ge=1, le=50)] = 10,  # validated before the body runs
            x_task_id: _TaskId = None,
        ) -> dict[str, str]:
            task_id = x_task_id or board.new_id()
            board.status[task_id] = "queued"
            try:
                background.add_task(board.run_rebuild_task, task_id)
            except Exception:
                board.status[task_id] = "failed"  # never leave a task queued forever
                raise
            return {"task_id": task_id, "status": "queued"}

    board.install_status_route(app)
    return app


def post_while_probing(
    base_url: str, path: str, probe: str, *, probe_after: float = 0.05
) -> tuple[httpx.Response, float, float]:
    """POST `path` and, while it runs, GET `probe` from a second client.

    A server whose event loop is free answers the probe at once, whatever the
    POST is doing; a blocked loop makes the probe wait until the POST's work
    is over.

    Args:
        base_url: The server, e.g. `handle.url`.
        path: What to POST.
        probe: What the second client GETs, `probe_after` seconds after the POST starts.
        probe_after: How long the second client waits before it asks.

    Returns:
        The POST's response, the seconds it took, and the seconds the probe took.
    """
    probe_seconds: list[float] = []

    def second_client() -> None:
        time.sleep(probe_after)
        with httpx.Client(base_url=base_url, timeout=60) as other:
            start = time.perf_counter()
            other.get(probe)
            probe_seconds.append(time.perf_counter() - start)

    thread = threading.Thread(target=second_client, name="pitfall-probe")
    thread.start()
    with httpx.Client(base_url=base_url, timeout=60) as client:
        start = time.perf_counter()
        response = client.post(path)
        took = time.perf_counter() - start
    thread.join()
    return response, took, probe_seconds[0]
