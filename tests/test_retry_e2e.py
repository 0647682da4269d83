"""The retry client against a real server that fails on purpose.

The server (``create_app(failure_rate=..., seed=...)`` on a free loopback port)
answers a seeded share of requests with ``503`` and ``Retry-After: 1``, one
draw per request in arrival order, so the same requests fail on every run. A
small ASGI middleware in front of it writes down every request it receives
and the status it sent, so the tests count what the server saw, not what the
client believes it sent.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from labsupport.api import create_app
from labsupport.retry import Attempt, poll_task, with_backoff
from labsupport.server import serve_in_thread
from labsupport.store import MemoryStore
from labsupport.tasks import counter_ids

SEED = 3
"""Seeds the injected failures: with it, the POST and the polls each meet 503s."""
FAILURE_RATE = 0.5
"""Share of requests the flaky server answers with 503."""
RETRIES = 5
"""Retries per call (so at most six calls), for the POST and for each poll."""
POLL_TIMEOUT = 30.0
"""``poll_task``'s deadline, in seconds."""
BUILD_DELAY = 0.3
"""Seconds each rebuild takes, so a poll can find it still running."""


@dataclass(frozen=True)
class Seen:
    """One request as the server saw it."""

    method: str
    path: str
    status: int


class Recorder:
    """ASGI middleware: pass everything through, write down each HTTP request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.seen: list[Seen] = []
        self._lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                with self._lock:
                    self.seen.append(Seen(scope["method"], scope["path"], message["status"]))
            await send(message)

        await self.app(scope, receive, recording_send)

    def statuses(self, method: str, path: str) -> list[int]:
        """The statuses sent for one method and path, in order."""
        with self._lock:
            return [s.status for s in self.seen if (s.method, s.path) == (method, path)]


class Flaky:
    """A running server that fails ``failure_rate`` of requests, with its recorder."""

    def __init__(self, store: MemoryStore, failure_rate: float) -> None:
        self.app = create_app(
            store,
            failure_rate=failure_rate,
            seed=SEED,
            build_delay=BUILD_DELAY,
            task_id_factory=counter_ids(),
            shutdown_grace=1.0,
        )
        self.service = self.app.state.service
        self.recorder = Recorder(self.app)


@pytest.fixture
def serve(store: MemoryStore) -> Iterator[Any]:
    """Start a flaky server; yield ``(flaky, client)``; stop everything afterwards."""
    handles = []

    def start(failure_rate: float) -> tuple[Flaky, httpx.Client]:
        flaky = Flaky(store, failure_rate)
        server = serve_in_thread(flaky.recorder)
        client = httpx.Client(base_url=server.url, timeout=5)
        handles.append((server, client))
        return flaky, client

    yield start
    for server, client in handles:
        client.close()
        server.stop()


def no_sleep(seconds: float) -> None:
    """Skip the pause: these tests count calls, and the server's failures do not depend on time."""


def runs_of_503(statuses: list[int]) -> list[int]:
    """Lengths of the runs of consecutive 503s (each run is one call's retries)."""
    runs, current = [], 0
    for status in statuses:
        if status == 503:
            current += 1
        else:
            runs.append(current)
            current = 0
    return [*runs, current] if current else runs


def test_rebuild_reaches_complete_through_half_failed_requests(serve: Any) -> None:
    flaky, http = serve(FAILURE_RATE)
    attempts: list[Attempt] = []
    answer = with_backoff(
        lambda: http.post("/recommender/rebuild", headers={"Idempotency-Key": "e2e-1"}),
        retries=RETRIES,
        deadline=POLL_TIMEOUT,
        rng=random.Random(SEED),
        on_attempt=attempts.append,
    )
    assert answer.status_code == 202
    task_id = answer.json()["task_id"]
    bodies: list[dict[str, Any]] = []
    final = poll_task(
        http,
        f"/recommender/rebuild/{task_id}",
        timeout=POLL_TIMEOUT,
        interval=0.1,
        max_interval=0.1,
        retries=RETRIES,
        rng=random.Random(SEED),
        on_status=bodies.append,
    )
    assert final["status"] == "complete"
    assert final["model_version"] == 1
    # The POST: the server saw exactly the calls the client made, at most RETRIES + 1,
    # 503s until one got through; the key made those retries one task and one build.
    posts = flaky.recorder.statuses("POST", "/recommender/rebuild")
    assert posts == [a.status for a in attempts]
    assert posts[-1] == 202 and set(posts[:-1]) == {503}  # SEED: at least one 503 first
    assert len(posts) <= RETRIES + 1
    assert [t.task_id for t in flaky.service.tasks()] == [task_id]
    # The polls: each successful GET is one body seen by the client; before it, at most
    # RETRIES 503s in a row, so the total is bounded by (RETRIES + 1) GETs per poll.
    gets = flaky.recorder.statuses("GET", f"/recommender/rebuild/{task_id}")
    assert 503 in gets  # SEED: the polls met failures too
    assert gets.count(200) == len(bodies)
    assert max(runs_of_503(gets)) <= RETRIES
    assert len(gets) <= (RETRIES + 1) * len(bodies)
    assert gets[-1] == 200 and bodies[-1]["status"] == "complete"
    assert len(flaky.recorder.seen) == len(posts) + len(gets)  # nothing else was sent


