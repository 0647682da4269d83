"""Notebook 04 (retries and backoff): its key results, its self-checks and its figures.

The key results are recomputed through the package with the notebook's own
parameters: fake clocks instead of sleeping, and the API in process through
``TestClient`` (the failure injection draws one number per request, exactly as
over a real socket).
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import matplotlib
import pytest
from fastapi.testclient import TestClient

from labsupport import api, data, retry, store, tasks
from labsupport.classroom import contention
from labsupport.classroom.checks import CheckFailed
from labsupport.classroom.checks import retry as checks
from labsupport.classroom.plots import backoff as plots
from labsupport.classroom.workbook import notebook_parameters

matplotlib.use("Agg")
import matplotlib.pyplot as plt

NOTEBOOK = Path(__file__).parent.parent / "notebooks" / "04_retries_and_backoff.ipynb"
P = notebook_parameters(NOTEBOOK)
REQUEST = httpx.Request("GET", "http://movies.test/recommender/rebuild/task-1")


class FakeTime:
    """A clock that only moves when someone sleeps (or a call costs time)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Scripted:
    """The notebook's fake: prepared statuses in order, the last one repeating."""

    def __init__(self, *statuses: int, headers: dict[str, str] | None = None) -> None:
        self.statuses = statuses
        self.headers = headers or {}
        self.calls = 0

    def __call__(self) -> httpx.Response:
        status = self.statuses[min(self.calls, len(self.statuses) - 1)]
        self.calls += 1
        return httpx.Response(status, headers=self.headers, request=REQUEST)


