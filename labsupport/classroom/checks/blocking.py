"""Self-checks for notebooks 00 (start here) and 01 (blocking vs async).

Each check prints one line starting with ✔ when the answer is right and
raises `CheckFailed` with one sentence of help when
it is not.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from labsupport.classroom.checks import passed, require
from labsupport.classroom.demos import MODES, DemoRun
from labsupport.server import ServerHandle

__all__ = [
    "check_cold_recommendations",
    "check_first_server",
    "check_latency_table",
    "check_offloaded",
    "check_prediction",
]

_MOVIE_KEYS = {"id", "title", "year", "genre"}


def check_first_server(movies: Any, server: Any) -> None:
    """Check notebook 00's first exercise: a list of movies from your own, stopped, server.

    Args:
        movies: The decoded JSON of `GET /movies`.
        server: The handle `serve_in_thread` returned.
    """
    require(
        isinstance(movies, list),
        f"movies should be the list that GET /movies returns (call .json() on the response), "
        f"got {type(movies).__name__}",
    )
    require(
        len(movies) > 0,
        "movies is empty: add a movie with POST /movies before you list them",
    )
    require(
        all(isinstance(m, dict) and set(m) >= _MOVIE_KEYS for m in movies),
        "each movie should be a dict with id, title, year and genre: "
        "did you keep the JSON as it came back?",
    )
    require(
        isinstance(server, ServerHandle),
        "pass the handle that serve_in_thread(...) returned as the second argument",
    )
    require(
        not server.is_running,
        "your server is still running: call .stop() on it (or use a with block) to free its port",
    )
    count = f"{len(movies)} movie{'' if len(movies) == 1 else 's'}"
    passed(f"your server listed {count} and is stopped again")


def check_cold_recommendations(ids: Any, model_version: Any) -> None:
    """Check notebook 00's second exercise: what a server with no model recommends.

    Args:
        ids: The decoded JSON of `GET /recommendations/{user_id}` (default limit).
        model_version: The response's `X-Model-Version` header.
    """
    require(
        isinstance(model_version, str),
        "model_version should be the text of the X-Model-Version header: "
        "response.headers['X-Model-Version']",
    )
    require(
        model_version == "none",
        f"before any rebuild there is no model, so the header should say 'none', "
        f"got {model_version!r}: did you ask for a rebuild first?",
    )
    require(
        isinstance(ids, list) and all(isinstance(i, int) for i in ids) and 1 <= len(ids) <= 5,
        f"ids should be the JSON list of movie ids (1 to 5 of them), got {ids!r}: "
        "did you add a movie first, and call .json() on the response?",
    )
    require(
        ids == sorted(ids),
        f"expected the catalogue in id order, got {ids!r}: "
        "look at the endpoint's docstring in labsupport/api/movies.py",
    )
    passed(
        "with no model yet, the API answers at once with the catalogue, "
        "and says so in X-Model-Version"
    )


def check_prediction(freezing: Iterable[str]) -> None:
    """Check the prediction of which modes make `GET /ping` wait for the build.

    Args:
        freezing: The names of the modes you expect to freeze other requests.
    """
    require(
        not isinstance(freezing, str),
        "freezing should be a set of mode names, such as {'blocking'}, not one string",
    )
    chosen = set(freezing)
    unknown = sorted(chosen - set(MODES))
    require(not unknown, f"unknown mode(s) {unknown}; the modes are {', '.join(MODES)}")
    require(
        "blocking" in chosen,
        "look again at blocking: its POST handler is async def and builds before answering, "
        "so the event loop can serve nothing else meanwhile",
    )
    require(
        "async_task" in chosen,
        "look again at async_task: BackgroundTasks runs an async def task on the event loop "
        "itself, after the 202 has gone out",
    )
    require(
        "sync_task" not in chosen,
        "look again at sync_task: BackgroundTasks runs a plain def task in its thread pool, "
        "so the event loop stays free",
    )
    require(
        "executor" not in chosen,
        "look again at executor: the build runs in another process, and the loop only awaits it",
    )
    passed("the two modes that run the build on the event loop are the two that freeze it")


def _quantiles(rows: pd.DataFrame) -> pd.DataFrame:
    grouped = rows.groupby("mode", sort=False)["latency"]
    return pd.DataFrame({"p50": grouped.quantile(0.5), "p99": grouped.quantile(0.99)})


def _expected_latencies(requests: pd.DataFrame) -> pd.DataFrame:
    return _quantiles(requests[requests["client"].astype(str).str.startswith("client")])


def check_latency_table(table: Any, requests: pd.DataFrame) -> None:
    """Check a per-mode table of median and 99th-percentile latency, in seconds.

    The expected table uses the client requests only (not the `POST`),
    all of them (not only those during the build), and pandas' default
    quantile (linear interpolation).

    Args:
        table: Your DataFrame: one row per mode (the index), columns `p50`
            and `p99`.
        requests: The measurements it was computed from.
    """
    require(
        isinstance(table, pd.DataFrame),
        f"latency should be a DataFrame (one row per mode), got {type(table).__name__}",
    )
    require(
        {"p50", "p99"} <= set(table.columns),
        f"name the columns p50 and p99, got {list(table.columns)}",
    )
    expected = _expected_latencies(requests)
    require(
        set(table.index) == set(expected.index),
        f"expected one row per mode {sorted(expected.index)}, indexed by mode; "
        f"got the index {list(table.index)} (try .groupby('mode'))",
    )
    got = table.loc[expected.index, ["p50", "p99"]].to_numpy(dtype=float)
    want = expected.to_numpy(dtype=float)
    if not np.allclose(got, want, rtol=1e-6, atol=1e-9):
        everything = _quantiles(requests).loc[expected.index].to_numpy(dtype=float)
        require(
            not np.allclose(got, 1000 * want, rtol=1e-6),
            "your numbers look like milliseconds: keep latency in seconds",
        )
        require(
            not np.allclose(got, everything, rtol=1e-6, atol=1e-9),
            "leave out the POST /rebuild rows: keep rows whose client starts with 'client'",
        )
        require(
            False,
            "p50 and p99 differ from the data: group all the client rows by mode and take "
            "latency.quantile(0.5) and latency.quantile(0.99)",
        )
    passed(f"p50 and p99 match the measurements for all {len(expected)} modes")


def check_offloaded(run: Any, task: Any) -> None:
    """Check the stretch exercise: an `async def` task that keeps the loop free.

    Args:
        run: What `run_demo("async_task", ..., task=task)` returned.
        task: Your background function.
    """
    require(
        inspect.iscoroutinefunction(task),
        "keep the task an async def: the point is to stay async and hand the heavy call "
        "to a thread with await asyncio.to_thread(build)",
    )
    require(
        isinstance(run, DemoRun) and run.mode == "async_task",
        "run should be what run_demo('async_task', ratings, task=your_task, ...) returned",
    )
    require(
        len(run.builds) >= 1,
        "no build finished: your task must call build (via await asyncio.to_thread(build))",
    )
    verdicts = run.verdicts()
    require(
        not verdicts["ping_waited"] and verdicts["kept_flowing"],
        "requests still waited for the build: is build() called inside "
        "await asyncio.to_thread(...), rather than directly?",
    )
    passed("your async task hands the build to a thread: requests kept flowing during it")
