"""The rebuild service's state machine, with a controllable fake builder."""

from __future__ import annotations

import inspect
import threading
import time
from typing import Any

import pytest

from labsupport.recommender import Model, build_model
from labsupport.scaleout.service import RedisRebuildService
from labsupport.store import MemoryStore, SQLiteStore, StoreUnavailableError
from labsupport.tasks import (
    RebuildService,
    RebuildServiceProtocol,
    ServiceClosedError,
    Task,
    TaskStatus,
    counter_ids,
)


class GatedBuilder:
    """Builds a real model, but only when the test opens the gate."""

    def __init__(self, fail: bool = False) -> None:
        self.gate = threading.Event()
        self.started = threading.Event()
        self.fail = fail
        self.calls = 0

    def __call__(self, ratings: Any, *, version: int, progress: Any) -> Model:
        self.calls += 1
        self.started.set()
        progress(0.5)
        assert self.gate.wait(10), "test never opened the gate"
        if self.fail:
            raise RuntimeError("boom")
        return build_model(ratings, version=version, rank=2)


def test_states_move_forward_and_model_swaps(store: MemoryStore) -> None:
    builder = GatedBuilder()
    service = RebuildService(store, build=builder, task_id_factory=counter_ids())
    task, created = service.request()
    assert created and task.status is TaskStatus.QUEUED and task.task_id == "task-1"
    runner = service.start(task.task_id)
    assert builder.started.wait(5)
    running = service.get(task.task_id)
    assert running is not None and running.status is TaskStatus.RUNNING
    assert 0 < running.progress < 1
    assert service.model is None  # nothing swapped in before the build ends
    builder.gate.set()
    runner.join(5)
    done = service.get(task.task_id)
    assert done is not None and done.status is TaskStatus.COMPLETE
    assert done.progress == 1.0 and done.model_version == 1
    assert service.model is not None and service.model.version == 1


def test_queued_requests_coalesce(store: MemoryStore) -> None:
    builder = GatedBuilder()
    service = RebuildService(store, build=builder, task_id_factory=counter_ids())
    first, _ = service.request()
    runner = service.start(first.task_id)
    assert builder.started.wait(5)
    second, created2 = service.request()  # first is running: a new task queues
    third, created3 = service.request()  # second is still queued: join it
    assert created2 and not created3 and third.task_id == second.task_id
    waiter = service.start(second.task_id)
    builder.gate.set()
    runner.join(5)
    waiter.join(5)
    assert builder.calls == 2
    assert service.get(second.task_id).status is TaskStatus.COMPLETE  # type: ignore[union-attr]
    assert service.model is not None and service.model.version == 2


def test_failed_build_keeps_previous_model(store: MemoryStore) -> None:
    service = RebuildService(store, task_id_factory=counter_ids())
    good = service.rebuild_now()
    assert good.status is TaskStatus.COMPLETE
    model = service.model
    failing = GatedBuilder(fail=True)
    failing.gate.set()
    service._build = failing  # swap in a builder that raises
    bad = service.rebuild_now()
    assert bad.status is TaskStatus.FAILED
    assert bad.error == "RuntimeError: boom"
    assert service.model is model
    service._build = service._default_build
    assert service.rebuild_now().status is TaskStatus.COMPLETE
    assert service.model is not None and service.model.version == 2


def test_idempotency_key_maps_to_one_task(store: MemoryStore) -> None:
    service = RebuildService(store, task_id_factory=counter_ids())
    a, created = service.request("k")
    b, created_b = service.request("k")
    assert created and not created_b and a.task_id == b.task_id
    service.start(a.task_id).join(5)
    c, created_c = service.request("k")
    assert not created_c and c.status is TaskStatus.COMPLETE


def test_idempotency_key_expires(store: MemoryStore) -> None:
    now = [1000.0]
    service = RebuildService(
        store, idempotency_ttl=60, clock=lambda: now[0], task_id_factory=counter_ids()
    )
    a, _ = service.request("k")
    service.start(a.task_id).join(5)
    now[0] += 61
    b, created = service.request("k")
    assert created and b.task_id != a.task_id


