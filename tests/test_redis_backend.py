"""The Redis task registry and service, in process, against a real redis-server.

Two `RedisRebuildService` objects on one Redis stand for two API
processes (the real-process version is in `tests/test_worker.py`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from conftest import free_port
from fastapi.testclient import TestClient

from labsupport.api import create_app
from labsupport.errors import LabError
from labsupport.recommender import Model, build_model
from labsupport.scaleout import cache as rediscache
from labsupport.scaleout.registry import RedisTaskRegistry, RedisUnavailableError, connect_redis
from labsupport.scaleout.service import RedisRebuildService
from labsupport.store import MemoryStore
from labsupport.tasks import (
    RebuildServiceProtocol,
    ServiceClosedError,
    TaskFinishedError,
    TaskStatus,
)


class Builder:
    """The real builder, optionally slow, failing or held on a gate; counts calls and overlap."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.calls = 0
        self.active = 0
        self.max_active = 0
        self.fail = False
        self.gate: threading.Event | None = None
        self.started = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, ratings: Any, *, version: int, progress: Callable[[float], None]) -> Model:
        with self._lock:
            self.calls += 1
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        self.started.set()
        try:
            if self.gate is not None:
                assert self.gate.wait(10), "the test never opened the gate"
                progress(0.1)  # a held build notices here that its task was taken away
            time.sleep(self.seconds)
            if self.fail:
                raise RuntimeError("the build broke")
            return build_model(ratings, version=version, rank=2)
        finally:
            with self._lock:
                self.active -= 1


@pytest.fixture
def client(fresh_redis_url: str) -> Iterator[Any]:
    redis_client = connect_redis(fresh_redis_url)
    yield redis_client
    redis_client.close()


@pytest.fixture
def builder() -> Builder:
    return Builder()


@pytest.fixture
def make_service(
    store: MemoryStore, client: Any, builder: Builder
) -> Iterator[Callable[..., RedisRebuildService]]:
    """Make services ("API processes") sharing one Redis and one store; shut all down after."""
    made: list[RedisRebuildService] = []

    def make(lease_ttl: float = 2.0, **options: Any) -> RedisRebuildService:
        registry_options = {
            k: options.pop(k) for k in ("idempotency_ttl", "old_model_ttl") if k in options
        }
        registry = RedisTaskRegistry(client, lease_ttl=lease_ttl, **registry_options)
        options.setdefault("build", builder)
        service = RedisRebuildService(store, registry, poll_interval=0.05, **options)
        made.append(service)
        return service

    yield make
    for service in made:
        service.shutdown(grace=0)
    if builder.gate is not None:
        builder.gate.set()  # let a held build thread end


def test_a_redis_service_instance_provides_the_protocol(
    make_service: Callable[..., RedisRebuildService],
) -> None:
    from test_tasks import assert_provides_protocol

    service = make_service()
    assert_provides_protocol(service)
    conforming: RebuildServiceProtocol = service
    task = conforming.rebuild_now(timeout=None)  # None: no limit, as for RebuildService
    assert task.status is TaskStatus.COMPLETE
    assert conforming.wait(task.task_id, timeout=None) == task


def crash(service: RedisRebuildService) -> None:
    """Simulate SIGKILL of the process: its heartbeats stop, nothing is cleaned up."""
    service._heartbeat.stop()


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


# ---------------------------------------------------------------- sharing


def test_two_processes_share_tasks_keys_and_the_model(
    make_service: Callable[..., RedisRebuildService],
) -> None:
    a, b = make_service(), make_service()
    task, created = a.request("key-1")
    assert created and task.status is TaskStatus.QUEUED
    again, created_again = b.request("key-1")
    assert (again.task_id, created_again) == (task.task_id, False)
    a.start(task.task_id)
    done = b.wait(task.task_id, timeout=10)
    assert done.status is TaskStatus.COMPLETE and done.model_version == 1
    # "complete" read through b means b already serves that model
    assert b.model is not None and b.model.version == 1
    assert a.model is not None and a.model.version == 1
    assert [t.task_id for t in b.tasks()] == [task.task_id]
    assert b.ratings_since_build() == 0


def test_a_new_model_reaches_the_other_process_without_asking(
    make_service: Callable[..., RedisRebuildService],
) -> None:
    a, b = make_service(), make_service()
    assert a.rebuild_now(timeout=10).status is TaskStatus.COMPLETE
    wait_for(lambda: b.model is not None and b.model.version == 1)  # the pointer poll


