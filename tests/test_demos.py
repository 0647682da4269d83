"""Unit tests for classroom.demos and classroom.loadgen: demo apps, build log, load generator."""

from __future__ import annotations

import threading
import time
from typing import Any

import pandas as pd
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from labsupport.classroom import demos, loadgen
from labsupport.data import demo_ratings
from labsupport.server import serve_in_thread


@pytest.fixture(scope="module")
def ratings() -> Any:
    return demo_ratings(n_users=30, seed=0)


def test_unknown_mode_and_misplaced_task_are_refused(ratings: Any) -> None:
    with pytest.raises(ValueError, match="choose one of blocking, async_task"):
        demos.make_demo_app("threads", ratings)
    with pytest.raises(ValueError, match="task= replaces"):
        demos.make_demo_app("blocking", ratings, task=lambda build: build())


@pytest.mark.parametrize("mode", ["async_task", "sync_task"])
def test_background_modes_answer_202_then_build(ratings: Any, mode: str) -> None:
    app = demos.make_demo_app(mode, ratings, rank=4)
    with TestClient(app) as client:  # TestClient runs background tasks before returning
        assert client.get("/recommendations/1").json() == []
        response = client.post("/rebuild")
        assert response.status_code == 202
        assert response.json() == {"status": "queued"}
        assert len(client.get("/recommendations/1").json()) == 5
    assert len(app.state.builds.windows()) == 1


def test_blocking_mode_builds_inside_the_request(ratings: Any) -> None:
    app = demos.make_demo_app("blocking", ratings, rank=4)
    with TestClient(app) as client:
        assert len(client.get("/recommendations/1?limit=3").json()) == 3  # built on the miss
        assert client.post("/rebuild").json() == {"status": "complete"}
        assert client.get("/ping").json() == {"pong": True}
    assert len(app.state.builds.windows()) == 2


def test_a_custom_task_receives_the_build_function(ratings: Any) -> None:
    calls: list[str] = []

    def task(build: Any) -> None:
        calls.append("called")
        build()

    app = demos.make_demo_app("sync_task", ratings, rank=4, task=task)
    with TestClient(app) as client:
        assert client.post("/rebuild").status_code == 202
    assert calls == ["called"]
    assert app.state.model is not None


def test_build_log_windows_settled_and_wait() -> None:
    log = demos.BuildLog()
    assert not log.running
    assert not log.settled()
    number = log.start()
    assert log.running
    assert not log.wait(0.01)
    threading.Timer(0.05, log.finish, args=(number,)).start()
    assert log.wait(5.0)
    assert log.settled()
    assert not log.settled(quiet=60.0)
    (start, end), *_ = log.windows(origin=0.0)
    assert 0 < start < end


def ping_app() -> FastAPI:
    app = FastAPI()

    @app.get("/ping")
    async def ping() -> dict[str, bool]:
        return {"pong": True}

    @app.post("/poke")
    async def poke() -> dict[str, bool]:
        return {"poked": True}

    return app


def test_record_requests_is_bounded_by_count_and_labels_rows() -> None:
    with serve_in_thread(ping_app()) as server:
        frame = loadgen.record_requests(
            server.url, n_clients=2, duration=5.0, n_requests=4, interval=0.0, during="/poke"
        )
    assert list(frame.columns) == list(loadgen.COLUMNS)
    counts = frame["client"].value_counts().to_dict()
    assert counts == {"client 1": 4, "client 2": 4, "POST /poke": 1}
    assert (frame["status"] == 200).all()
    assert (frame["end"] >= frame["start"]).all()
    assert frame["start"].is_monotonic_increasing
    assert isinstance(frame.attrs["origin"], float)


def test_record_requests_is_bounded_in_time_and_keeps_failures() -> None:
    with serve_in_thread(ping_app()) as server:
        url = server.url
    started = time.perf_counter()
    frame = loadgen.record_requests(  # the server is gone: every request fails fast
        url, n_clients=1, duration=0.2, interval=0.02, until=lambda: False, max_duration=0.6
    )
    assert time.perf_counter() - started < 3.0
    assert len(frame) >= 1
    assert (frame["status"] == 0).all()


def test_record_requests_rejects_bad_bounds() -> None:
    with pytest.raises(ValueError, match="at least one client"):
        loadgen.record_requests("http://127.0.0.1:9", n_clients=0)
    with pytest.raises(ValueError, match="duration"):
        loadgen.record_requests("http://127.0.0.1:9", duration=5.0, max_duration=1.0)


def make_run(ping_latencies: list[float], post: float, build: tuple[float, float]) -> demos.DemoRun:
    rows = [
        ("m", f"client {i % 3 + 1}", "/ping", build[0] + 0.01 * i, build[0] + 0.01 * i + lat, lat)
        for i, lat in enumerate(ping_latencies)
    ]
    rows.append(("m", "POST /rebuild", "/rebuild", build[0] - 0.01, build[0] - 0.01 + post, post))
    columns = ["mode", "client", "path", "start", "end", "latency"]
    return demos.DemoRun("m", pd.DataFrame(rows, columns=columns).assign(status=200), [build])


def test_verdict_thresholds_are_relative_to_the_build() -> None:
    frozen = make_run([0.95, 0.9, 0.92], post=0.01, build=(1.0, 2.0))
    assert frozen.verdicts() == {"post_waited": False, "ping_waited": True, "kept_flowing": False}
    flowing = make_run([0.01] * 30 + [0.3], post=0.01, build=(1.0, 2.0))
    assert flowing.verdicts() == {"post_waited": False, "ping_waited": False, "kept_flowing": True}
    inline = make_run([1.0], post=1.0, build=(1.0, 2.0))
    assert inline.verdicts()["post_waited"]
    assert flowing.summary()["requests_during_build"] == 31
    assert flowing.build_seconds == pytest.approx(1.0)


def test_no_overlapping_request_means_not_flowing() -> None:
    run = make_run([], post=0.01, build=(1.0, 2.0))
    assert run.verdicts()["kept_flowing"] is False
