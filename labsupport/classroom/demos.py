"""Throwaway movie services that rebuild their model four ways, and what they measure.

Notebook 01 measures what a rebuild does to *other* requests. Each demo app
has the same three endpoints and differs only in where `POST /rebuild` runs
the build (`labsupport.recommender.build_model`):

==============  =================================================================
mode            where the build runs
==============  =================================================================
`blocking`    inside the `async def` POST handler, before it answers (the
                seed's build-on-a-cache-miss): the caller waits, and so does
                every other request, because the event loop is busy
`async_task`  in an `async def` function given to `BackgroundTasks`: the
                POST answers 202 at once, then the build runs *on the event
                loop* and freezes every other request
`sync_task`   in a plain `def` function given to `BackgroundTasks`:
                Starlette runs it in its thread pool, so the loop stays free
`executor`    in a separate process (`ProcessPoolExecutor`),
                awaited from the loop: no shared loop, no shared GIL
==============  =================================================================

Endpoints: `GET /ping` (answers at once: it measures whether the loop is
free), `GET /recommendations/{user_id}` and `POST /rebuild`. The app keeps
a `BuildLog` in `app.state.builds` with the start and end of every
build.

`run_demo` does the whole experiment for one mode: start the server,
record requests with `labsupport.classroom.loadgen.record_requests` (the load
generator), POST a rebuild part-way through, wait for the build, stop the
server. `DemoRun` holds what it measured and `verdict_table` judges it.

Everything here is a teaching instrument: the real service
(`labsupport.tasks`) runs its builds on a worker thread, like
`sync_task`. All times are in seconds, measured with
`time.perf_counter`.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from fastapi import BackgroundTasks, FastAPI, Response

from labsupport.classroom.loadgen import record_requests
from labsupport.recommender import Model, build_model, recommend
from labsupport.server import serve_in_thread

__all__ = [
    "MODES",
    "BuildLog",
    "DemoRun",
    "make_demo_app",
    "process_pool",
    "run_demo",
    "verdict_table",
]

MODES = ("blocking", "async_task", "sync_task", "executor")
"""The four places a rebuild can run, from worst to best for other requests."""

_BLOCKED_FRACTION = 0.5
"""A request "waited for the build" if it took more than this share of the build."""

_FREE_FRACTION = 0.25
"""Requests "kept flowing" if their 90th percentile stayed under this share of the build."""

_BuildTask = Callable[[Callable[[], None]], Any]
"""A background rebuild: called with `build`, a no-argument function that rebuilds."""


class BuildLog:
    """The start and end of each build a demo app ran, thread-safe.

    Times are `time.perf_counter` readings, the clock
    `record_requests` uses, so the two line up.
    """

    def __init__(self) -> None:
        self._windows: list[list[float | None]] = []
        self._changed = threading.Condition()

    def start(self) -> int:
        """Record that a build starts now and return its number."""
        with self._changed:
            self._windows.append([time.perf_counter(), None])
            return len(self._windows) - 1

    def finish(self, number: int) -> None:
        """Record that build `number` ended now (failed builds end too)."""
        with self._changed:
            self._windows[number][1] = time.perf_counter()
            self._changed.notify_all()

    @property
    def running(self) -> bool:
        """Whether a build has started and not finished."""
        with self._changed:
            return any(end is None for _, end in self._windows)

    def settled(self, quiet: float = 0.0) -> bool:
        """Return whether at least one build ran, none is running, and `quiet` seconds passed."""
        with self._changed:
            if not self._windows or any(end is None for _, end in self._windows):
                return False
            last = max(end for _, end in self._windows if end is not None)
            return time.perf_counter() - last >= quiet

    def wait(self, timeout: float) -> bool:
        """Wait until no build is running; return False if `timeout` ran out first."""
        with self._changed:
            return self._changed.wait_for(lambda: not self.running, timeout)

    def windows(self, origin: float = 0.0) -> list[tuple[float, float]]:
        """Return the finished builds as `(start, end)`, measured from `origin`."""
        with self._changed:
            return [
                (start - origin, end - origin)
                for start, end in self._windows
                if start is not None and end is not None
            ]


def _limited_build(ratings: Any, rank: int, seed: int, threads: int | None) -> Model:
    """Build a model, with the BLAS thread pool capped at `threads` (None: no cap)."""
    if threads is None:
        return build_model(ratings, rank=rank, seed=seed)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads, user_api="blas"):
        return build_model(ratings, rank=rank, seed=seed)


def _warm_up() -> bool:
    """Run in a fresh worker process so its first real build pays no import cost."""
    import threadpoolctl  # noqa: F401  (the imports are the point)

    import labsupport.recommender  # noqa: F401

    return True


def process_pool() -> ProcessPoolExecutor:
    """Start a one-worker process pool for `executor` builds and wait until it is ready.

    The worker is started with `spawn` (a fresh Python, the same on Linux,
    macOS and Windows) and imports the recommender before this returns,
    which takes a second or two: do it once, before measuring anything.
    Shut the pool down with `pool.shutdown()` when you are done.

    Returns:
        The ready pool.
    """
    pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    pool.submit(_warm_up).result()
    return pool


def make_demo_app(
    mode: str,
    ratings: Any,
    *,
    rank: int = 30,
    seed: int = 0,
    build_threads: int | None = 1,
    task: _BuildTask | None = None,
    pool: ProcessPoolExecutor | None = None,
) -> FastAPI:
    """Build a small FastAPI app whose `POST /rebuild` runs the build as `mode` says.

    The model is swapped in with one assignment when a build ends;
    `GET /recommendations/{user_id}` answers from it (an empty list before
    the first build, except in `blocking` mode, which builds right there,
    as the seed's `recommend_for_user` did on a cache miss). The
    `executor` app builds in `pool`; without one it starts its own
    (`process_pool`) when the server starts and stops it when the
    server stops.

    Args:
        mode: One of `MODES`.
        ratings: What the build uses: anything `build_model` accepts.
        rank: Rank passed to `build_model`.
        seed: Seed passed to `build_model`.
        build_threads: Cap on the BLAS threads a build may use (`None`: no
            cap). One thread leaves a core for the server on a small machine.
        task: For `async_task` and `sync_task`: your own background
            function instead of the built-in one. FastAPI calls it with one
            argument, `build`, a plain function that builds the model,
            swaps it in and logs the build. An `async def` task runs on the
            event loop; a plain `def` one runs in the thread pool.
        pool: For `executor`: a ready pool from `process_pool`,
            which the app uses and leaves running.

    Returns:
        The app; `app.state.builds` is its `BuildLog` and
        `app.state.model` the serving model (`None` before a build).

    Raises:
        ValueError: if `mode` is unknown, or `task` is given for a mode
            other than `async_task` or `sync_task`.
    """
    if mode not in MODES:
        msg = f"unknown mode {mode!r}; choose one of {', '.join(MODES)}"
        raise ValueError(msg)
    if task is not None and mode not in ("async_task", "sync_task"):
        msg = f"task= replaces the background function of async_task or sync_task, not {mode!r}"
        raise ValueError(msg)
    log = BuildLog()
    pools: list[ProcessPoolExecutor] = [] if pool is None else [pool]
    app = FastAPI(title=f"Rebuild demo: {mode}", lifespan=_pool_lifespan(mode, pools))
    app.state.builds = log
    app.state.model = None
    build, background = _build_functions(app, pools, ratings, rank, seed, build_threads)
    _add_routes(app, mode, build, background, task)
    return app


_Background = Callable[[], Awaitable[None] | None]
"""A built-in background rebuild, by mode: given to `BackgroundTasks` with no arguments."""


def _pool_lifespan(
    mode: str, pools: list[ProcessPoolExecutor]
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Start the `executor` app's own pool with the server (unless one was given); stop it after."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = mode == "executor" and not pools
        if own:
            pools.append(await asyncio.to_thread(process_pool))
        yield
        if own:
            pools.pop().shutdown(wait=True, cancel_futures=True)

    return lifespan


def _build_functions(
    app: FastAPI,
    pools: list[ProcessPoolExecutor],
    ratings: Any,
    rank: int,
    seed: int,
    build_threads: int | None,
) -> tuple[Callable[[], None], dict[str, _Background]]:
    """Return `build` (build here, swap the model in, log it) and the background rebuilds."""
    log: BuildLog = app.state.builds

    def build() -> None:
        number = log.start()
        try:
            app.state.model = _limited_build(ratings, rank, seed, build_threads)
        finally:
            log.finish(number)

    async def build_on_the_loop() -> None:
        build()  # no await inside: nothing else runs on the loop until it returns

    def build_in_a_thread() -> None:
        build()

    async def build_in_a_process() -> None:
        number = log.start()
        try:
            loop = asyncio.get_running_loop()
            app.state.model = await loop.run_in_executor(
                pools[0], _limited_build, ratings, rank, seed, build_threads
            )
        finally:
            log.finish(number)

    return build, {
        "async_task": build_on_the_loop,
        "sync_task": build_in_a_thread,
        "executor": build_in_a_process,
    }


def _add_routes(
    app: FastAPI,
    mode: str,
    build: Callable[[], None],
    background: Mapping[str, _Background],
    task: _BuildTask | None,
) -> None:
    """Add `GET /ping`, `GET /recommendations/{user_id}` and `POST /rebuild` to `app`."""

    @app.get("/ping")
    async def ping() -> dict[str, bool]:
        """Answer at once (if the event loop is free to run this)."""
        return {"pong": True}

    @app.get("/recommendations/{user_id}")
    async def recommendations(user_id: int, limit: int = 5) -> list[int]:
        """Return the user's top movie ids from the current model."""
        if app.state.model is None and mode == "blocking":
            build()  # the seed's build-on-a-miss, inside the request
        model = app.state.model
        return [] if model is None else recommend(model, user_id, limit=limit)

    @app.post("/rebuild")
    async def rebuild(tasks: BackgroundTasks, response: Response) -> dict[str, str]:
        """Rebuild the model: inline (`blocking`) or as a background task."""
        if mode == "blocking":
            build()
            return {"status": "complete"}
        if task is not None:
            tasks.add_task(task, build)
        else:
            tasks.add_task(background[mode])
        response.status_code = 202
        return {"status": "queued"}


@dataclass(frozen=True, eq=False)
class DemoRun:
    """What `run_demo` measured for one mode.

    Attributes:
        mode: The mode (one of `MODES`).
        requests: One row per request (columns
            `labsupport.classroom.loadgen.COLUMNS`), times in
            seconds from the start of the recording.
        builds: `(start, end)` of each build, on the same clock.
    """

    mode: str
    requests: pd.DataFrame = field(repr=False)
    builds: list[tuple[float, float]]

    @property
    def build_seconds(self) -> float:
        """How long the (first) build took, in seconds (nan if none finished)."""
        if not self.builds:
            return float("nan")
        start, end = self.builds[0]
        return end - start

    def pings(self) -> pd.DataFrame:
        """Return the client requests (not the POST) that overlapped the first build."""
        clients = self.requests[self.requests["client"].str.startswith("client")]
        if not self.builds:
            return clients.iloc[:0]
        start, end = self.builds[0]
        return clients[(clients["start"] < end) & (clients["end"] > start)]

    def verdicts(self) -> dict[str, bool]:
        """Judge the measurement with generous thresholds (robust on a busy laptop).

        - `post_waited`: the `POST /rebuild` took more than half the build.
        - `ping_waited`: some request that overlapped the build took more
          than half the build.
        - `kept_flowing`: the requests that overlapped the build had a 90th
          percentile latency under a quarter of the build (false when no
          request overlapped it).

        Returns:
            The three verdicts by name.
        """
        build = self.build_seconds
        posts = self.requests[~self.requests["client"].str.startswith("client")]
        latencies = self.pings()["latency"].to_numpy()
        post = float(posts["latency"].max()) if len(posts) else 0.0
        longest = float(latencies.max()) if len(latencies) else 0.0
        p90 = float(np.quantile(latencies, 0.9)) if len(latencies) else float("inf")
        return {
            "post_waited": bool(post > _BLOCKED_FRACTION * build),
            "ping_waited": bool(longest > _BLOCKED_FRACTION * build),
            "kept_flowing": bool(p90 < _FREE_FRACTION * build),
        }

    def summary(self) -> dict[str, Any]:
        """Return the measured numbers, rounded to milliseconds (they vary run to run)."""
        latencies = self.pings()["latency"]
        posts = self.requests[~self.requests["client"].str.startswith("client")]
        return {
            "mode": self.mode,
            "build_s": round(self.build_seconds, 3),
            "post_s": round(float(posts["latency"].max()), 3) if len(posts) else None,
            "requests_during_build": len(latencies),
            "p90_s": round(float(latencies.quantile(0.9)), 3) if len(latencies) else None,
            "max_s": round(float(latencies.max()), 3) if len(latencies) else None,
        }


def run_demo(
    mode: str,
    ratings: Any,
    *,
    rank: int = 30,
    seed: int = 0,
    task: _BuildTask | None = None,
    pool: ProcessPoolExecutor | None = None,
    build_threads: int | None = 1,
    n_clients: int = 3,
    interval: float = 0.05,
    lead: float = 0.3,
    tail: float = 0.3,
    path: str = "/ping",
    max_duration: float = 10.0,
) -> DemoRun:
    """Measure what one rebuild does to other requests, for one mode.

    Starts `make_demo_app` on 127.0.0.1 (a free port), records
    requests with `record_requests`, POSTs `/rebuild` `lead`
    seconds in, keeps recording until the build has been over for `tail`
    seconds (at most `max_duration`), then stops the server, whatever
    happened.

    Args:
        mode: One of `MODES`.
        ratings: What the build uses.
        rank: Rank passed to `build_model`.
        seed: Seed passed to `build_model`.
        task: Your own background function (see `make_demo_app`).
        pool: A ready process pool for `executor` (see `make_demo_app`).
        build_threads: Cap on BLAS threads during a build.
        n_clients: Number of client threads.
        interval: Pause between a client's requests.
        lead: When the rebuild is asked for.
        tail: How long to keep recording after the build.
        path: The path the clients GET.
        max_duration: Hard cap on the recording.

    Returns:
        The measurement.
    """
    app = make_demo_app(
        mode, ratings, rank=rank, seed=seed, build_threads=build_threads, task=task, pool=pool
    )
    log: BuildLog = app.state.builds
    with serve_in_thread(app) as server:
        requests = record_requests(
            server.url,
            path=path,
            n_clients=n_clients,
            duration=lead + tail,
            interval=interval,
            during="/rebuild",
            during_at=lead,
            until=lambda: log.settled(tail),
            max_duration=max_duration,
        )
        log.wait(max_duration)
    requests["mode"] = mode
    return DemoRun(mode, requests, log.windows(requests.attrs["origin"]))


def verdict_table(runs: Mapping[str, DemoRun] | Sequence[DemoRun]) -> pd.DataFrame:
    """Return one row of `DemoRun.verdicts` per run, indexed by mode.

    The booleans are the same on every run of a healthy machine, so a
    notebook can print this table and check it.
    """
    values = runs.values() if isinstance(runs, Mapping) else runs
    table = pd.DataFrame([{"mode": run.mode, **run.verdicts()} for run in values])
    return table.set_index("mode")