def seed_with_backoff(
    func: Callable[[], httpx.Response],
    *,
    retries: int = 5,
    backoff_factor: float = 0.5,
    jitter: float = 0.2,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> httpx.Response:
    """The lesson's helper as the notebook shows it (sleep and rng injected, no print)."""
    rng = rng or random.Random()
    for attempt in range(retries):
        try:
            response = func()
            response.raise_for_status()
            return response
        except httpx.HTTPError:
            sleep(backoff_factor * (2**attempt) + rng.uniform(0, jitter))
    return func()


def demo_store() -> store.MemoryStore:
    movies = store.MemoryStore()
    movies.add_movies(data.CATALOGUE)
    movies.add_ratings(data.demo_ratings(n_users=P["N_USERS"], seed=P["SEED"]))
    return movies


@pytest.fixture
def closing_figures() -> Iterator[None]:
    yield
    plt.close("all")


# --- key results: the helpers on scripted answers ------------------------------------------


def test_parameters_are_the_ones_the_text_describes() -> None:
    assert P["SEED"] == 0
    assert P["RETRIES"] == 5
    assert P["FAILURE_RATE"] == 0.5
    assert P["N_CLIENTS"] == [5, 10, 25, 50, 100]


def test_seed_helper_makes_retries_plus_one_calls_and_returns_the_last_error() -> None:
    for status in (503, 404):
        script, fake = Scripted(status), FakeTime()
        response = seed_with_backoff(
            script, retries=P["RETRIES"], sleep=fake.sleep, rng=random.Random(P["SEED"])
        )
        assert script.calls == P["RETRIES"] + 1
        assert response.status_code == status  # returned, never raised
        assert len(fake.sleeps) == P["RETRIES"]


def test_with_backoff_attempt_counts_at_the_notebook_seed() -> None:
    not_found = Scripted(404)
    with pytest.raises(httpx.HTTPStatusError):
        retry.with_backoff(not_found, retries=P["RETRIES"], sleep=FakeTime().sleep)
    assert not_found.calls == 1

    two_503s, fake = Scripted(503, 503, 200), FakeTime()
    response = retry.with_backoff(
        two_503s, retries=P["RETRIES"], sleep=fake.sleep, rng=random.Random(P["SEED"])
    )
    assert (response.status_code, two_503s.calls) == (200, 3)
    expected = retry.backoff_schedule("seed", attempts=2, rng=random.Random(P["SEED"]))
    assert fake.sleeps == pytest.approx(expected)
    assert [round(s, 2) for s in fake.sleeps] == [0.67, 1.15]  # quoted in the notebook

    always, fake = Scripted(503), FakeTime()
    with pytest.raises(httpx.HTTPStatusError) as info:
        retry.with_backoff(always, retries=P["RETRIES"], sleep=fake.sleep)
    assert info.value.response.status_code == 503
    assert always.calls == P["RETRIES"] + 1


def test_retry_after_sets_the_floor_and_max_delay_the_ceiling() -> None:
    for header, options, expected in [
        ("3", {}, [3.0, 3.0]),
        ("120", {"max_delay": 30.0}, [30.0, 30.0]),
    ]:
        fake = FakeTime()
        retry.with_backoff(
            Scripted(503, 503, 200, headers={"Retry-After": header}),
            sleep=fake.sleep,
            clock=fake.clock,
            rng=random.Random(P["SEED"]),
            **options,
        )
        assert fake.sleeps == expected
    assert retry.parse_retry_after("Mon, 29 Dec 2025 09:21:30 GMT", now=1_767_000_000) == 90.0


def test_hammer_verdict_counts_do_not_depend_on_the_machine() -> None:
    # Calls that cost no time: the backing-off clients' counts are what the notebook prints.
    counts = {}
    for name, options in {
        "backoff": {"respect_retry_after": False},
        "Retry-After": {},
    }.items():
        records: list[retry.Attempt] = []
        fake = FakeTime()
        with contextlib.suppress(httpx.HTTPStatusError):
            retry.with_backoff(
                Scripted(503, headers={"Retry-After": "1"}),
                retries=100_000,
                backoff_factor=0.2,
                jitter=0.0,
                deadline=P["HAMMER_WINDOW"],
                sleep=fake.sleep,
                clock=fake.clock,
                on_attempt=records.append,
                **options,
            )
        counts[name] = len(records)
    assert counts == {"backoff": 2, "Retry-After": 1}


# --- key results: the flaky server, in process ---------------------------------------------


def fetch_statuses(
    client: TestClient, movie_ids: range, rng: random.Random, **options: Any
) -> list[list[int | None]]:
    runs = []
    for movie_id in movie_ids:
        records: list[retry.Attempt] = []
        with contextlib.suppress(Exception):  # httpx2.HTTPStatusError: TestClient uses httpx2
            retry.with_backoff(
                lambda m=movie_id: client.get(f"/movies/{m}"),
                rng=rng,
                sleep=FakeTime().sleep,
                on_attempt=records.append,
                **options,
            )
        runs.append([r.status for r in records])
    return runs


def test_the_flaky_server_fails_the_same_requests_every_run() -> None:
    app = api.create_app(demo_store(), failure_rate=P["FAILURE_RATE"], seed=P["SEED"])
    quick = {"retries": 3, "backoff_factor": 0.1, "jitter": 0.05, "respect_retry_after": False}
    with TestClient(app) as client:
        assert client.get("/health").status_code == 200  # exempt: draws nothing
        rng = random.Random(P["SEED"])
        run_a = fetch_statuses(client, range(1, 7), rng, **quick)
        run_b = fetch_statuses(client, range(1, 4), rng, retries=2, backoff_factor=0.1, jitter=0.05)
    assert run_a == [[200], [200], [503, 503, 200], [503, 200], [503, 503, 200], [200]]
    assert run_b == [[200], [503, 200], [200]]


# --- key results: contention ---------------------------------------------------------------


def test_contention_jitter_beats_no_jitter() -> None:
    results = {
        (name, n): contention.contention_simulation(
            n, name, base=P["BACKOFF_FACTOR"], seed=P["SEED"]
        )
        for name in retry.STRATEGIES
        for n in P["N_CLIENTS"]
    }
    for n in P["N_CLIENTS"]:
        none = results["none", n]
        assert none["total_calls"] == n * (n + 1) // 2
        for name in ("full", "equal", "decorrelated"):
            assert results[name, n]["total_calls"] < none["total_calls"]
            assert results[name, n]["completion_time"] < none["completion_time"]
    largest = max(P["N_CLIENTS"])
    by_calls = sorted(retry.STRATEGIES, key=lambda s: results[s, largest]["total_calls"])
    by_time = sorted(retry.STRATEGIES, key=lambda s: results[s, largest]["completion_time"])
    assert by_calls == ["decorrelated", "full", "equal", "seed", "none"]
    assert by_time == ["full", "equal", "decorrelated", "seed", "none"]


# --- key results: idempotency ----------------------------------------------------------------


def test_idempotent_replay_returns_the_same_task() -> None:
    app = api.create_app(demo_store(), task_id_factory=tasks.counter_ids())
    service = app.state.service
    with TestClient(app) as client:

        def rebuild(headers: dict[str, str]) -> str:
            response = client.post("/recommender/rebuild", headers=headers)
            assert response.status_code == 202
            return str(response.json()["task_id"])

        key = {"Idempotency-Key": "lab2-rebuild-0001"}
        assert rebuild(key) == rebuild(key) == "task-1"
        service.wait("task-1", timeout=10)
        assert rebuild(key) == "task-1"
        assert client.get("/recommender/rebuild/task-1").json()["status"] == "complete"
        x_task = {"X-Task-Id": "lab2-x-task-id-demo"}
        assert rebuild(x_task) == rebuild(x_task) == "task-2"
        service.wait("task-2", timeout=10)
        assert rebuild({}) == "task-3"  # no key, nothing queued: a new task


def test_poll_task_retries_503s_under_the_hood() -> None:
    answers = [
        httpx.Response(200, json={"status": "queued"}, request=REQUEST),
        httpx.Response(503, request=REQUEST),
        httpx.Response(200, json={"status": "running"}, request=REQUEST),
        httpx.Response(503, request=REQUEST),
        httpx.Response(503, request=REQUEST),
        httpx.Response(200, json={"status": "complete", "task_id": "task-42"}, request=REQUEST),
    ]
    calls = iter(answers)
    fake = FakeTime()
    final = retry.poll_task(
        lambda: next(calls),
        interval=0.2,
        sleep=fake.sleep,
        clock=fake.clock,
        rng=random.Random(P["SEED"]),
    )
    assert final == {"status": "complete", "task_id": "task-42"}
    assert [round(s, 2) for s in fake.sleeps] == [0.2, 0.67, 0.2, 0.65, 1.08]


# --- the self-checks -------------------------------------------------------------------------


def good_should_retry(status: int) -> bool:
    return status in {408, 429, 500, 502, 503, 504}


def good_full_jitter(n: int, *, base: float, cap: float, rng: random.Random) -> float:
    return rng.uniform(0, min(cap, base * 2**n))


def good_fixed(
    func: Callable[[], httpx.Response],
    *,
    retries: int = 5,
    backoff_factor: float = 0.5,
    jitter: float = 0.2,
    sleep: Callable[[float], None] = time.sleep,
    rng: Any = random,
) -> httpx.Response:
    for attempt in range(retries + 1):
        try:
            return func().raise_for_status()
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code not in {408, 429, 500, 502, 503, 504} or attempt == retries:
                raise
        except httpx.TransportError:
            if attempt == retries:
                raise
        sleep(backoff_factor * 2**attempt + rng.uniform(0, jitter))
    raise AssertionError("unreachable")


def test_right_answers_pass(capsys: pytest.CaptureFixture[str]) -> None:
    checks.check_should_retry(good_should_retry)
    checks.check_full_jitter(good_full_jitter)
    checks.check_fixed_helper(good_fixed)
    checks.check_fixed_helper(retry.with_backoff)  # the package's helper is a right answer
    checks.check_deadline(retry.with_backoff)
    out = capsys.readouterr().out
    assert out.count("\u2714") == 5


def test_the_status_table_agrees_with_the_package() -> None:
    for status, (expected, _) in checks.STATUS_TABLE.items():
        assert retry.is_retryable(httpx.Response(status)) is expected, status


@pytest.mark.parametrize(
    ("answer", "hint"),
    [
        (lambda s: s >= 500, "408 Request Timeout should be retried"),
        (lambda s: s >= 400, "400 Bad Request should not be retried"),
        (lambda s: None, "return True or False"),
    ],
)
def test_wrong_should_retry_gets_a_hint(answer: Callable[[int], Any], hint: str) -> None:
    with pytest.raises(CheckFailed, match=hint):
        checks.check_should_retry(answer)


@pytest.mark.parametrize(
    ("answer", "hint"),
    [
        (
            lambda n, *, base, cap, rng: rng.uniform(0, base * 2**n),
            "check the exponent and the cap",
        ),
        (
            lambda n, *, base, cap, rng: random.uniform(0, min(cap, base * 2**n)),
            "rng you are given",
        ),
        (
            lambda n, *, base, cap, rng: min(cap, base * 2**n) * (0.5 + rng.random() / 2),
            "whole range, starting at 0",
        ),
        (lambda n, *, base, cap, rng: None, "returned None: return the delay"),
    ],
)
def test_wrong_full_jitter_gets_a_hint(answer: Callable[..., float], hint: str) -> None:
    with pytest.raises(CheckFailed, match=hint):
        checks.check_full_jitter(answer)


def test_the_lessons_helper_fails_the_fixed_helper_check() -> None:
    with pytest.raises(CheckFailed, match="raise at once"):
        checks.check_fixed_helper(seed_with_backoff)


def test_a_helper_that_ignores_transport_errors_gets_a_hint() -> None:
    def status_errors_only(func: Callable[[], httpx.Response], **options: Any) -> Any:
        options.pop("rng")
        sleep = options.pop("sleep")
        for attempt in range(options["retries"] + 1):
            try:
                return func().raise_for_status()
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code < 500 or attempt == options["retries"]:
                    raise
            sleep(0.01)
        return None

    with pytest.raises(CheckFailed, match="ConnectError"):
        checks.check_fixed_helper(status_errors_only)


def test_a_deadline_that_ignores_call_time_gets_a_hint() -> None:
    def sums_sleeps(func: Callable[[], httpx.Response], **options: Any) -> Any:
        slept, deadline, sleep = 0.0, options["deadline"], options["sleep"]
        for attempt in range(options["retries"] + 1):
            try:
                return func().raise_for_status()
            except httpx.HTTPStatusError:
                delay = options["backoff_factor"] * 2**attempt
                if attempt == options["retries"] or (
                    deadline is not None and slept + delay > deadline
                ):
                    raise
            sleep(delay)
            slept += delay
        return None

    with pytest.raises(CheckFailed, match="past the deadline"):
        checks.check_deadline(sums_sleeps)


def test_a_missing_answer_fails_clearly() -> None:
    with pytest.raises(CheckFailed, match="NameError"):
        checks.check_fixed_helper(lambda func, **options: undefined_name)  # type: ignore[name-defined]  # noqa: F821


# --- the figures -----------------------------------------------------------------------------


def test_schedule_spread_is_seeded_and_ordered() -> None:
    spread = plots.schedule_spread("full", attempts=6, draws=P["N_DRAWS"], seed=P["SEED"])
    assert spread == plots.schedule_spread("full", attempts=6, draws=P["N_DRAWS"], seed=P["SEED"])
    for low, mid, high in zip(spread["p5"], spread["median"], spread["p95"], strict=True):
        assert 0 <= low <= mid <= high
    flat = plots.schedule_spread("none", attempts=3, draws=5)
    assert flat["p5"] == flat["p95"] == [0.5, 1.0, 2.0]
    with pytest.raises(ValueError, match="draws"):
        plots.schedule_spread("full", draws=0)


def test_schedules_figure(closing_figures: None) -> None:
    fig = plots.schedules(draws=20, seed=P["SEED"])
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 4
    assert all(ax.get_yscale() == "log" for ax in visible)
    assert visible[0].get_ylabel() == "delay before retry (s)"
    assert visible[-1].get_xlabel() == "retry number"
    assert "Jitter" in fig.get_suptitle()
    three = plots.schedules(["none", "full", "equal"], draws=5)
    assert sum(ax.get_visible() for ax in three.axes) == 3
    with pytest.raises(ValueError, match="strategies is empty"):
        plots.schedules([])


def attempt(number: int, started: float, status: int, delay: float | None) -> retry.Attempt:
    return retry.Attempt(
        number=number,
        started=started,
        elapsed=0.01,
        status=status,
        error=None if status < 400 else f"HTTP {status}",
        delay=delay,
        will_retry=delay is not None,
    )


def test_gaps_pair_plans_with_measured_pauses() -> None:
    run = [attempt(1, 0.0, 503, 0.1), attempt(2, 0.115, 503, 0.2), attempt(3, 0.33, 200, None)]
    pairs = plots.gaps(run)
    assert [p for p, _ in pairs] == [0.1, 0.2]
    assert [m for _, m in pairs] == pytest.approx([0.105, 0.205])
    assert plots.gaps(run[-1:]) == []


def test_attempt_timings_figure(closing_figures: None) -> None:
    runs = {
        "A": [attempt(1, 0.0, 503, 0.1), attempt(2, 0.112, 200, None)],
        "B": [attempt(1, 0.0, 200, None)],
    }
    fig = plots.attempt_timings(runs)
    timeline, scatter = fig.axes
    assert timeline.get_xlabel() == "time since the run's first call (s)"
    assert [t.get_text() for t in timeline.get_yticklabels()] == ["A", "B"]
    assert scatter.get_xlabel() == "planned delay (s)"
    assert scatter.get_ylabel() == "measured pause (s)"
    no_retry = plots.attempt_timings({"B": [attempt(1, 0.0, 200, None)]})
    assert no_retry.axes[1].get_title() == "No retries, so no pauses"
    with pytest.raises(ValueError, match="runs is empty"):
        plots.attempt_timings({})


def test_contention_figure(closing_figures: None) -> None:
    results = [
        contention.contention_simulation(n, name, seed=P["SEED"])
        for name in ("none", "full")
        for n in (5, 10)
    ]
    fig = plots.contention(results)
    calls_ax, time_ax = fig.axes
    assert calls_ax.get_ylabel() == "calls by all clients"
    assert time_ax.get_ylabel() == "time until the last client succeeds (s)"
    assert calls_ax.get_xlabel() == time_ax.get_xlabel() == "clients contending at once"
    assert fig.get_suptitle() == "10 clients: 'full' makes the fewest calls, 'full' finishes first"
    with pytest.raises(ValueError, match="results is empty"):
        plots.contention([])
