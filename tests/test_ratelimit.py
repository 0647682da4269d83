"""The per-client rebuild rate limit: the token buckets, then the API that uses them."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from labsupport.api import create_app
from labsupport.ratelimit import REBUILD_RATE, RateLimiter, retry_after_seconds
from labsupport.recommender import Model, build_model
from labsupport.retry import Attempt, with_backoff
from labsupport.server import serve_in_thread
from labsupport.store import MemoryStore
from labsupport.tasks import RebuildService, TaskStatus, counter_ids

REBUILD = "/recommender/rebuild"


class FakeClock:
    """A monotonic clock that only moves when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class GatedBuilder:
    """The real builder at rank 2, which waits for ``release`` before it builds."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.release.set()

    def __call__(self, ratings: Any, *, version: int, progress: Any) -> Model:
        assert self.release.wait(10), "the test never released the build"
        return build_model(ratings, version=version, rank=2)


# --- the token buckets -------------------------------------------------------------


def test_a_burst_then_a_wait_until_the_next_token() -> None:
    clock = FakeClock()
    limiter = RateLimiter(3, 30, clock=clock)  # 30 a minute: one token every 2 s
    assert [limiter.acquire("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("a") == pytest.approx(2.0)
    assert limiter.acquire("a") == pytest.approx(2.0)  # a refusal takes nothing
    clock.advance(0.5)
    assert limiter.acquire("a") == pytest.approx(1.5)
    clock.advance(1.5)
    assert limiter.acquire("a") == 0.0
    assert limiter.tokens("a") == pytest.approx(0.0)


def test_buckets_refill_up_to_the_burst_and_no_further() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2, 60, clock=clock)
    limiter.acquire("a")
    limiter.acquire("a")
    clock.advance(1.0)
    assert limiter.tokens("a") == pytest.approx(1.0)
    clock.advance(3600.0)
    assert limiter.tokens("a") == 2.0


def test_clients_have_their_own_buckets() -> None:
    limiter = RateLimiter(1, 30, clock=FakeClock())
    assert limiter.acquire("10.0.0.1") == 0.0
    assert limiter.acquire("10.0.0.1") > 0
    assert limiter.acquire("10.0.0.2") == 0.0
    assert limiter.tokens("10.0.0.3") == 1.0


def test_threads_never_get_more_than_the_burst() -> None:
    limiter = RateLimiter(25, 30, clock=FakeClock())  # the clock stands still: no refill
    granted: list[float] = []
    barrier = threading.Barrier(8, timeout=10)

    def hammer() -> None:
        barrier.wait()
        waits = [limiter.acquire("same") for _ in range(50)]
        granted.extend(w for w in waits if w == 0.0)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(granted) == 25


def test_forgetting_clients_keeps_the_ones_still_limited() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1, 30, clock=clock, max_clients=2)
    limiter.acquire("runaway")
    for n in range(10):  # many other clients, each refilled before the next one comes
        limiter.acquire(f"client-{n}")
        clock.advance(0.1)
    assert limiter.acquire("runaway") > 0  # 1 s later it still has no whole token


@pytest.mark.parametrize(
    ("burst", "per_minute"), [(0, 30), (-1, 30), (2.5, 30), (True, 30), (5, 0), (5, -1)]
)
def test_bad_rates_are_refused(burst: Any, per_minute: float) -> None:
    with pytest.raises(ValueError, match=r"burst|per_minute"):
        RateLimiter(burst, per_minute)
    with pytest.raises(ValueError, match=r"burst|per_minute"):
        create_app(rebuild_rate=(burst, per_minute))


@pytest.mark.parametrize(("wait", "header"), [(0.01, 1), (1.0, 1), (1.01, 2), (2.0, 2), (59.5, 60)])
def test_retry_after_is_whole_seconds_at_least_one(wait: float, header: int) -> None:
    assert retry_after_seconds(wait) == header


# --- the API -----------------------------------------------------------------------


class Rig:
    """An app with a fake-clock limiter, its parts, and clients at two addresses."""

    def __init__(self, store: MemoryStore, burst: int, per_minute: float = 30) -> None:
        self.clock = FakeClock()
        self.limiter = RateLimiter(burst, per_minute, clock=self.clock)
        self.builder = GatedBuilder()
        self.service = RebuildService(store, build=self.builder, task_id_factory=counter_ids())
        self.app: FastAPI = create_app(store, service=self.service, rebuild_rate=self.limiter)
        # No `with`: the lifespan would shut the shared service down when one client closes.
        self.alice = TestClient(self.app, client=("10.0.0.1", 50001))
        self.bob = TestClient(self.app, client=("10.0.0.2", 50002))

    def create(self, client: TestClient, key: str | None = None) -> str:
        """POST a rebuild that must be accepted; wait for its task to finish; return its id."""
        headers = {"Idempotency-Key": key} if key else {}
        response = client.post(REBUILD, headers=headers)
        assert response.status_code == 202, response.text
        task_id = str(response.json()["task_id"])
        assert self.service.wait(task_id, timeout=10).status is TaskStatus.COMPLETE
        return task_id

    def wait_running(self, task_id: str) -> None:
        deadline = time.monotonic() + 10
        while self.service.get(task_id).status is not TaskStatus.RUNNING:  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the build never started"
            time.sleep(0.01)

    def close(self) -> None:
        self.builder.release.set()
        self.alice.close()
        self.bob.close()
        self.service.shutdown(grace=10)


@pytest.fixture
def make_rig(store: MemoryStore) -> Iterator[Any]:
    rigs: list[Rig] = []

    def make(burst: int, per_minute: float = 30) -> Rig:
        rigs.append(Rig(store, burst, per_minute))
        return rigs[-1]

    yield make
    for rig in rigs:
        rig.close()


def test_a_burst_is_accepted_then_429_with_retry_after(make_rig: Any) -> None:
    rig = make_rig(3)
    created = [rig.create(rig.alice, f"key-{n}") for n in range(3)]
    assert created == ["task-1", "task-2", "task-3"]
    refused = rig.alice.post(REBUILD, headers={"Idempotency-Key": "key-3"})
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "2"  # 30 a minute: the next token in 2 s
    assert refused.json() == {"detail": "too many rebuilds from this client: try again in 2 s"}


def test_a_429_changes_nothing(make_rig: Any, store: MemoryStore) -> None:
    rig = make_rig(1)
    rig.create(rig.alice, "first")
    before = (rig.service.tasks(), store.count_ratings(), rig.alice.get("/recommender").json())
    for n in range(20):  # a runaway loop, with and without keys
        headers = {"Idempotency-Key": f"loop-{n}"} if n % 2 else {}
        assert rig.alice.post(REBUILD, headers=headers).status_code == 429
    assert (rig.service.tasks(), store.count_ratings(), rig.alice.get("/recommender").json()) == (
        before
    )
    rig.clock.advance(2.0)
    # the refused key was never bound: once allowed, it makes a new task
    assert rig.create(rig.alice, "loop-1") == "task-2"


def test_replayed_keys_cost_nothing(make_rig: Any) -> None:
    rig = make_rig(2)
    first = rig.create(rig.alice, "nightly")
    for _ in range(5):
        again = rig.alice.post(REBUILD, headers={"Idempotency-Key": "nightly"})
        assert (again.status_code, again.json()["task_id"]) == (202, first)
    assert rig.limiter.tokens("10.0.0.1") == 1.0  # only the first POST paid
    rig.create(rig.alice, "second")
    # the bucket is empty now, and a replay still gets its task
    replay = rig.alice.post(REBUILD, headers={"Idempotency-Key": "nightly"})
    assert (replay.status_code, replay.json()["task_id"]) == (202, first)


def test_joining_a_queued_task_costs_nothing(make_rig: Any) -> None:
    rig = make_rig(2)
    rig.builder.release.clear()  # hold every build until the end of the test
    running = rig.alice.post(REBUILD).json()["task_id"]
    rig.wait_running(running)
    queued = rig.alice.post(REBUILD).json()["task_id"]  # the second and last token
    assert rig.limiter.tokens("10.0.0.1") == 0.0
    joins = [rig.alice.post(REBUILD) for _ in range(5)]
    joins += [rig.alice.post(REBUILD, headers={"Idempotency-Key": f"j-{n}"}) for n in range(3)]
    assert {(r.status_code, r.json()["task_id"]) for r in joins} == {(202, queued)}
    rig.builder.release.set()
    for task_id in (running, queued):
        assert rig.service.wait(task_id, timeout=10).status is TaskStatus.COMPLETE
    # nothing queued any more: a new rebuild would cost a token, and there is none
    assert rig.alice.post(REBUILD).status_code == 429
    # a key that joined still replays its task
    assert rig.alice.post(REBUILD, headers={"Idempotency-Key": "j-0"}).json()["task_id"] == queued


def test_clients_have_separate_budgets(make_rig: Any) -> None:
    rig = make_rig(1)
    rig.create(rig.alice)
    assert rig.alice.post(REBUILD).status_code == 429
    rig.create(rig.bob)
    assert rig.bob.post(REBUILD).status_code == 429


def test_the_bucket_refills(make_rig: Any) -> None:
    rig = make_rig(2)
    rig.create(rig.alice)
    rig.create(rig.alice)
    assert rig.alice.post(REBUILD).headers["Retry-After"] == "2"
    rig.clock.advance(1.0)
    assert rig.alice.post(REBUILD).headers["Retry-After"] == "1"
    rig.clock.advance(1.0)
    rig.create(rig.alice)
    rig.clock.advance(600.0)  # a long pause gives back the whole burst, no more
    rig.create(rig.alice)
    rig.create(rig.alice)
    assert rig.alice.post(REBUILD).status_code == 429


def test_the_defaults_allow_a_lesson_and_stop_a_runaway_loop(store: MemoryStore) -> None:
    clock = FakeClock()
    service = RebuildService(store, build=GatedBuilder(), task_id_factory=counter_ids())
    app = create_app(store, service=service, rebuild_rate=RateLimiter(*REBUILD_RATE, clock=clock))
    statuses = []
    with TestClient(app) as client:
        for n in range(100):  # a student's loop with a fresh key each time
            response = client.post(REBUILD, headers={"Idempotency-Key": f"loop-{n}"})
            statuses.append(response.status_code)
            if response.status_code == 202:
                service.wait(response.json()["task_id"], timeout=10)
    assert statuses == [202] * 10 + [429] * 90
    assert len(service.tasks()) == 10
    assert REBUILD_RATE == (10, 30.0)
    assert create_app().state.rebuild_limiter.burst == 10


def test_the_429_is_in_the_schema_only_when_the_limit_is_on() -> None:
    on = create_app().openapi()["paths"][REBUILD]["post"]["responses"]
    assert on["429"]["headers"]["Retry-After"]["required"] is True
    assert on["429"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Detail"
    }
    off = create_app(rebuild_rate=None).openapi()["paths"][REBUILD]["post"]["responses"]
    assert "429" not in off


def test_no_limit_when_turned_off(store: MemoryStore) -> None:
    service = RebuildService(store, build=GatedBuilder(), task_id_factory=counter_ids())
    app = create_app(store, service=service, rebuild_rate=None)
    assert app.state.rebuild_limiter is None
    with TestClient(app) as client:
        for n in range(15):
            response = client.post(REBUILD, headers={"Idempotency-Key": f"k-{n}"})
            assert response.status_code == 202
            service.wait(response.json()["task_id"], timeout=10)
    assert len(service.tasks()) == 15


def test_the_retry_client_waits_out_a_429_over_real_http(store: MemoryStore) -> None:
    clock = FakeClock()
    limiter = RateLimiter(1, 30, clock=clock)
    service = RebuildService(store, build=GatedBuilder(), task_id_factory=counter_ids())
    app = create_app(store, service=service, rebuild_rate=limiter, shutdown_grace=1)
    attempts: list[Attempt] = []

    def sleep(seconds: float) -> None:  # the retry client's pause moves the server's clock
        clock.advance(seconds)

    with serve_in_thread(app) as server, httpx.Client(base_url=server.url, timeout=5) as http:
        first = http.post(REBUILD, headers={"Idempotency-Key": "first"}).json()["task_id"]
        service.wait(first, timeout=10)
        response = with_backoff(
            lambda: http.post(REBUILD, headers={"Idempotency-Key": "second"}),
            sleep=sleep,
            rng=random.Random(0),
            on_attempt=attempts.append,
        )
        assert response.status_code == 202
        service.wait(response.json()["task_id"], timeout=10)
    assert [a.status for a in attempts] == [429, 202]
    assert attempts[0].delay == 2.0  # the server's Retry-After, longer than the 0.5 s schedule
    assert limiter.tokens("127.0.0.1") == 0.0  # the client address is the real one