def test_fifty_concurrent_requests_with_one_key_make_one_task_and_one_build(
    make_service: Callable[..., RedisRebuildService], builder: Builder
) -> None:
    services = [make_service(), make_service()]
    barrier = threading.Barrier(50, timeout=10)

    def ask(i: int) -> tuple[str, bool]:
        service = services[i % 2]
        barrier.wait()
        task, created = service.request("one-key")
        if created:
            service.start(task.task_id)
        return task.task_id, created

    with ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(ask, range(50)))
    assert len({task_id for task_id, _ in answers}) == 1
    assert sum(created for _, created in answers) == 1
    task_id = answers[0][0]
    assert services[1].wait(task_id, timeout=10).status is TaskStatus.COMPLETE
    assert builder.calls == 1


def test_requests_without_a_key_coalesce_and_builds_never_overlap(
    make_service: Callable[..., RedisRebuildService], builder: Builder
) -> None:
    builder.seconds = 0.3
    services = [make_service(), make_service()]
    barrier = threading.Barrier(40, timeout=10)

    def ask(i: int) -> str:
        service = services[i % 2]
        barrier.wait()
        task, created = service.request()
        if created:
            service.start(task.task_id)
        return task.task_id

    with ThreadPoolExecutor(40) as pool:
        task_ids = set(pool.map(ask, range(40)))
    assert 1 <= len(task_ids) <= 2  # one running and one queued at most
    finals = {services[0].wait(t, timeout=10).status for t in task_ids}
    assert finals == {TaskStatus.COMPLETE}
    assert builder.calls == len(task_ids)
    assert builder.max_active == 1  # two processes, still one build at a time


# ---------------------------------------------------------------- the state machine


def test_a_failed_build_keeps_the_previous_model(
    make_service: Callable[..., RedisRebuildService], builder: Builder
) -> None:
    a, b = make_service(), make_service()
    assert a.rebuild_now(timeout=10).model_version == 1
    wait_for(lambda: b.model is not None)
    builder.fail = True
    failed = b.rebuild_now(timeout=10)
    assert failed.status is TaskStatus.FAILED
    assert failed.error == "RuntimeError: the build broke"
    assert b.registry.current()[0] == 1
    assert a.model is not None and a.model.version == 1
    assert b.model is not None and b.model.version == 1
    builder.fail = False
    assert a.rebuild_now(timeout=10).model_version == 2


def test_final_states_never_change(make_service: Callable[..., RedisRebuildService]) -> None:
    a = make_service()
    task = a.rebuild_now(timeout=10)
    registry = a.registry
    assert task.status is TaskStatus.COMPLETE
    assert not registry.settle(task.task_id, TaskStatus.INTERRUPTED, "late", owner=a.owner)
    assert not registry.settle(task.task_id, TaskStatus.FAILED, "late")
    assert not registry.progress(task.task_id, a.owner, 0.9)
    assert registry.try_start(task.task_id, a.owner) == ("gone", "complete")
    assert not registry.claim(task.task_id, a.owner)
    model = build_model(a.store.rating_arrays(), version=9, rank=2)
    assert not registry.publish(task.task_id, a.owner, model, 0)
    assert registry.current()[0] == 1
    assert registry.get(task.task_id) == task


def test_a_build_whose_task_was_taken_away_publishes_nothing(
    make_service: Callable[..., RedisRebuildService], builder: Builder
) -> None:
    builder.gate = threading.Event()
    a = make_service()
    task, _ = a.request()
    worker = a.start(task.task_id)
    assert worker is not None and builder.started.wait(5)
    assert a.registry.settle(task.task_id, TaskStatus.INTERRUPTED, "stopped", owner=a.owner)
    builder.gate.set()
    worker.join(5)
    assert a.registry.get(task.task_id).status is TaskStatus.INTERRUPTED  # type: ignore[union-attr]
    assert a.registry.current() == (None, 0)
    assert a.model is None


