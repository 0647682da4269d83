"""A stateful property test of the rebuild service's task state machine.

Hypothesis drives `RebuildService` through random interleavings of
rebuild requests (with and without idempotency keys), builds that succeed or
fail, rating writes, clock jumps, drains, shutdowns and restarts, and checks
after every step that:

* each task's observed snapshots only move forward, `queued -> running ->
  final`, and a final snapshot never changes again, not even across a restart;
* at most one task is running and at most one is queued (coalescing);
* a task is `running` exactly when its build is in flight in the fake builder
  (see `TaskMachine.service_is_consistent` for the precise statement);
* the model version only grows and equals the number of successful builds,
  across restarts too, and a failed or discarded build leaves the model alone;
* an idempotency key within its TTL returns the same task;
* a restart (a new service on the same store, after a shutdown or a crash)
  brings unfinished tasks back `interrupted` and final ones unchanged.

The fake builder blocks every build on its own `threading.Event` until a
rule releases it (oldest first), so Hypothesis, not the scheduler, picks the
interleaving. After each step the test waits (bounded) until the service has
*settled*: every build thread has exited, is blocked in the fake builder, or is
blocked on the service's build lock behind a build that is. A settled service
changes nothing until the next rule, so every check sees a stable state.
"""

from __future__ import annotations

import functools
import itertools
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from labsupport.recommender import Model, build_model
from labsupport.store import MemoryStore, SQLiteStore, Store
from labsupport.tasks import (
    FINAL_STATES,
    RebuildService,
    ServiceClosedError,
    Task,
    TaskStatus,
    counter_ids,
)

TTL = 100.0  # idempotency TTL, in fake-clock seconds
KEYS = ("a", "b", "c")
SETTLE_TIMEOUT = 5.0  # every wait is bounded: a hang fails the example, not the run
GATE_TIMEOUT = 60.0  # a build nobody releases gives up (teardown releases them all)
MAX_SERVICES = 4  # restarts per example, plus one


def _rank(status: TaskStatus) -> int:
    """Position along `queued -> running -> final`."""
    return {TaskStatus.QUEUED: 0, TaskStatus.RUNNING: 1}.get(status, 2)


