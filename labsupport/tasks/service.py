"""The rebuild service of one process: a task registry, its state machine and the current model.

A rebuild moves through `queued -> running -> complete | failed`; a task that
was queued or running when the service shut down (or crashed) becomes
`interrupted`, and one a client canceled becomes `canceled`. Final states
never change again.

Three rules keep readers safe while a rebuild runs:

* The new model replaces the old one in a single reference assignment, so a
  reader sees the old model or the new one, never half of each. (The seed
  cleared a shared dict and refilled it: a reader in between saw nothing.)
* A build that raises marks its task `failed` and leaves the previous model
  serving.
* The build runs on its own daemon thread, never on the event loop, and only
  one build runs at a time. Asking for a rebuild while one is already queued
  returns that queued task (coalescing), so at most one build runs and one
  waits, however often clients ask.

What `RebuildService` shares with the Redis-backed service (closing,
shutting down, the model, the teaching delay) is in `labsupport.tasks.base`;
where builds run (a thread or a child process) in `labsupport.tasks.executors`.

All times are Unix timestamps in seconds (`time.time()`).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from labsupport.recommender import Model
from labsupport.store import Store, StoreUnavailableError
from labsupport.tasks.base import RebuildServiceBase, RebuildServiceProtocol, build_steps
from labsupport.tasks.executors import uses_build_process
from labsupport.tasks.states import Builder, Task, TaskFinishedError, TaskStatus

__all__ = ["RebuildService"]


class RebuildService(RebuildServiceBase):
    """Own the current model and the rebuild tasks that replace it.

    Args:
        store: where ratings are read from and task records are kept. With a
            SQLite store the task table survives a restart; tasks that were
            queued or running in the previous process come back
            `interrupted`.
        build: the model builder; defaults to
            `labsupport.recommender.build_model` with `build_options`.
        build_options: keyword arguments for the default builder (`rank`...).
        build_delay: extra seconds each build takes, spent in small steps
            that advance `progress`. A teaching knob: it makes the
            `running` state long enough to see on a small catalogue.
        executor: where the default builder runs: `"thread"` (a daemon
            thread in this process: no start-up cost, but it competes with
            request handling for the GIL and the cores), `"process"` (a
            `BuildProcess`: a long-lived child at low priority with
            one BLAS thread, which keeps request latency flat on big data;
            started with the service) or `"auto"` (the default: a thread
            below `PROCESS_MIN_RATINGS` ratings, where a build takes
            a few milliseconds, the child process from there on).
        idempotency_ttl: how long an `Idempotency-Key` keeps returning the
            same task, in seconds.
        task_id_factory: makes task ids; random UUIDs by default.
        clock: the time source (`time.time`).

    Raises:
        ValueError: `executor` is not one of `EXECUTORS`.
    """

    def __init__(
        self,
        store: Store,
        *,
        build: Builder | None = None,
        build_options: Mapping[str, Any] | None = None,
        build_delay: float = 0.0,
        executor: str = "auto",
        idempotency_ttl: float = 24 * 3600.0,
        task_id_factory: Callable[[], str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(
            store,
            build=build,
            build_options=build_options,
            build_delay=build_delay,
            executor=executor,
            task_id_factory=task_id_factory,
        )
        self.idempotency_ttl = idempotency_ttl
        self._clock = clock
        self._build_lock = threading.Lock()
        self._tasks: dict[str, Task] = {}
        self._keys: dict[str, tuple[str, float]] = {}  # key -> (task id, first used at)
        self._last_version = 0  # highest model version ever completed (persisted in tasks)
        self._restore()
        if self._build_process is not None and uses_build_process(executor, store.count_ratings()):
            # Pay the one-off costs now, not inside the first rebuild: the child's
            # start-up, and the store's first full read of the ratings (later
            # reads merge only the rows written since).
            self._build_process.start()
            threading.Thread(
                target=store.rating_arrays, name="warm-ratings-cache", daemon=True
            ).start()

    # -- reading -----------------------------------------------------------

    def get(self, task_id: str) -> Task | None:
        """Return the latest snapshot of a task, or `None` if unknown."""
        with self._changed:
            return self._tasks.get(task_id)

    def tasks(self) -> list[Task]:
        """Return every known task, oldest first."""
        with self._changed:
            return list(self._tasks.values())

    # -- asking for a rebuild --------------------------------------------

    def request(
        self, idempotency_key: str | None = None, *, trigger: str = "manual"
    ) -> tuple[Task, bool]:
        """Ask for a rebuild; return the task that will do it and whether it is new.

        A key seen within `idempotency_ttl` returns the task it created,
        whatever that task's state, except `canceled`: a key whose task was
        canceled starts a new rebuild. Without a key (or with a new one), a
        task that is still queued is returned instead of stacking a second
        one, whoever asked (`trigger`: `"manual"` for a client, `"auto"` for
        the automatic refresh). Only a new task (`True`) needs `start`.

        Raises:
            ServiceClosedError: shutdown has begun; ask again after a restart.
        """
        with self._changed:
            self._check_accepting()
            now = self._clock()
            if idempotency_key is not None:
                known = self._keys.get(idempotency_key)
                if self._replays(known, now):
                    assert known is not None  # for mypy: _replays checked it
                    return self._tasks[known[0]], False
            waiting = next((t for t in self._tasks.values() if t.status is TaskStatus.QUEUED), None)
            if waiting is not None:
                if idempotency_key is not None:
                    # the binding is saved with the task, so it survives a restart
                    joined = (*waiting.joined_keys, (idempotency_key, now))
                    waiting = self._update(waiting, joined_keys=joined)
                    self._keys[idempotency_key] = (waiting.task_id, now)
                return waiting, False
            task = Task(
                self._new_id(),
                TaskStatus.QUEUED,
                now,
                idempotency_key=idempotency_key,
                trigger=trigger,
            )
            self._save(task)  # first: a store that is down leaves no half-made task
            if idempotency_key is not None:
                self._keys[idempotency_key] = (task.task_id, now)
            return task, True

    def reuses(self, idempotency_key: str | None = None) -> bool:
        """Say whether `request` would return a task that exists already.

        It would for a key seen within `idempotency_ttl` (a replay) and
        whenever a task is queued (the request joins it): such requests start
        no build, so a rate limit need not count them.
        """
        with self._changed:
            if idempotency_key is not None and self._replays(
                self._keys.get(idempotency_key), self._clock()
            ):
                return True
            return any(t.status is TaskStatus.QUEUED for t in self._tasks.values())

    def cancel(self, task_id: str) -> Task:
        """Cancel a queued or running rebuild; return it, now `canceled`.

        Either way the task reads `canceled` at once and the serving model
        stays as it was. A running build is also stopped: in the build
        process, by ending that process (the next build starts a new one); in
        a thread, at its next step (a thread cannot be killed), its result
        thrown away.

        Raises:
            KeyError: no task has this id.
            TaskFinishedError: the task is already in a final state.
        """
        with self._changed:
            task = self._tasks[task_id]
            if task.done:
                raise TaskFinishedError(task)
            was_running = task.status is TaskStatus.RUNNING
            canceled = self._update(
                task,
                status=TaskStatus.CANCELED,
                finished_at=self._clock(),
                error="canceled by a client",
            )
        if was_running:
            self._stop_build()
        self._logger.info("rebuild %s canceled", task_id)
        return canceled

    def start(self, task_id: str) -> threading.Thread:
        """Start a queued task's build on a build thread and return at once.

        This is what the API hands to FastAPI's `BackgroundTasks`, so it
        runs after the 202 response has gone out. The numpy work runs on a
        daemon thread owned by this service, never on the event loop, and a
        slow build can neither delay the server's shutdown nor keep the
        process alive at exit (`shutdown` decides what becomes of it).

        Returns:
            The build thread (join it to wait; or use `wait`).
        """
        return self._start_thread(task_id)

    def wait(self, task_id: str, timeout: float | None = None) -> Task:
        """Block until a task reaches a final state (or `timeout` seconds pass); return it.

        Raises:
            KeyError: no task has this id.
        """
        with self._changed:
            self._changed.wait_for(lambda: self._tasks[task_id].done, timeout)
            return self._tasks[task_id]

    # -- internals -----------------------------------------------------------

    def _replays(self, known: tuple[str, float] | None, now: float) -> bool:
        """Whether a key bound to `known` (task id, first used) still returns that task."""
        return (
            known is not None
            and now - known[1] < self.idempotency_ttl
            and self._tasks[known[0]].status is not TaskStatus.CANCELED
        )

    def _idle(self) -> bool:
        return all(t.status is not TaskStatus.RUNNING for t in self._tasks.values())

    def _interrupt_unfinished(self) -> list[Task]:
        return [
            self._record(
                task,
                status=TaskStatus.INTERRUPTED,
                finished_at=self._clock(),
                error="the service shut down before this rebuild finished",
            )
            for task in list(self._tasks.values())
            if not task.done
        ]

    def _execute(self, task_id: str) -> None:
        with self._build_lock:  # one build at a time; a second one waits queued
            with self._changed:
                task = self._tasks[task_id]
                if task.status is not TaskStatus.QUEUED or not self._accepting:
                    return
                self._record(task, status=TaskStatus.RUNNING, started_at=self._clock())
            try:
                built = build_steps(
                    self.store,
                    self._build,
                    version=lambda: self._last_version + 1,
                    progress=lambda f: self._progress(task_id, f),
                    build_delay=self.build_delay,
                    stopped=lambda: self._tasks[task_id].done,
                )
            except Exception as exc:  # any build failure is reported, not raised
                if not self._tasks[task_id].done:  # not canceled meanwhile (the build ended)
                    self._logger.exception("rebuild %s failed", task_id)
                self._finish(task_id, error=f"{type(exc).__name__}: {exc}")
                return
            if built is not None:  # None: interrupted during the delay, nothing built
                self._finish(task_id, model=built[0], ratings_version=built[1])

    def _progress(self, task_id: str, fraction: float) -> None:
        with self._changed:
            task = self._tasks[task_id]
            if task.status is TaskStatus.RUNNING and fraction > task.progress:
                # progress is not persisted: it only matters while the process lives
                self._tasks[task_id] = dataclasses.replace(task, progress=min(fraction, 1.0))

    def _finish(
        self,
        task_id: str,
        *,
        model: Model | None = None,
        ratings_version: int = 0,
        error: str | None = None,
    ) -> None:
        with self._changed:
            task = self._tasks[task_id]
            if task.done:  # interrupted by shutdown meanwhile: keep the final state
                return
            if model is not None:
                self._model = model  # the one reference swap readers rely on
                self._last_version = max(self._last_version, model.version)
                self._model_ratings_version = ratings_version
                self._record(
                    task,
                    status=TaskStatus.COMPLETE,
                    finished_at=self._clock(),
                    progress=1.0,
                    model_version=model.version,
                )
            else:
                self._record(task, status=TaskStatus.FAILED, finished_at=self._clock(), error=error)

    def _update(self, task: Task, **changes: Any) -> Task:
        """Change a task for a caller: if the store refuses the write, nothing changes."""
        new = dataclasses.replace(task, **changes)
        self._save(new)
        return new

    def _save(self, task: Task) -> None:
        with self._changed:
            self.store.save_task(task.to_dict())  # raises StoreUnavailableError: no trace left
            self._tasks[task.task_id] = task
            self._changed.notify_all()

    def _record(self, task: Task, **changes: Any) -> Task:
        """Change a task for its build or for shutdown, which no caller waits on.

        The new state holds here even when the database server is out of
        reach (the build goes on; its task must not stay `running` forever);
        the store gets the record at the task's next save, and a restart
        meanwhile finds the task unfinished and reads it `interrupted`.
        """
        new = dataclasses.replace(task, **changes)
        with self._changed:
            self._tasks[new.task_id] = new
            self._changed.notify_all()
            try:
                self.store.save_task(new.to_dict())
            except StoreUnavailableError as exc:
                self._logger.warning(
                    "rebuild %s is %s, but the store did not record it: %s",
                    new.task_id,
                    new.status.value,
                    exc,
                )
        return new

    def _restore(self) -> None:
        """Load persisted tasks; anything left unfinished by a dead process is interrupted."""
        for data in self.store.load_tasks():
            task = Task.from_dict(data)
            if not task.done:
                task = dataclasses.replace(
                    task,
                    status=TaskStatus.INTERRUPTED,
                    finished_at=task.finished_at or self._clock(),
                    error="the service stopped before this rebuild finished",
                )
                self.store.save_task(task.to_dict())
            self._tasks[task.task_id] = task
            bindings = list(task.joined_keys)
            if task.idempotency_key is not None:
                bindings.append((task.idempotency_key, task.queued_at))
            for key, bound_at in bindings:  # the latest binding of a key wins
                if key not in self._keys or bound_at >= self._keys[key][1]:
                    self._keys[key] = (task.task_id, bound_at)
            if task.model_version is not None:
                # versions keep counting across restarts, so "version 3" names one model
                self._last_version = max(self._last_version, task.model_version)


if TYPE_CHECKING:  # mypy checks that the class provides the protocol the API types against
    _CONFORMS: type[RebuildServiceProtocol] = RebuildService