def test_a_crashed_process_leaves_its_running_task_interrupted(
    make_service: Callable[..., RedisRebuildService], builder: Builder
) -> None:
    builder.gate = threading.Event()
    a, b = make_service(lease_ttl=0.5), make_service()
    task, _ = a.request()
    a.start(task.task_id)
    assert builder.started.wait(5)
    assert b.get(task.task_id).status is TaskStatus.RUNNING  # type: ignore[union-attr]
    crash(a)
    wait_for(lambda: b.get(task.task_id).status is TaskStatus.INTERRUPTED)  # type: ignore[union-attr]
    stopped = b.get(task.task_id)
    assert stopped is not None and stopped.error is not None
    assert "stopped before it finished" in stopped.error
    builder.gate.set()  # the "dead" build resumes: it must not publish
    wait_for(lambda: builder.active == 0)
    assert b.registry.current() == (None, 0)
    builder.gate = None
    assert b.rebuild_now(timeout=10).status is TaskStatus.COMPLETE  # the lock was freed


def test_nobody_joins_a_queued_task_whose_process_died(
    make_service: Callable[..., RedisRebuildService],
) -> None:
    a, b = make_service(lease_ttl=0.3), make_service()
    orphan, _ = a.request()  # queued, never started
    crash(a)
    time.sleep(0.5)
    task, created = b.request()
    assert created and task.task_id != orphan.task_id
    assert b.get(orphan.task_id).status is TaskStatus.INTERRUPTED  # type: ignore[union-attr]


def test_shutdown_interrupts_only_this_processes_builds(
    make_service: Callable[..., RedisRebuildService], builder: Builder
) -> None:
    builder.gate = threading.Event()
    a, b = make_service(), make_service()
    task, _ = a.request()
    a.start(task.task_id)
    assert builder.started.wait(5)
    interrupted = a.shutdown(grace=0.1)
    assert [t.task_id for t in interrupted] == [task.task_id]
    assert b.get(task.task_id).status is TaskStatus.INTERRUPTED  # type: ignore[union-attr]
    assert b.accepting and not a.accepting
    with pytest.raises(ServiceClosedError):
        a.request()


def test_an_rq_task_waiting_in_the_queue_is_kept_until_its_job_is_lost(
    client: Any,
) -> None:
    registry = RedisTaskRegistry(client, lease_ttl=0.2)
    task_id, created = registry.request("t-1", owner="api:test", runner="rq")
    assert created
    time.sleep(0.3)  # the lease of the process that queued it has lapsed
    assert not registry.reap(task_id, job_state=lambda *_: None)  # still in the queue
    assert registry.get(task_id).status is TaskStatus.QUEUED  # type: ignore[union-attr]
    assert registry.reap(task_id, job_state=lambda *_: "its job is not in the queue")
    lost = registry.get(task_id)
    assert lost is not None and lost.status is TaskStatus.FAILED
    assert lost.error == (
        "the job queue lost this rebuild (its job is not in the queue); ask for a new rebuild"
    )


# ---------------------------------------------------------------- keys and models


def test_idempotency_keys_expire_and_are_stored_hashed(
    make_service: Callable[..., RedisRebuildService], client: Any
) -> None:
    a = make_service(idempotency_ttl=0.3)
    first, _ = a.request("secret-key")
    a.start(first.task_id)
    a.wait(first.task_id, timeout=10)
    assert a.request("secret-key")[0].task_id == first.task_id  # a replay, in any state
    assert a.reuses("secret-key")
    assert not any(b"secret-key" in key for key in client.keys("*"))
    time.sleep(0.4)
    assert not a.reuses("secret-key")
    second, created = a.request("secret-key")
    assert created and second.task_id != first.task_id


def test_old_model_versions_expire_and_rediscache_reads_the_current_one(
    make_service: Callable[..., RedisRebuildService], client: Any, fresh_redis_url: str
) -> None:
    a = make_service(old_model_ttl=0.3)
    a.rebuild_now(timeout=10)
    a.rebuild_now(timeout=10)
    assert client.get("labsupport:model:current") == b"2"
    assert client.ttl("labsupport:model:2") == -1  # the serving model never expires
    assert 0 < client.pttl("labsupport:model:1") <= 300
    with rediscache.connect(fresh_redis_url) as cache:  # notebook 05's cache, same layout
        loaded = cache.load_model()
        assert loaded is not None and loaded.version == 2
    time.sleep(0.5)
    assert not client.exists("labsupport:model:1")
    assert not client.keys("labsupport:model:pending:*")


