"""Unit tests for labsupport.retry: fake time, scripted responses, no network."""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Iterable
from email.utils import formatdate
from typing import Any

import httpx
import pytest

from labsupport import retry
from labsupport.classroom.contention import contention_simulation
from labsupport.retry import (
    STRATEGIES,
    Attempt,
    TaskFailedError,
    backoff_schedule,
    is_retryable,
    parse_retry_after,
    poll_task,
    with_backoff,
)

URL = "http://t/x"
REQUEST = httpx.Request("GET", URL)


def resp(status: int, *, json: Any = None, **headers: str) -> httpx.Response:
    """A response as the client would return it (headers given as Retry_After=...)."""
    return httpx.Response(
        status,
        request=REQUEST,
        json=json,
        headers={name.replace("_", "-"): value for name, value in headers.items()},
    )


class FakeTime:
    """A clock that only moves when something sleeps (or a call costs time)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


class Script:
    """A zero-argument function returning (or raising) scripted outcomes in order."""

    def __init__(
        self,
        outcomes: Iterable[httpx.Response | BaseException],
        *,
        fake: FakeTime | None = None,
        cost: float = 0.0,
    ) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0
        self.fake = fake
        self.cost = cost

    def __call__(self) -> httpx.Response:
        if self.calls >= len(self.outcomes):
            raise AssertionError(f"unexpected extra call #{self.calls + 1}")
        outcome = self.outcomes[self.calls]
        self.calls += 1
        if self.fake is not None:
            self.fake.now += self.cost
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


@pytest.fixture
def fake() -> FakeTime:
    return FakeTime()


def run(script: Script, fake: FakeTime, **kwargs: Any) -> httpx.Response:
    kwargs.setdefault("rng", random.Random(0))
    return with_backoff(script, sleep=fake.sleep, clock=fake.clock, **kwargs)


def connect_error() -> httpx.ConnectError:
    return httpx.ConnectError("connection refused", request=REQUEST)


# --- with_backoff: what is retried ------------------------------------------------


def test_success_first_try_makes_one_call_and_never_sleeps(fake: FakeTime) -> None:
    ok = resp(200)
    script = Script([ok])
    assert run(script, fake) is ok
    assert script.calls == 1
    assert fake.sleeps == []


def test_redirect_status_is_returned_not_raised(fake: FakeTime) -> None:
    script = Script([resp(304)])
    assert run(script, fake).status_code == 304
    assert script.calls == 1


def test_two_503s_then_200_sleeps_the_seed_formula(fake: FakeTime) -> None:
    script = Script([resp(503), resp(503), resp(200)])
    result = run(script, fake, retries=5, backoff_factor=0.5, jitter=0.2, rng=random.Random(7))
    assert result.status_code == 200
    assert script.calls == 3
    draws = random.Random(7)
    expected = [0.5 * 2**0 + draws.uniform(0, 0.2), 0.5 * 2**1 + draws.uniform(0, 0.2)]
    assert fake.sleeps == pytest.approx(expected)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
def test_client_errors_raise_at_once(fake: FakeTime, status: int) -> None:
    script = Script([resp(status), resp(200)])
    with pytest.raises(httpx.HTTPStatusError) as info:
        run(script, fake)
    assert info.value.response.status_code == status
    assert script.calls == 1
    assert fake.sleeps == []


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_transient_statuses_are_retried(fake: FakeTime, status: int) -> None:
    script = Script([resp(status), resp(200)])
    assert run(script, fake).status_code == 200
    assert script.calls == 2
    assert len(fake.sleeps) == 1


def test_501_is_not_in_the_default_retry_list(fake: FakeTime) -> None:
    script = Script([resp(501)])
    with pytest.raises(httpx.HTTPStatusError):
        run(script, fake)
    assert script.calls == 1


def test_retry_on_status_is_configurable(fake: FakeTime) -> None:
    script = Script([resp(409), resp(201)])
    assert run(script, fake, retry_on_status={409}).status_code == 201


@pytest.mark.parametrize("retries", [0, 1, 3, 5])
def test_exhausted_retries_raise_the_last_error_after_retries_plus_one_calls(
    fake: FakeTime, retries: int
) -> None:
    responses = [resp(503) for _ in range(retries + 1)]
    script = Script(responses)  # one more call would fail the test
    with pytest.raises(httpx.HTTPStatusError) as info:
        run(script, fake, retries=retries)
    assert info.value.response is responses[-1]
    assert script.calls == retries + 1
    assert len(fake.sleeps) == retries


def test_transport_errors_are_retried(fake: FakeTime) -> None:
    script = Script([connect_error(), httpx.ReadTimeout("slow", request=REQUEST), resp(200)])
    assert run(script, fake).status_code == 200
    assert script.calls == 3


def test_last_transport_error_is_reraised(fake: FakeTime) -> None:
    errors = [connect_error() for _ in range(3)]
    script = Script(errors)
    with pytest.raises(httpx.ConnectError) as info:
        run(script, fake, retries=2)
    assert info.value is errors[-1]
    assert script.calls == 3
    assert len(fake.sleeps) == 2


def test_other_exceptions_propagate_without_retry(fake: FakeTime) -> None:
    script = Script([ValueError("bug in the caller"), resp(200)])
    with pytest.raises(ValueError, match="bug in the caller"):
        run(script, fake)
    assert script.calls == 1


def test_http_status_error_raised_by_func_is_classified_by_status(fake: FakeTime) -> None:
    def raising(status: int, **headers: str) -> httpx.HTTPStatusError:
        response = resp(status, **headers)
        return httpx.HTTPStatusError("boom", request=REQUEST, response=response)

    script = Script([raising(503, Retry_After="4"), resp(200)])
    assert run(script, fake).status_code == 200
    assert fake.sleeps == [4.0]
    script = Script([raising(404)])
    with pytest.raises(httpx.HTTPStatusError):
        run(script, fake)
    assert script.calls == 1


@pytest.mark.parametrize(
    ("method", "headers", "idempotent", "calls"),
    [
        ("POST", {}, None, 1),  # a second plain POST could start a second rebuild
        ("POST", {"Idempotency-Key": "k-1"}, None, 2),
        ("PATCH", {"x-task-id": "t-1"}, None, 2),  # header names ignore case
        ("DELETE", {}, None, 2),
        ("POST", {}, True, 2),  # the caller vouches for it
        ("GET", {}, False, 1),  # the caller forbids retries
    ],
)
def test_only_requests_safe_to_repeat_are_retried(
    fake: FakeTime, method: str, headers: dict[str, str], idempotent: bool | None, calls: int
) -> None:
    request = httpx.Request(method, URL, headers=headers)
    failure = httpx.Response(503, request=request)
    script = Script([failure, httpx.Response(200, request=request)])
    seen: list[Attempt] = []
    if calls == 1:
        with pytest.raises(httpx.HTTPStatusError) as info:
            run(script, fake, idempotent=idempotent, on_attempt=seen.append)
        assert info.value.response is failure
    else:
        assert run(script, fake, idempotent=idempotent, on_attempt=seen.append).status_code == 200
    assert script.calls == calls
    assert len(fake.sleeps) == calls - 1
    assert seen[0].will_retry is (calls == 2)


def test_httpx2_responses_raise_httpx2_errors(fake: FakeTime) -> None:
    httpx2 = pytest.importorskip("httpx2")
    request = httpx2.Request("GET", URL)
    script = [httpx2.Response(503, request=request), httpx2.Response(404, request=request)]
    calls = iter(script)
    with pytest.raises(httpx2.HTTPStatusError) as info:
        with_backoff(lambda: next(calls), sleep=fake.sleep, clock=fake.clock)
    assert info.value.response.status_code == 404
    assert len(fake.sleeps) == 1


def test_seed_call_works_unchanged_with_a_real_client() -> None:
    answers = iter([503, 200])

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(next(answers), json={"ok": True})

    fake = FakeTime()
    with httpx.Client(transport=httpx.MockTransport(handler), base_url="http://t") as client:
        result = with_backoff(
            lambda: client.get("/x"),
            retries=5,
            backoff_factor=0.5,
            jitter=0.2,
            sleep=fake.sleep,
        )
        assert result.json() == {"ok": True}
        assert len(fake.sleeps) == 1
        # The seed's exact call, which succeeds first time and so never sleeps.
        answers = iter([200])
        seed = with_backoff(lambda: client.get("/x"), retries=5, backoff_factor=0.5, jitter=0.2)
        assert seed.json() == {"ok": True}


# --- Retry-After and the deadline ------------------------------------------------


def test_retry_after_seconds_is_honoured(fake: FakeTime) -> None:
    script = Script([resp(503, Retry_After="7"), resp(200)])
    run(script, fake)
    assert fake.sleeps == [7.0]


def test_retry_after_never_shortens_the_backoff(fake: FakeTime) -> None:
    script = Script([resp(429, Retry_After="0"), resp(200)])
    run(script, fake, strategy="none", backoff_factor=2.0)
    assert fake.sleeps == [2.0]


def test_retry_after_is_capped_by_max_delay(fake: FakeTime) -> None:
    script = Script([resp(503, Retry_After="120"), resp(200)])
    run(script, fake, max_delay=10.0)
    assert fake.sleeps == [10.0]


def test_retry_after_can_be_ignored(fake: FakeTime) -> None:
    script = Script([resp(503, Retry_After="7"), resp(200)])
    run(script, fake, respect_retry_after=False, strategy="none")
    assert fake.sleeps == [0.5]


def test_retry_after_http_date_is_honoured(fake: FakeTime) -> None:
    # HTTP dates are wall-clock times with one-second resolution.
    when = formatdate(time.time() + 60, usegmt=True)
    script = Script([resp(503, Retry_After=when), resp(200)])
    run(script, fake, max_delay=120.0)
    assert 58.0 <= fake.sleeps[0] <= 60.0


def test_deadline_stops_before_a_sleep_would_cross_it(fake: FakeTime) -> None:
    start = fake.now
    script = Script([resp(503)] * 6)
    with pytest.raises(httpx.HTTPStatusError):
        run(script, fake, strategy="none", deadline=2.0)
    # Sleeps 0.5 and 1.0 end at t = 1.5; the next (2.0) would end at 3.5.
    assert fake.sleeps == [0.5, 1.0]
    assert script.calls == 3
    assert fake.now - start <= 2.0


def test_deadline_counts_the_time_calls_take(fake: FakeTime) -> None:
    start = fake.now
    script = Script([resp(503)] * 6, fake=fake, cost=0.4)
    with pytest.raises(httpx.HTTPStatusError):
        run(script, fake, strategy="none", deadline=2.0)
    # Calls end at 0.4 and 1.3 (0.4 + 0.5 + 0.4); then 1.3 + 1.0 > 2.0.
    assert fake.sleeps == [0.5]
    assert script.calls == 2
    assert fake.now - start == pytest.approx(1.3)


def test_deadline_wins_over_retry_after(fake: FakeTime) -> None:
    script = Script([resp(503, Retry_After="10"), resp(200)])
    with pytest.raises(httpx.HTTPStatusError):
        run(script, fake, deadline=5.0)
    assert script.calls == 1
    assert fake.sleeps == []


@pytest.mark.parametrize("seed", range(5))
def test_never_sleeps_past_the_deadline(seed: int) -> None:
    fake = FakeTime()
    start = fake.now
    script = Script([connect_error() for _ in range(20)], fake=fake, cost=0.05)
    with pytest.raises(httpx.ConnectError):
        run(script, fake, retries=19, strategy="full", deadline=3.0, rng=random.Random(seed))
    assert script.calls > 2
    assert fake.now - start <= 3.0 + 0.05  # the last call may start just before it


# --- reporting -------------------------------------------------------------------


def test_on_attempt_receives_one_record_per_call(fake: FakeTime) -> None:
    seen: list[Attempt] = []
    script = Script([resp(503), connect_error(), resp(200)], fake=fake, cost=0.1)
    run(script, fake, strategy="none", on_attempt=seen.append)
    assert [a.number for a in seen] == [1, 2, 3]
    assert [a.started for a in seen] == pytest.approx([0.0, 0.6, 1.7])
    assert [a.elapsed for a in seen] == pytest.approx([0.1, 0.1, 0.1])
    assert [a.status for a in seen] == [503, None, 200]
    assert seen[0].error is not None and seen[0].error.startswith("HTTP 503")
    assert seen[1].error == "ConnectError: connection refused"
    assert seen[2].error is None
    assert [a.delay for a in seen] == [0.5, 1.0, None]
    assert [a.will_retry for a in seen] == [True, True, False]
    with pytest.raises(dataclasses.FrozenInstanceError):
        seen[0].number = 9  # type: ignore[misc]


def test_on_attempt_marks_the_final_failure(fake: FakeTime) -> None:
    seen: list[Attempt] = []
    with pytest.raises(httpx.HTTPStatusError):
        run(Script([resp(503), resp(404)]), fake, on_attempt=seen.append)
    assert [(a.status, a.will_retry, a.delay is None) for a in seen] == [
        (503, True, False),
        (404, False, True),
    ]


def test_attempts_are_logged_not_printed(
    fake: FakeTime, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG, logger="labsupport.retry")
    with pytest.raises(httpx.HTTPStatusError):
        run(Script([resp(503)] * 3), fake, retries=2)
    records = [r for r in caplog.records if r.name == "labsupport.retry"]
    assert [r.levelno for r in records] == [logging.INFO, logging.INFO, logging.WARNING]
    assert "retrying in" in records[0].getMessage()
    assert "503" in records[0].getMessage()
    assert "giving up" in records[-1].getMessage()
    assert capsys.readouterr().out == ""


def test_a_custom_logger_is_used(fake: FakeTime, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    run(Script([resp(503), resp(200)]), fake, logger=logging.getLogger("notebook"))
    assert [r.name for r in caplog.records] == ["notebook"]


def test_bad_arguments_fail_before_any_call(fake: FakeTime) -> None:
    script = Script([resp(200)])
    with pytest.raises(ValueError, match="choose one of seed, none, full"):
        run(script, fake, strategy="exponential")
    with pytest.raises(ValueError, match="retries"):
        run(script, fake, retries=-1)
    assert script.calls == 0


# --- schedules -------------------------------------------------------------------


def ceilings(attempts: int, base: float = 0.5, cap: float = 30.0) -> list[float]:
    return [min(cap, base * 2**n) for n in range(attempts)]


def test_schedule_none_is_exact_and_capped() -> None:
    assert backoff_schedule("none", attempts=8) == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert backoff_schedule("none", attempts=3, base=1.0, cap=3.0) == [1.0, 2.0, 3.0]
    assert backoff_schedule("none", attempts=0) == []


@pytest.mark.parametrize("seed", range(20))
def test_schedule_bounds(seed: int) -> None:
    n = 12
    t = ceilings(n)
    seed_s = backoff_schedule("seed", attempts=n, rng=random.Random(seed))
    assert all(ti <= d <= min(30.0, ti + 0.2) for ti, d in zip(t, seed_s, strict=True))
    full = backoff_schedule("full", attempts=n, rng=random.Random(seed))
    assert all(0.0 <= d <= ti for ti, d in zip(t, full, strict=True))
    equal = backoff_schedule("equal", attempts=n, rng=random.Random(seed))
    assert all(ti / 2 <= d <= ti for ti, d in zip(t, equal, strict=True))
    decorrelated = backoff_schedule("decorrelated", attempts=n, rng=random.Random(seed))
    previous = 0.5
    for d in decorrelated:
        assert 0.5 <= d <= min(30.0, 3 * previous)
        previous = d


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_schedules_are_capped_and_deterministic(strategy: str) -> None:
    first = backoff_schedule(strategy, attempts=40, rng=random.Random(3))
    assert all(0.0 <= d <= 30.0 for d in first)
    assert first == backoff_schedule(strategy, attempts=40, rng=random.Random(3))
    if strategy != "none":
        assert first != backoff_schedule(strategy, attempts=40, rng=random.Random(4))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_with_backoff_sleeps_the_schedule(fake: FakeTime, strategy: str) -> None:
    with pytest.raises(httpx.HTTPStatusError):
        run(Script([resp(500)] * 5), fake, retries=4, strategy=strategy, rng=random.Random(11))
    assert fake.sleeps == backoff_schedule(strategy, attempts=4, rng=random.Random(11))


def test_schedule_rejects_unknown_strategy_and_negatives() -> None:
    with pytest.raises(ValueError, match="decorrelated"):
        backoff_schedule("fibonacci", attempts=3)
    with pytest.raises(ValueError, match="cap"):
        backoff_schedule("none", attempts=3, cap=-1.0)


# --- classification and Retry-After parsing ------------------------------------------


def test_is_retryable() -> None:
    assert is_retryable(resp(503))
    assert not is_retryable(resp(404))
    assert is_retryable(resp(409), retry_on_status={409})
    assert is_retryable(connect_error())
    assert is_retryable(httpx.ReadTimeout("slow", request=REQUEST))
    assert is_retryable(httpx.RemoteProtocolError("dropped", request=REQUEST))
    assert not is_retryable(httpx.UnsupportedProtocol("ftp://", request=REQUEST))
    assert not is_retryable(ValueError("nope"))
    error_503 = httpx.HTTPStatusError("x", request=REQUEST, response=resp(503))
    error_404 = httpx.HTTPStatusError("x", request=REQUEST, response=resp(404))
    assert is_retryable(error_503)
    assert not is_retryable(error_404)


def test_is_retryable_knows_httpx2() -> None:
    httpx2 = pytest.importorskip("httpx2")
    request = httpx2.Request("GET", URL)
    assert is_retryable(httpx2.ConnectError("refused", request=request))
    assert is_retryable(httpx2.ReadTimeout("slow", request=request))
    assert is_retryable(httpx2.RemoteProtocolError("dropped", request=request))
    assert is_retryable(httpx2.Response(429, request=request))


@pytest.mark.parametrize(
    ("value", "expected"),
    [("120", 120.0), (" 3 ", 3.0), ("1.5", 1.5), ("0", 0.0), ("-1", None), ("inf", None),
     ("soon", None), ("", None), (None, None)],
)  # fmt: skip
def test_parse_retry_after_seconds(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after(formatdate(now + 90, usegmt=True), now=now) == 90.0
    assert parse_retry_after(formatdate(now - 90, usegmt=True), now=now) == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480.0) == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0


# --- poll_task -------------------------------------------------------------------


class ScriptedClient:
    """A fake client whose get(url) replays responses (or raises) in order."""

    def __init__(self, outcomes: Iterable[httpx.Response | BaseException]) -> None:
        self.script = Script(outcomes)
        self.urls: list[str] = []

    def get(self, url: str) -> httpx.Response:
        self.urls.append(url)
        return self.script()


def status(state: str, *, task_id: str = "t-1", **extra: Any) -> httpx.Response:
    headers = extra.pop("headers", {})
    return resp(200, json={"task_id": task_id, "status": state, **extra}, **headers)


def poll(client: Any, fake: FakeTime, **kwargs: Any) -> dict[str, Any]:
    return poll_task(
        client,
        "/recommender/rebuild/t-1",
        sleep=fake.sleep,
        clock=fake.clock,
        rng=random.Random(0),
        **kwargs,
    )


def test_poll_follows_queued_running_complete(fake: FakeTime) -> None:
    client = ScriptedClient(
        [status("queued"), status("running"), status("complete", sample=[1, 2, 3])]
    )
    seen: list[dict[str, Any]] = []
    final = poll(client, fake, on_status=seen.append)
    assert final == {"task_id": "t-1", "status": "complete", "sample": [1, 2, 3]}
    assert [s["status"] for s in seen] == ["queued", "running", "complete"]
    assert client.urls == ["/recommender/rebuild/t-1"] * 3
    assert fake.sleeps == [0.2, 0.2]


@pytest.mark.parametrize("state", ["failed", "interrupted"])
def test_poll_raises_task_failed(fake: FakeTime, state: str) -> None:
    client = ScriptedClient([status("running"), status(state, error="SVD did not converge")])
    with pytest.raises(TaskFailedError, match="SVD did not converge") as info:
        poll(client, fake)
    assert isinstance(info.value, RuntimeError)
    assert info.value.task_id == "t-1"
    assert info.value.status == state
    assert "t-1" in str(info.value)


def test_poll_times_out_with_a_helpful_message(fake: FakeTime) -> None:
    start = fake.now
    client = ScriptedClient([status("running")] * 5)
    with pytest.raises(TimeoutError) as info:
        poll(client, fake, timeout=1.0, interval=0.3)
    message = str(info.value)
    assert "t-1" in message
    assert "'running'" in message
    assert "1.0 s" in message
    assert fake.sleeps == pytest.approx([0.3, 0.3, 0.3, 0.1])
    assert fake.now - start == pytest.approx(1.0)
    assert client.script.calls == 5  # the last look is at the timeout


def test_poll_retries_a_transient_503(fake: FakeTime) -> None:
    client = ScriptedClient(
        [status("queued"), resp(503), connect_error(), status("running"), status("complete")]
    )
    seen: list[dict[str, Any]] = []
    assert poll(client, fake, on_status=seen.append)["status"] == "complete"
    assert [s["status"] for s in seen] == ["queued", "running", "complete"]
    # poll interval, two backoff sleeps inside with_backoff, poll interval
    backoff = backoff_schedule("seed", attempts=2, rng=random.Random(0))
    assert fake.sleeps == [0.2, *backoff, 0.2]


def test_poll_does_not_retry_a_404(fake: FakeTime) -> None:
    client = ScriptedClient([resp(404, json={"detail": "no such task"})])
    with pytest.raises(httpx.HTTPStatusError):
        poll(client, fake)
    assert client.script.calls == 1


def test_poll_honours_retry_after_within_bounds(fake: FakeTime) -> None:
    client = ScriptedClient(
        [
            status("queued", headers={"Retry_After": "2"}),
            status("running", headers={"Retry_After": "60"}),
            status("complete"),
        ]
    )
    poll(client, fake, max_interval=5.0)
    assert fake.sleeps == [2.0, 5.0]


def test_poll_accepts_a_function(fake: FakeTime) -> None:
    script = Script([status("running"), status("complete")])
    final = poll_task(script, sleep=fake.sleep, clock=fake.clock)
    assert final["status"] == "complete"


def test_poll_explains_bad_arguments_and_bodies(fake: FakeTime) -> None:
    with pytest.raises(TypeError, match="status URL"):
        poll_task(object(), sleep=fake.sleep, clock=fake.clock)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="get"):
        poll_task(object(), "/x", sleep=fake.sleep, clock=fake.clock)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="status"):
        poll(ScriptedClient([resp(200, json=["not", "a", "dict"])]), fake)
    with pytest.raises(ValueError, match="JSON"):
        poll(ScriptedClient([httpx.Response(200, request=REQUEST, text="<html>")]), fake)


# --- contention simulation ---------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_contention_is_deterministic_and_everyone_finishes(strategy: str) -> None:
    result = contention_simulation(30, strategy, seed=5)
    assert result == contention_simulation(30, strategy, seed=5)
    assert len(result["finish_times"]) == 30
    assert result["finish_times"] == sorted(result["finish_times"])
    assert result["completion_time"] == result["finish_times"][-1]
    assert result["total_calls"] >= 30
    assert 1 <= result["max_calls"] <= result["total_calls"]


def test_contention_without_jitter_is_lock_step() -> None:
    for n in (1, 10, 50):
        assert contention_simulation(n, "none")["total_calls"] == n * (n + 1) // 2


@pytest.mark.parametrize("seed", range(5))
def test_jitter_means_less_work_and_less_time_for_50_clients(seed: int) -> None:
    none = contention_simulation(50, "none", seed=seed)
    for strategy in ("seed", "full", "equal", "decorrelated"):
        jittered = contention_simulation(50, strategy, seed=seed)
        assert jittered["total_calls"] < none["total_calls"]
        assert jittered["completion_time"] < none["completion_time"]


def test_contention_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="n_clients"):
        contention_simulation(0, "full")
    with pytest.raises(ValueError, match="choose one of"):
        contention_simulation(5, "linear")


def test_public_names() -> None:
    assert sorted(retry.__all__) == sorted(set(retry.__all__))
    for name in retry.__all__:
        assert hasattr(retry, name), name
    assert retry.RETRY_STATUSES == (408, 429, 500, 502, 503, 504)