def test_shutdown_interrupts_unfinished_and_refuses_new(store: MemoryStore) -> None:
    builder = GatedBuilder()
    service = RebuildService(store, build=builder, task_id_factory=counter_ids())
    task, _ = service.request()
    runner = service.start(task.task_id)
    assert builder.started.wait(5)
    interrupted = service.shutdown(grace=0.1)
    assert [t.task_id for t in interrupted] == [task.task_id]
    with pytest.raises(ServiceClosedError):
        service.request()
    builder.gate.set()  # the abandoned build finishes late...
    runner.join(5)
    late = service.get(task.task_id)
    assert late is not None and late.status is TaskStatus.INTERRUPTED  # ...and changes nothing
    assert service.model is None


def test_shutdown_waits_for_a_build_within_grace(store: MemoryStore) -> None:
    builder = GatedBuilder()
    service = RebuildService(store, build=builder)
    task, _ = service.request()
    service.start(task.task_id)
    assert builder.started.wait(5)
    threading.Timer(0.2, builder.gate.set).start()
    assert service.shutdown(grace=5) == []
    assert service.get(task.task_id).status is TaskStatus.COMPLETE  # type: ignore[union-attr]


def test_sqlite_restart_marks_unfinished_interrupted(tmp_path: Any) -> None:
    db = tmp_path / "s.db"
    with SQLiteStore(db) as s:
        s.add_movie("Heat", 1995, "Crime")
        s.add_rating(1, 1, 5)
        service = RebuildService(s, task_id_factory=counter_ids())
        done = service.rebuild_now()
        stuck, _ = service.request("key-1")  # queued, never run: the process "dies"
    with SQLiteStore(db) as s:
        again = RebuildService(s)
        assert again.get(done.task_id).status is TaskStatus.COMPLETE  # type: ignore[union-attr]
        revived = again.get(stuck.task_id)
        assert revived is not None and revived.status is TaskStatus.INTERRUPTED
        assert revived.error
        assert again.request("key-1")[0].task_id == stuck.task_id  # the key survives too
        assert again.rebuild_now().status is TaskStatus.COMPLETE


def test_task_round_trips_through_dict() -> None:
    task = Task("t", TaskStatus.FAILED, 1.0, 2.0, 3.0, 0.5, "boom", "k", None)
    assert Task.from_dict(task.to_dict()) == task
    assert task.to_dict()["status"] == "failed"
    assert "<table>" in task._repr_html_()


def test_process_executor_builds_the_same_model(store: MemoryStore) -> None:
    import numpy as np

    from labsupport._types import RatingArrays
    from labsupport.tasks import BuildProcess

    ratings = store.rating_arrays()
    # the same ratings in other dtypes (numpy's default float64 scores) travel converted
    loose = RatingArrays(
        ratings.user_ids.astype(np.int32), ratings.movie_ids, ratings.scores.astype(np.float64)
    )
    seen: list[float] = []
    with BuildProcess() as child:
        model = child.build(ratings, version=3, progress=seen.append, rank=2)
        from_loose = child.build(loose, version=3, rank=2)
    local = build_model(ratings, version=3, rank=2)
    assert model.version == 3
    assert seen and seen == sorted(seen) and seen[-1] == 1.0
    for user in (1, 2, 3, 99):
        assert model_recs(model, user) == model_recs(local, user)
        assert model_recs(from_loose, user) == model_recs(local, user)
    with pytest.raises(ValueError):
        model.user_factors[0, 0] = 1.0  # read-only again after the trip between processes


def model_recs(model: Model, user: int) -> list[int]:
    from labsupport.recommender import recommend

    return recommend(model, user, limit=6)


def test_process_executor_reports_a_failing_build(store: MemoryStore) -> None:
    service = RebuildService(store, executor="process", build_options={"method": "no-such-method"})
    task = service.rebuild_now()
    assert task.status is TaskStatus.FAILED
    assert task.error and "RuntimeError" in task.error


def test_build_process_is_reused_and_replaced_when_it_dies(store: MemoryStore) -> None:
    import os
    import signal

    from labsupport.tasks import BuildProcess

    ratings = store.rating_arrays()
    shared_before = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    with BuildProcess() as child:
        first = child.build(ratings, version=1, rank=2)
        pid = child.pid
        second = child.build(ratings, version=2, rank=2)
        assert pid is not None and child.pid == pid  # one child, started once
        assert (first.version, second.version) == (1, 2)
        os.kill(pid, signal.SIGKILL)  # e.g. the OOM killer, between two builds
        deadline = time.monotonic() + 10
        while child._proc.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        third = child.build(ratings, version=3, rank=2)  # a new child takes over
        assert third.version == 3 and child.pid not in (None, pid)
    assert child.pid is None  # closed with the context
    if os.path.isdir("/dev/shm"):  # every block, both ways, was unlinked
        assert set(os.listdir("/dev/shm")) - shared_before == set()