def test_a_404_is_never_retried(serve: Any) -> None:
    flaky, http = serve(FAILURE_RATE)
    retried = []
    for n in range(5):  # five unknown tasks: some calls meet a 503 first, none retries a 404
        path = f"/recommender/rebuild/no-such-task-{n}"
        with pytest.raises(httpx.HTTPStatusError) as info:
            with_backoff(lambda p=path: http.get(p), retries=RETRIES, sleep=no_sleep)
        assert info.value.response.status_code == 404
        statuses = flaky.recorder.statuses("GET", path)
        assert statuses.count(404) == 1 and statuses[-1] == 404
        assert set(statuses[:-1]) <= {503} and len(statuses) <= RETRIES + 1
        retried.append(len(statuses) > 1)
    assert any(retried)  # SEED: some 404s came after a retried 503


def test_a_422_is_never_retried(serve: Any, store: MemoryStore) -> None:
    flaky, http = serve(FAILURE_RATE)
    before = store.list_ratings()
    for score in (0, 6, 7, 9, 99):
        # POST /ratings replaces a user's rating of a movie: repeating it is safe, so
        # the call is marked idempotent and a 503 is retried; the 422 is not.
        with pytest.raises(httpx.HTTPStatusError) as info:
            with_backoff(
                lambda s=score: http.post(
                    "/ratings", json={"movie_id": 1, "user_id": 1, "score": s}
                ),
                retries=RETRIES,
                idempotent=True,
                sleep=no_sleep,
            )
        assert info.value.response.status_code == 422
    statuses = flaky.recorder.statuses("POST", "/ratings")
    assert statuses.count(422) == 5
    assert 503 in statuses  # SEED: some calls were retried before their 422
    assert max(runs_of_503(statuses)) <= RETRIES
    assert store.list_ratings() == before


def test_a_post_without_a_key_is_tried_once_even_on_a_503(serve: Any) -> None:
    flaky, http = serve(1.0)  # every request gets 503 with Retry-After
    sleeps: list[float] = []
    with pytest.raises(httpx.HTTPStatusError) as info:
        with_backoff(lambda: http.post("/recommender/rebuild"), sleep=sleeps.append)
    assert info.value.response.status_code == 503
    assert flaky.recorder.statuses("POST", "/recommender/rebuild") == [503]
    assert sleeps == []
    # With a key the same call is retried, RETRIES times and no more ...
    with pytest.raises(httpx.HTTPStatusError):
        with_backoff(
            lambda: http.post("/recommender/rebuild", headers={"X-Task-Id": "keyed"}),
            retries=RETRIES,
            sleep=sleeps.append,
        )
    assert flaky.recorder.statuses("POST", "/recommender/rebuild") == [503] * (1 + RETRIES + 1)
    assert len(sleeps) == RETRIES and min(sleeps) >= 1.0  # Retry-After: 1 honoured
    # ... and so is a key-less one the caller vouches for.
    with pytest.raises(httpx.HTTPStatusError):
        with_backoff(
            lambda: http.post("/recommender/rebuild"),
            retries=2,
            idempotent=True,
            sleep=sleeps.append,
        )
    assert len(flaky.recorder.statuses("POST", "/recommender/rebuild")) == 1 + (RETRIES + 1) + 3
    assert flaky.service.tasks() == []