# ---------------------------------------------------------------- the API and errors


def test_two_apps_on_one_redis_answer_alike(
    make_service: Callable[..., RedisRebuildService], store: MemoryStore
) -> None:
    a, b = make_service(), make_service()
    with (
        TestClient(create_app(store, service=a)) as one,
        TestClient(create_app(store, service=b)) as two,
    ):
        posted = one.post("/recommender/rebuild", headers={"Idempotency-Key": "k"})
        assert posted.status_code == 202
        task_id = posted.json()["task_id"]
        # The build runs on a thread, so the state may move on between two
        # requests: the replay's status lies between the GETs around it.
        order = ["queued", "running", "complete"]
        before = two.get(f"/recommender/rebuild/{task_id}").json()["status"]
        replay = two.post("/recommender/rebuild", headers={"Idempotency-Key": "k"}).json()
        after = two.get(f"/recommender/rebuild/{task_id}").json()["status"]
        assert replay["task_id"] == task_id
        assert order.index(before) <= order.index(replay["status"]) <= order.index(after)
        wait_for(lambda: two.get(f"/recommender/rebuild/{task_id}").json()["status"] == "complete")
        status = two.get(f"/recommender/rebuild/{task_id}").json()
        assert status["model_version"] == 1 and len(status["sample"]) == 3
        for http in (one, two):
            assert http.get("/recommendations/1").headers["X-Model-Version"] == "1"
            assert http.get("/recommender").json()["version"] == 1


def test_connecting_to_no_redis_says_what_to_do() -> None:
    with pytest.raises(RedisUnavailableError) as caught:
        connect_redis(f"redis://user:pw@127.0.0.1:{free_port()}/3", timeout=0.5)
    assert isinstance(caught.value, LabError) and isinstance(caught.value, ConnectionError)
    message = str(caught.value)
    assert "start redis-server" in message and "db 3" in message
    assert "pw" not in message and "\n" not in message


@pytest.mark.parametrize("url", ["redis://127.0.0.1:notaport/0", "redis://127.0.0.1:99999/0"])
def test_a_malformed_redis_url_says_what_to_do(url: str) -> None:
    with pytest.raises(RedisUnavailableError, match="fix the --redis URL"):
        connect_redis(url, timeout=0.5)


def test_redis_going_away_mid_request_is_a_503_with_retry_after(
    make_service: Callable[..., RedisRebuildService],
    store: MemoryStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from redis.exceptions import ConnectionError as RedisConnectionError

    service = make_service()

    def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise RedisConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(service, "get", unreachable)
    with TestClient(create_app(store, service=service)) as http:
        answer = http.get("/recommender/rebuild/some-task")
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "1"
    assert answer.json() == {
        "detail": "the shared task store (Redis) is unreachable; try again shortly"
    }


def test_cancel_over_redis_is_seen_by_every_process(
    make_service: Callable[..., RedisRebuildService], builder: Builder
) -> None:
    a, b = make_service(build_delay=1.0), make_service()
    a.rebuild_now(timeout=10)
    running, _ = a.request(trigger="auto")
    assert running.trigger == "auto" and b.get(running.task_id).trigger == "auto"  # type: ignore[union-attr]
    a.start(running.task_id)
    wait_for(lambda: a.get(running.task_id).status is TaskStatus.RUNNING)  # type: ignore[union-attr]
    queued, created = b.request(idempotency_key="k")
    assert created
    assert b.cancel(queued.task_id).status is TaskStatus.CANCELED
    assert a.get(queued.task_id).status is TaskStatus.CANCELED  # type: ignore[union-attr]
    again, created = a.request(idempotency_key="k")  # the key of a canceled task: a new one
    assert created and again.task_id != queued.task_id
    assert b.cancel(again.task_id).status is TaskStatus.CANCELED
    assert b.cancel(running.task_id).status is TaskStatus.CANCELED  # a's build, canceled from b
    time.sleep(1.5)  # past the end the build would have reached
    assert a.get(running.task_id).status is TaskStatus.CANCELED  # type: ignore[union-attr]
    assert a.model is not None and a.model.version == 1 and b.model.version == 1  # type: ignore[union-attr]
    with pytest.raises(TaskFinishedError):
        a.cancel(running.task_id)
    with pytest.raises(KeyError):
        a.cancel("no-such-task")