def test_a_build_process_killed_mid_build_fails_that_build_only(store: MemoryStore) -> None:
    import os
    import signal

    from labsupport.data import synthetic_shape
    from labsupport.tasks import BuildProcess

    ratings = synthetic_shape("ml-100k", seed=0)  # big enough that the build outlasts the kill
    with BuildProcess() as child:

        def kill_child(fraction: float) -> None:  # runs in this process at the first report
            assert child.pid is not None
            os.kill(child.pid, signal.SIGKILL)

        with pytest.raises(RuntimeError, match="build process died"):
            child.build(ratings, version=1, progress=kill_child)
        assert child.build(store.rating_arrays(), version=2, rank=2).version == 2


def test_a_service_keeps_one_build_process_and_stops_it_at_shutdown(store: MemoryStore) -> None:
    service = RebuildService(store, executor="process", build_options={"rank": 2})
    child = service._build_process
    assert child is not None
    pids = set()
    for _ in range(2):
        assert service.rebuild_now().status is TaskStatus.COMPLETE
        pids.add(child.pid)
    assert len(pids) == 1 and None not in pids
    service.shutdown(grace=1)
    assert child.pid is None


def test_auto_executor_keeps_small_builds_in_this_process(store: MemoryStore) -> None:
    service = RebuildService(store, build_options={"rank": 2})  # executor="auto"
    assert service.executor == "auto"
    assert service.rebuild_now().status is TaskStatus.COMPLETE
    child = service._build_process
    assert child is not None and child.pid is None  # no child started


