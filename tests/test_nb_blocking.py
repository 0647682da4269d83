"""Notebooks 00 and 01: their key results recomputed, and their checks and plots.

The four demo modes run for real (a server on 127.0.0.1, client threads, a
smaller build than the notebook's); the verdicts use the same generous
thresholds as the notebook, relative to the measured build time, so they
hold on a busy two-core machine. No speed is asserted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from labsupport.api import create_app
from labsupport.classroom import demos
from labsupport.classroom.checks import CheckFailed
from labsupport.classroom.checks.blocking import (
    check_cold_recommendations,
    check_first_server,
    check_latency_table,
    check_offloaded,
    check_prediction,
)
from labsupport.classroom.plots.timeline import request_gantt
from labsupport.classroom.workbook import notebook_parameters
from labsupport.data import synthetic_ratings
from labsupport.server import running_servers, serve_in_thread

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"
NB01 = notebook_parameters(NOTEBOOKS / "01_blocking_vs_async.ipynb")
SMALL = {"lead": 0.15, "tail": 0.1, "interval": 0.03, "n_clients": 3}
EXPECTED = {  # (post_waited, ping_waited, kept_flowing), as the notebook prints them
    "blocking": (True, True, False),
    "async_task": (False, True, False),
    "sync_task": (False, False, True),
    "executor": (False, False, True),
}


@pytest.fixture(scope="module")
def ratings() -> Any:
    """Ratings for a build of a few tenths of a second (the notebook's is larger)."""
    return synthetic_ratings(4000, 2500, 400_000, seed=NB01["SEED"])


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPoolExecutor]:
    executor = demos.process_pool()
    yield executor
    executor.shutdown()


@pytest.fixture(scope="module")
def runs(ratings: Any, pool: ProcessPoolExecutor) -> dict[str, demos.DemoRun]:
    before = set(running_servers())
    measured = {
        mode: demos.run_demo(
            mode, ratings, rank=NB01["RANK"], seed=NB01["SEED"], pool=pool, **SMALL
        )
        for mode in demos.MODES
    }
    assert set(running_servers()) <= before, "run_demo stops every server it starts"
    return measured


# -- notebook 01's key results -------------------------------------------------


def test_notebook_01_ratings_have_the_printed_shape() -> None:
    ratings = synthetic_ratings(
        NB01["N_USERS"], NB01["N_MOVIES"], NB01["N_RATINGS"], seed=NB01["SEED"]
    )
    assert len(ratings) == NB01["N_RATINGS"]
    assert int(ratings.user_ids.max()) == NB01["N_USERS"]


@pytest.mark.parametrize("polite", [True, False])
def test_coroutines_overlap_only_when_they_await(polite: bool) -> None:
    pause = 0.1

    async def wait() -> None:
        if polite:
            await asyncio.sleep(pause)
        else:
            time.sleep(pause)

    async def both() -> None:
        await asyncio.gather(wait(), wait())

    started = time.perf_counter()
    asyncio.run(both())
    assert (time.perf_counter() - started < 1.5 * pause) is polite


@pytest.mark.parametrize("mode", demos.MODES)
def test_each_mode_gives_the_notebooks_verdicts(runs: dict[str, demos.DemoRun], mode: str) -> None:
    run = runs[mode]
    assert len(run.builds) == 1, "exactly one build ran and finished"
    assert (run.requests["status"] == 200).sum() >= 3
    verdicts = run.verdicts()
    got = (verdicts["post_waited"], verdicts["ping_waited"], verdicts["kept_flowing"])
    assert got == EXPECTED[mode], run.summary()


def test_verdict_table_lists_every_mode(runs: dict[str, demos.DemoRun]) -> None:
    table = demos.verdict_table(runs)
    assert list(table.index) == list(demos.MODES)
    assert list(table.columns) == ["post_waited", "ping_waited", "kept_flowing"]
    assert table.loc["async_task", "ping_waited"]
    assert not table.loc["sync_task", "ping_waited"]


def test_the_stretch_solution_keeps_requests_flowing(ratings: Any) -> None:
    async def rebuild_off_the_loop(build: Any) -> None:
        await asyncio.to_thread(build)

    run = demos.run_demo("async_task", ratings, task=rebuild_off_the_loop, **SMALL)
    check_offloaded(run, rebuild_off_the_loop)


def test_an_async_task_that_builds_inline_fails_the_stretch_check(
    runs: dict[str, demos.DemoRun],
) -> None:
    async def inline(build: Any) -> None:
        build()

    with pytest.raises(CheckFailed, match="still waited"):
        check_offloaded(runs["async_task"], inline)
    with pytest.raises(CheckFailed, match="async def"):
        check_offloaded(runs["sync_task"], lambda build: build())


# -- the checks ----------------------------------------------------------------