def _wait_until(predicate: Callable[[], bool], what: str, timeout: float = SETTLE_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting until {what}")
        time.sleep(0.0002)


class BuildFailed(RuntimeError):
    """What a build that was told to fail raises."""


@dataclass(eq=False)
class Build:
    """One call of the fake builder, blocked on its own gate."""

    seq: int  # global order of arrival, across services
    task_id: str
    version: int
    ratings_version: int  # the store's counter when the build began
    gate: threading.Event = field(default_factory=threading.Event)
    ok: bool = True
    released: bool = False
    model: Model | None = None


class FakeBuilder:
    """A builder whose builds wait until released, then succeed or fail.

    The task is known from the build thread's name (`rebuild-<task_id>`, set
    by `RebuildService.start`). `in_flight` counts builds entered and
    not yet returned; a released build returns at once.
    """

    def __init__(self, store: Store, seq: Callable[[], int]) -> None:
        self.store = store
        self._seq = seq
        self._lock = threading.Lock()
        self.builds: list[Build] = []
        self.in_flight = 0
        self.closing = False  # teardown: new builds fail at once

    def __call__(self, ratings: Any, *, version: int, progress: Callable[[float], None]) -> Model:
        name = threading.current_thread().name
        assert name.startswith("rebuild-"), f"build ran on thread {name!r}, not a build thread"
        if self.closing:
            raise BuildFailed("the test is tearing down")
        build = Build(
            self._seq(), name.removeprefix("rebuild-"), version, self.store.ratings_version()
        )
        with self._lock:
            self.in_flight += 1
            self.builds.append(build)
        try:
            progress(0.5)
            if not build.gate.wait(GATE_TIMEOUT):
                raise BuildFailed("nobody released this build")
            if not build.ok:
                raise BuildFailed(f"build of {build.task_id} told to fail")
            build.model = build_model(ratings, version=version, rank=2)
            return build.model
        finally:
            with self._lock:
                self.in_flight -= 1

    def pending(self) -> list[Build]:
        """Builds entered and not yet released, oldest first."""
        with self._lock:
            return [b for b in self.builds if not b.released]

    def entered(self, task_id: str) -> bool:
        with self._lock:
            return any(b.task_id == task_id for b in self.builds)


class CuttableStore:
    """A store proxy whose task writes can be cut off when its process "crashes".

    A crashed service's threads live on in the test process; cutting its writes
    leaves the store holding exactly what a dead process would have left.
    """

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.cut = False

    def save_task(self, task: Any) -> None:
        if not self.cut:
            self.inner.save_task(task)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@dataclass(eq=False)
class Generation:
    """One service "process" on the shared store."""

    index: int
    service: RebuildService
    proxy: CuttableStore
    store: Store
    builder: FakeBuilder
    threads: dict[str, threading.Thread] = field(default_factory=dict)
    closed_at: float | None = None  # time.monotonic() of close() or shutdown()
    shut_down: bool = False  # shutdown() has returned
    crashed: bool = False
    expected_model: Model | None = None
    model_ratings_version: int = 0  # the store's counter when the serving model's build began


@dataclass
class KeyBinding:
    """What the test knows about an idempotency key's current task."""

    task_id: str
    bound_at: float  # fake-clock time the key was first used for this task
    created: bool  # the key created the task (False: it joined a queued one)
    service: int  # index of the service that bound it


class TaskMachine(RuleBasedStateMachine):
    """Random interleavings of requests, builds, ratings, shutdowns and restarts.

    Keys are held to the full idempotency contract: a key returns the same task
    for TTL seconds from its first use, restarts included, whether it created
    that task or joined it while it was queued.
    """

    def __init__(self) -> None:
        super().__init__()
        self.threads_before = set(threading.enumerate())
        self.tmp = Path(tempfile.mkdtemp(prefix="labsupport-sm-"))
        self.kind = "memory"
        self.gens: list[Generation] = []
        self.stores: list[Store] = []
        self.now = 1000.0  # the fake clock every service reads
        self.new_id = counter_ids()  # shared, so ids never repeat across restarts
        self.build_seq = itertools.count(1)
        self.history: dict[str, list[Task]] = {}  # every snapshot seen, per task
        self.successes = 0  # builds that completed their task, across restarts
        self.highest_version = 0
        self.keys: dict[str, KeyBinding] = {}

    # -- services --------------------------------------------------------------

    @initialize(kind=st.sampled_from(["sqlite", "memory"]))
    def setup(self, kind: str) -> None:
        self.kind = kind
        store = self._open_store()
        store.add_movies([("Heat", 1995, "Crime"), ("Up", 2009, "Animation"), ("Alien", 1979, "")])
        for user, movie, score in [(1, 1, 5), (1, 2, 3), (2, 2, 4), (2, 3, 1)]:
            store.add_rating(user, movie, score)
        self._start_service(store)

    def _open_store(self) -> Store:
        if self.kind == "memory":
            store: Store = self.stores[0] if self.stores else MemoryStore()
        else:  # a fresh connection per "process", on the same file
            store = SQLiteStore(self.tmp / "labsupport.db")
        self.stores.append(store)
        return store

    def _start_service(self, store: Store) -> Generation:
        proxy = CuttableStore(store)
        builder = FakeBuilder(store, lambda: next(self.build_seq))
        service = RebuildService(
            proxy,  # type: ignore[arg-type]
            build=builder,
            idempotency_ttl=TTL,
            task_id_factory=self.new_id,
            clock=lambda: self.now,
        )
        gen = Generation(len(self.gens), service, proxy, store, builder)
        self.gens.append(gen)
        return gen

    @property
    def gen(self) -> Generation:
        """The current service."""
        return self.gens[-1]

    # -- observing ---------------------------------------------------------------

    def observe(self, task: Task) -> None:
        """Record a snapshot and check it against the task's earlier ones."""
        seen = self.history.setdefault(task.task_id, [])
        if seen:
            last = seen[-1]
            if last.status in FINAL_STATES:
                assert task == last, f"a final task changed: {last} -> {task}"
            assert _rank(task.status) >= _rank(last.status), f"moved back: {last} -> {task}"
            if task.status is last.status is TaskStatus.RUNNING:
                assert task.progress >= last.progress, f"progress went back: {last} -> {task}"
            assert (task.queued_at, task.idempotency_key) == (last.queued_at, last.idempotency_key)
            if last.started_at is not None:
                assert task.started_at == last.started_at
        if task.status is TaskStatus.QUEUED:
            assert task.started_at is None, task
        elif task.status is not TaskStatus.INTERRUPTED:  # interrupted: started or not
            assert task.started_at is not None and task.queued_at <= task.started_at, task
        assert (task.finished_at is not None) == task.done, task
        if task.finished_at is not None:
            assert (task.started_at or task.queued_at) <= task.finished_at, task
        assert (task.model_version is not None) == (task.status is TaskStatus.COMPLETE), task
        assert (task.error is not None) == (task.status in FINAL_STATES - {TaskStatus.COMPLETE})
        seen.append(task)

    def _settled(self, gen: Generation) -> bool:
        """Whether every build thread of `gen` has exited or is blocked for good.

        A build thread is blocked for good while its build waits in the fake builder,
        or while it has not reached the builder and another build of the same
        service waits there: that build's thread holds the build lock.
        """
        pending = gen.builder.pending()
        for task_id, thread in gen.threads.items():
            if not thread.is_alive() or any(b.task_id == task_id for b in pending):
                continue
            if pending and not gen.builder.entered(task_id):
                continue
            return False
        return True

    def settle(self) -> None:
        for gen in self.gens:
            if not gen.crashed:
                _wait_until(functools.partial(self._settled, gen), f"service #{gen.index} settles")

    # -- rules -------------------------------------------------------------------

    @rule()
    def request(self) -> None:
        """Ask for a rebuild without an idempotency key."""
        self._request(None)

    @rule(key=st.sampled_from(KEYS))
    def request_with_key(self, key: str) -> None:
        """Ask for a rebuild with one of a few idempotency keys."""
        self._request(key)

    def _request(self, key: str | None) -> None:
        gen, service = self.gen, self.gen.service
        if gen.closed_at is not None:
            with pytest.raises(ServiceClosedError):
                service.request(key)
            return
        before = service.tasks()  # settled: nothing changes under us
        queued = [t for t in before if t.status is TaskStatus.QUEUED]
        task, created = service.request(key)
        self.observe(task)

        bound = self.keys.get(key) if key is not None else None
        if bound is not None and self.now - bound.bound_at < TTL:
            assert (task.task_id, created) == (bound.task_id, False), (
                f"key {key!r} was bound to {bound.task_id} at t={bound.bound_at} "
                f"({'created' if bound.created else 'joined'} in service #{bound.service}), "
                f"but at t={self.now} it returned {task.task_id} (created={created}; TTL {TTL})"
            )
        else:  # no binding in force: exactly as without a key
            if queued:
                assert (task.task_id, created) == (queued[0].task_id, False), "no coalescing"
            else:
                assert created and task.status is TaskStatus.QUEUED, task
                assert task.task_id not in {t.task_id for t in before}
                assert (task.idempotency_key, task.queued_at) == (key, self.now)
            if key is not None:
                self.keys[key] = KeyBinding(task.task_id, self.now, created, gen.index)
        if created:
            gen.threads[task.task_id] = service.start(task.task_id)  # as the API does

    def _releasable(self) -> list[Build]:
        builds = [b for g in self.gens if not g.crashed for b in g.builder.pending()]
        return sorted(builds, key=lambda b: b.seq)

    @precondition(lambda self: bool(self._releasable()))
    @rule(ok=st.booleans())
    def release_oldest_build(self, ok: bool) -> None:
        """Let the oldest waiting build (of any live or shut-down service) end."""
        build = self._releasable()[0]
        gen = next(g for g in self.gens if build in g.builder.builds)
        service = gen.service
        before = service.get(build.task_id)
        model_before = service.model
        assert before is not None
        build.ok, build.released = ok, True
        build.gate.set()
        thread = gen.threads[build.task_id]
        thread.join(SETTLE_TIMEOUT)
        assert not thread.is_alive(), "the build thread did not end after its build was released"
        after = service.wait(build.task_id, timeout=0)
        assert after == service.get(build.task_id)
        self.observe(after)
        if before.status is TaskStatus.RUNNING:
            self._check_result(gen, build, after)
        else:  # discarded by shutdown: its result must change nothing
            assert before.status is TaskStatus.INTERRUPTED and gen.shut_down, before
            assert after == before
            assert service.model is model_before

    def _check_result(self, gen: Generation, build: Build, task: Task) -> None:
        """Check the task of a live build that has just ended."""
        if build.ok:
            self.successes += 1
            assert task.status is TaskStatus.COMPLETE and task.progress == 1.0, task
            assert task.model_version == build.version == self.successes, (
                f"build number {build.version} made version {task.model_version}, "
                f"but it is successful build number {self.successes}"
            )
            assert gen.service.model is build.model
            gen.expected_model = build.model
            gen.model_ratings_version = build.ratings_version
        else:
            assert task.status is TaskStatus.FAILED, task
            assert task.error == f"BuildFailed: build of {task.task_id} told to fail"
            assert gen.service.model is gen.expected_model  # the old model keeps serving

    @rule(user=st.integers(1, 4), movie=st.integers(1, 3), score=st.integers(1, 5))
    def add_rating(self, user: int, movie: int, score: int) -> None:
        self.gen.store.add_rating(user, movie, score)

    @rule(seconds=st.sampled_from([1.0, 30.0, 60.0, 99.0, 100.0, 150.0]))
    def advance_clock(self, seconds: float) -> None:
        self.now += seconds

    @precondition(lambda self: self.gen.threads and self.gen.closed_at is None)
    @rule()
    def close(self) -> None:
        """Drain, as a server does first: refuse new rebuilds, let the running one go on."""
        service = self.gen.service
        running = [t for t in service.tasks() if t.status is TaskStatus.RUNNING]
        service.close()
        self.gen.closed_at = time.monotonic()
        assert not service.accepting
        assert service.wait_idle(0) is (not running)

    @precondition(lambda self: self.gen.threads and not self.gen.shut_down)
    @rule(grace=st.sampled_from([0.0, 0.01]), release=st.none() | st.booleans())
    def shutdown(self, grace: float, release: bool | None) -> None:
        """Shut down; unless `release` is None, the running build ends during the grace."""
        gen, service = self.gen, self.gen.service
        unfinished = {t.task_id for t in service.tasks() if not t.done}
        pending = gen.builder.pending()
        helper = None
        seen_during_grace: list[Task | None] = []
        if release is not None and pending:
            build = pending[0]
            grace = 5.0  # shutdown returns as soon as the build is over

            def release_during_grace() -> None:
                _wait_until(lambda: not service.accepting, "shutdown begins")
                seen_during_grace.append(service.get(build.task_id))
                build.ok, build.released = release, True
                build.gate.set()

            helper = threading.Thread(target=release_during_grace, name="test-release")
            helper.start()
        if gen.closed_at is None:
            gen.closed_at = time.monotonic()
        grace_left = gen.closed_at + grace - time.monotonic()
        interrupted = service.shutdown(grace)
        gen.shut_down = True
        finished_in_grace: set[str] = set()
        if helper is not None:
            helper.join(SETTLE_TIMEOUT)
            assert not helper.is_alive()
            # Shutdown had begun and the build was still in flight: its task was running.
            (during,) = seen_during_grace
            assert during is not None and during.status is TaskStatus.RUNNING, during
            self.observe(during)
            gen.threads[build.task_id].join(SETTLE_TIMEOUT)
            finished = service.get(build.task_id)
            assert finished is not None
            if finished.status is not TaskStatus.INTERRUPTED or grace_left > 2.0:
                self.observe(finished)
                self._check_result(gen, build, finished)  # a build within the grace counts
                finished_in_grace.add(build.task_id)
        assert {t.task_id for t in interrupted} == unfinished - finished_in_grace
        for task in interrupted:
            self.observe(task)
            assert task.status is TaskStatus.INTERRUPTED and task.finished_at == self.now, task
        assert all(t.done for t in service.tasks())
        assert not service.accepting
        with pytest.raises(ServiceClosedError):
            service.request()
        assert service.shutdown(grace=0) == []  # a second shutdown changes nothing

    @precondition(
        lambda self: (
            (self.gen.threads or self.gen.closed_at is not None) and len(self.gens) < MAX_SERVICES
        )
    )
    @rule()
    def restart(self) -> None:
        """A new service on the same store: after a shutdown, or after a crash."""
        old = self.gen
        snapshot = old.service.tasks()
        if not old.shut_down:  # the process dies: what it saved is all that is left
            old.proxy.cut = True
            old.crashed = True
        service = self._start_service(self._open_store()).service
        assert service.accepting and service.model is None  # models are not persisted
        restored = service.tasks()
        assert [t.task_id for t in restored] == [t.task_id for t in snapshot]
        for was, now in zip(snapshot, restored, strict=True):
            if was.done:
                assert now == was, f"a final task changed across a restart: {was} -> {now}"
            else:
                assert now.status is TaskStatus.INTERRUPTED and now.error, now
                assert now.finished_at == self.now
                assert (now.queued_at, now.started_at, now.idempotency_key) == (
                    was.queued_at,
                    was.started_at,
                    was.idempotency_key,
                )
            self.observe(now)

    # -- invariants ------------------------------------------------------------------

    @invariant()
    def service_is_consistent(self) -> None:
        """Checked after every step, once every service has settled.

        The running-task property, precisely: in a settled service that has
        not been shut down, the set of `running` tasks *equals* the set of
        tasks whose build is in flight in the fake builder (so a running task
        always has a build behind it, and a build in flight always has its
        task running). Once `shutdown()` has returned no task is running or
        queued, and every build still in flight belongs to an `interrupted`
        task; releasing it later changes neither the task nor the model.
        """
        if not self.gens:
            return
        self.settle()
        gen, service = self.gen, self.gen.service
        tasks = service.tasks()
        for task in tasks:
            self.observe(task)
        running = [t for t in tasks if t.status is TaskStatus.RUNNING]
        queued = [t for t in tasks if t.status is TaskStatus.QUEUED]
        assert len(running) <= 1, f"more than one task running: {running}"
        assert len(queued) <= 1, f"more than one task queued: {queued}"

        pending = gen.builder.pending()
        assert gen.builder.in_flight == len(pending)
        if gen.shut_down:
            assert not running and not queued
            for build in pending:
                discarded = service.get(build.task_id)
                assert discarded is not None, build
                assert discarded.status is TaskStatus.INTERRUPTED, discarded
        else:
            assert {t.task_id for t in running} == {b.task_id for b in pending}
            if gen.closed_at is None:  # (draining: it waits for shutdown instead)
                for task in queued:  # a queued task waits behind the running one
                    assert running and gen.threads[task.task_id].is_alive(), task

        # Model versions: one per successful build, counting across restarts.
        complete = sorted(t.model_version or 0 for t in tasks if t.status is TaskStatus.COMPLETE)
        assert complete == list(range(1, self.successes + 1))
        assert service.model is gen.expected_model
        if service.model is not None:
            assert service.model.version == self.successes >= self.highest_version
            self.highest_version = service.model.version
        assert service.ratings_since_build() == (
            gen.store.ratings_version() - gen.model_ratings_version
        )

        # Services shut down earlier keep their last state, whatever their late builds do.
        for old in self.gens[:-1]:
            if not old.crashed:
                assert old.service.model is old.expected_model
                assert all(t.done for t in old.service.tasks())

    # -- clean-up ----------------------------------------------------------------------

    def teardown(self) -> None:
        try:
            for gen in self.gens:
                gen.builder.closing = True
            for gen in self.gens:
                for build in gen.builder.pending():
                    build.ok, build.released = False, True
                    build.gate.set()
            for gen in self.gens:
                for thread in gen.threads.values():
                    thread.join(SETTLE_TIMEOUT)
            leaked = [t.name for t in set(threading.enumerate()) - self.threads_before]
            assert not leaked, f"threads left running: {leaked}"
        finally:
            for store in dict.fromkeys(self.stores):
                store.close()
            shutil.rmtree(self.tmp, ignore_errors=True)


SETTINGS = settings(
    max_examples=400,
    stateful_step_count=30,
    deadline=None,
    derandomize=True,  # the same examples on every run: deterministic in CI
    database=None,  # nothing saved next to the tests
    suppress_health_check=[HealthCheck.too_slow],
)


def test_task_state_machine() -> None:
    run_state_machine_as_test(TaskMachine, settings=SETTINGS)


# --- regression: an idempotency key that joined a queued task --------------------------
#
# This machine found that a key which *joined* an already-queued task (coalescing)
# was kept in memory only and aged from the task's `queued_at`: a restart forgot
# it and its TTL ended early, so a client retrying after a restart started a second
# rebuild. Shortest sequence:
#     request(); request(); request_with_key("a")  -> "a" joins task-2 (queued)
#     restart()
#     request_with_key("a")                        -> must return task-2
# Fixed by saving joined bindings with their task (`Task.joined_keys`) and
# timing each key from its own first use.


class _Gate:
    """A builder that waits until `event` is set."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def __call__(self, ratings: Any, *, version: int, progress: Any) -> Model:
        assert self.event.wait(SETTLE_TIMEOUT)
        return build_model(ratings, version=version, rank=2)


def _gated_service(
    store: Store, gate: _Gate, clock: Callable[[], float], ids: Callable[[], str]
) -> RebuildService:
    return RebuildService(store, build=gate, idempotency_ttl=TTL, clock=clock, task_id_factory=ids)


def _running_and_queued(service: RebuildService) -> tuple[list[threading.Thread], str]:
    """Make task-1 run and task-2 queue behind it; return the build threads and task-2's id."""
    threads, ids = [], []
    for _ in range(2):
        task, created = service.request()
        assert created
        ids.append(task.task_id)
        threads.append(service.start(task.task_id))

    def first_runs() -> bool:
        first = service.get(ids[0])
        return first is not None and first.status is TaskStatus.RUNNING

    _wait_until(first_runs, "task-1 runs")
    return threads, ids[1]


def test_joined_idempotency_key_survives_a_restart(tmp_path: Path) -> None:
    ids, gate = counter_ids(), _Gate()
    with SQLiteStore(tmp_path / "keys.db") as store:
        service = _gated_service(store, gate, lambda: 1000.0, ids)
        threads, queued = _running_and_queued(service)
        joined, created = service.request("a")  # "a" joins the queued task-2
        assert (joined.task_id, created) == (queued, False)
        service.shutdown(grace=0)
        gate.event.set()
        for thread in threads:
            thread.join(SETTLE_TIMEOUT)
        again = _gated_service(store, _Gate(), lambda: 1000.0, ids)  # the next process
        retried, created = again.request("a")  # the same second: well within the TTL
        assert (retried.task_id, created) == (queued, False)


def test_joined_idempotency_key_lasts_its_full_ttl() -> None:
    now, gate = [1000.0], _Gate()
    service = _gated_service(MemoryStore(), gate, lambda: now[0], counter_ids())
    threads, queued = _running_and_queued(service)  # task-2 queued at t=1000
    now[0] += 60
    joined, _ = service.request("a")  # "a" is first used at t=1060: it joins task-2
    assert joined.task_id == queued
    gate.event.set()
    for thread in threads:
        thread.join(SETTLE_TIMEOUT)
    now[0] += 60  # t=1120: the key is 60 s old, within its 100 s TTL
    retried, created = service.request("a")
    assert (retried.task_id, created) == (queued, False)