def test_auto_executor_moves_big_builds_to_the_build_process(
    store: MemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from labsupport.tasks import executors

    monkeypatch.setattr(executors, "PROCESS_MIN_RATINGS", 1)  # "big" from one rating
    service = RebuildService(store, build_options={"rank": 2})
    child = service._build_process
    assert child is not None and child.pid is not None  # started with the service
    task = service.rebuild_now()
    assert task.status is TaskStatus.COMPLETE and service.model is not None
    service.shutdown(grace=1)
    assert child.pid is None


def test_executor_is_checked(store: MemoryStore) -> None:
    with pytest.raises(ValueError, match="executor"):
        RebuildService(store, executor="gpu")


def test_model_versions_keep_counting_across_restarts(tmp_path: Any) -> None:
    db = tmp_path / "v.db"
    with SQLiteStore(db) as s:
        s.add_movie("Heat", 1995, "Crime")
        s.add_rating(1, 1, 5)
        service = RebuildService(s)
        service.rebuild_now()
        assert service.rebuild_now().model_version == 2
    with SQLiteStore(db) as s:
        again = RebuildService(s)
        assert again.model is None  # models are not persisted, only their history
        assert again.rebuild_now().model_version == 3


def test_reuses_tells_replays_and_joins_from_new_builds(store: MemoryStore) -> None:
    now = [1000.0]
    builder = GatedBuilder()
    service = RebuildService(store, build=builder, idempotency_ttl=60, clock=lambda: now[0])
    assert not service.reuses() and not service.reuses("k")  # nothing yet: a new task
    first, _ = service.request("k")
    assert service.reuses() and service.reuses("other")  # queued: any request joins it
    runner = service.start(first.task_id)
    assert builder.started.wait(5)
    assert service.reuses("k") and not service.reuses() and not service.reuses("other")
    builder.gate.set()
    runner.join(10)
    now[0] += 61  # the key has expired: its next use makes a new task
    assert not service.reuses("k")


def test_task_html_escapes_client_supplied_text() -> None:
    task = Task("<script>alert(1)</script>", TaskStatus.QUEUED, 1.0, idempotency_key="a&b")
    shown = task._repr_html_()
    assert "<script>" not in shown and "&lt;script&gt;" in shown and "a&amp;b" in shown


# ---------------------------------------------------------------- the protocol


def protocol_members() -> dict[str, Any]:
    """The members of `RebuildServiceProtocol`: methods, properties and attributes."""
    members = {
        name: value
        for name, value in vars(RebuildServiceProtocol).items()
        if not name.startswith("_")
    }
    members.update(dict.fromkeys(RebuildServiceProtocol.__annotations__))
    return members


def assert_provides_protocol(service: type[Any] | object) -> None:
    """Check every protocol member is there, called compatibly (mypy checks the types).

    Each method takes the protocol's parameters, under the same names, with a
    default wherever the protocol has one; each property is a property.
    Attributes are checked on instances only.
    """
    cls = service if isinstance(service, type) else type(service)
    for name, wanted in protocol_members().items():
        if wanted is None:  # an attribute (store)
            if not isinstance(service, type):
                assert hasattr(service, name), f"{cls.__name__} has no {name}"
            continue
        assert hasattr(cls, name), f"{cls.__name__} has no {name}"
        found = getattr(cls, name)
        if isinstance(wanted, property):
            assert isinstance(found, property), f"{cls.__name__}.{name} is not a property"
            continue
        have = inspect.signature(found).parameters
        for param in inspect.signature(wanted).parameters.values():
            assert param.name in have, f"{cls.__name__}.{name} lacks {param.name}"
            mine = have[param.name]
            assert mine.kind == param.kind, f"{cls.__name__}.{name}({param.name}) kind"
            if param.default is not inspect.Parameter.empty:
                assert mine.default is not inspect.Parameter.empty, (
                    f"{cls.__name__}.{name}({param.name}) needs a default"
                )


def test_the_protocol_lists_what_the_api_and_the_cli_use() -> None:
    assert set(protocol_members()) == {
        "store", "model", "accepting", "get", "tasks", "ratings_since_build",
        "staleness_seconds", "request", "cancel", "reuses", "start", "wait", "rebuild_now",
        "close", "wait_idle", "shutdown",
    }  # fmt: skip


@pytest.mark.parametrize("cls", [RebuildService, RedisRebuildService])
def test_both_services_provide_the_protocol(cls: type[Any]) -> None:
    # mypy checks the same statically: see _CONFORMS at the end of each service module
    assert_provides_protocol(cls)


def test_a_service_instance_provides_the_protocol(store: MemoryStore) -> None:
    service = RebuildService(store, executor="thread")
    assert_provides_protocol(service)
    conforming: RebuildServiceProtocol = service
    assert conforming.rebuild_now(timeout=10).status is TaskStatus.COMPLETE
    assert conforming.wait(conforming.tasks()[0].task_id, timeout=0).done


# --- a database server that goes away (PostgresStore raises StoreUnavailableError) ----------


class FlakyStore(MemoryStore):
    """A memory store whose task writes fail while `down` is set, as a stopped server's would."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    def save_task(self, task: Any) -> None:
        if self.down:
            raise StoreUnavailableError("the PostgreSQL server is out of reach")
        super().save_task(task)


def flaky_copy(store: MemoryStore) -> FlakyStore:
    flaky = FlakyStore()
    flaky.add_movies((m.title, m.year, m.genre) for m in store.list_movies())
    flaky.add_ratings(store.rating_arrays())
    return flaky


def test_a_request_the_store_refuses_leaves_no_task_and_no_key_behind(store: MemoryStore) -> None:
    flaky = flaky_copy(store)
    service = RebuildService(flaky, task_id_factory=counter_ids())
    flaky.down = True
    with pytest.raises(StoreUnavailableError):
        service.request("key-1")
    assert service.tasks() == [] and not service.reuses("key-1")
    flaky.down = False
    task, created = service.request("key-1")  # a new task, not one that never existed
    assert created and service.get(task.task_id) is not None
    service.start(task.task_id).join(10)
    assert service.get(task.task_id).status is TaskStatus.COMPLETE  # type: ignore[union-attr]
    assert [t["status"] for t in flaky.load_tasks()] == ["complete"]


def test_a_build_that_ends_while_the_store_is_away_still_ends(
    store: MemoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    flaky = flaky_copy(store)
    builder = GatedBuilder()
    service = RebuildService(flaky, build=builder, task_id_factory=counter_ids())
    task, _ = service.request()
    runner = service.start(task.task_id)
    assert builder.started.wait(5)
    flaky.down = True
    builder.gate.set()
    runner.join(10)
    done = service.get(task.task_id)
    assert done is not None and done.status is TaskStatus.COMPLETE  # never stuck on running
    assert service.model is not None and service.model.version == 1
    assert "the store did not record it" in caplog.text
    flaky.down = False  # the store kept "running": a restart reads it interrupted
    restarted = RebuildService(flaky, task_id_factory=counter_ids())
    assert restarted.get(task.task_id).status is TaskStatus.INTERRUPTED  # type: ignore[union-attr]