def test_check_prediction(capsys: pytest.CaptureFixture[str]) -> None:
    check_prediction({"blocking", "async_task"})
    assert capsys.readouterr().out.startswith("\u2714")
    with pytest.raises(CheckFailed, match="thread pool"):
        check_prediction({"blocking", "async_task", "sync_task"})
    with pytest.raises(CheckFailed, match="event loop"):
        check_prediction({"blocking"})
    with pytest.raises(CheckFailed, match="unknown mode"):
        check_prediction({"blocking", "async_task", "threads"})
    with pytest.raises(CheckFailed, match="set of mode names"):
        check_prediction("blocking")


def fake_requests() -> pd.DataFrame:
    rows = []
    for mode, slow in (("fast_mode", 0.01), ("slow_mode", 0.9)):
        for i in range(20):
            latency = slow if i == 10 else 0.005 + i / 1000
            rows.append(
                (mode, f"client {i % 2 + 1}", "/ping", i * 0.05, i * 0.05 + latency, latency)
            )
        rows.append((mode, "POST /rebuild", "/rebuild", 0.2, 1.5, 1.3))
    columns = ["mode", "client", "path", "start", "end", "latency"]
    return pd.DataFrame(rows, columns=columns).assign(status=200)


def latency_solution(requests: pd.DataFrame) -> pd.DataFrame:
    clients = requests[requests["client"].str.startswith("client")]
    by_mode = clients.groupby("mode", sort=False)["latency"]
    return pd.DataFrame({"p50": by_mode.quantile(0.5), "p99": by_mode.quantile(0.99)})


def test_check_latency_table(capsys: pytest.CaptureFixture[str]) -> None:
    requests = fake_requests()
    right = latency_solution(requests)
    check_latency_table(right, requests)
    assert "2 modes" in capsys.readouterr().out
    with pytest.raises(CheckFailed, match="milliseconds"):
        check_latency_table(right * 1000, requests)
    everything = requests.groupby("mode", sort=False)["latency"]
    with_post = pd.DataFrame({"p50": everything.quantile(0.5), "p99": everything.quantile(0.99)})
    with pytest.raises(CheckFailed, match="POST"):
        check_latency_table(with_post, requests)
    with pytest.raises(CheckFailed, match="p50 and p99"):
        check_latency_table(right.rename(columns={"p50": "median"}), requests)
    with pytest.raises(CheckFailed, match="one row per mode"):
        check_latency_table(right.reset_index(), requests)
    with pytest.raises(CheckFailed, match="differ"):
        check_latency_table(right + 0.5, requests)
    with pytest.raises(CheckFailed, match="DataFrame"):
        check_latency_table(right.to_dict(), requests)


def test_check_first_server_and_cold_recommendations(capsys: pytest.CaptureFixture[str]) -> None:
    import httpx

    with serve_in_thread(create_app()) as server:
        httpx.post(f"{server.url}/movies", json={"title": "Up", "year": 2009, "genre": "Animation"})
        movies = httpx.get(f"{server.url}/movies").json()
        httpx.post(f"{server.url}/ratings", json={"movie_id": 1, "user_id": 7, "score": 5})
        response = httpx.get(f"{server.url}/recommendations/7")
        with pytest.raises(CheckFailed, match="still running"):
            check_first_server(movies, server)
    check_first_server(movies, server)
    check_cold_recommendations(response.json(), response.headers["X-Model-Version"])
    assert capsys.readouterr().out.count("\u2714") == 2
    with pytest.raises(CheckFailed, match="empty"):
        check_first_server([], server)
    with pytest.raises(CheckFailed, match=r"\.json\(\)"):
        check_first_server(response, server)
    with pytest.raises(CheckFailed, match="'none'"):
        check_cold_recommendations([1], "3")
    with pytest.raises(CheckFailed, match="id order"):
        check_cold_recommendations([3, 1], "none")


# -- the plots -----------------------------------------------------------------


def test_request_gantt_draws_one_labelled_panel_per_mode() -> None:
    requests = fake_requests()
    builds = {"fast_mode": [(0.2, 1.0)], "slow_mode": [(0.2, 1.2)]}
    fig = request_gantt(requests, builds, title="A finding")
    try:
        axes = fig.get_axes()
        assert len(axes) == 2
        assert axes[-1].get_xlabel().endswith("(s)")
        labels = [t.get_text() for t in axes[0].get_yticklabels()]
        assert labels == ["POST /rebuild", "client 1", "client 2"]
        assert axes[0].get_title(loc="left").startswith("fast_mode")
        assert fig.get_suptitle() == "A finding"
    finally:
        plt.close(fig)


def test_request_gantt_works_without_modes_or_builds() -> None:
    toy = pd.DataFrame({"client": ["A", "B"], "start": [0.0, 0.0], "end": [0.4, 0.4]})
    fig = request_gantt(toy)
    try:
        assert len(fig.get_axes()) == 1
    finally:
        plt.close(fig)
    with pytest.raises(ValueError, match="client, start and end"):
        request_gantt(toy.drop(columns="end"))
