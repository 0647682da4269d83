"""The API's rebuild service with its state in Redis, so several API processes share it.

`RedisRebuildService` provides `RebuildServiceProtocol`, like
`RebuildService`, so the API code is the same whichever service it gets; what
both do the same way (closing, the shutdown sequence, the served model, the
default builder) they share through `labsupport.tasks.base.RebuildServiceBase`.
What changes is where things live:

* **Tasks and idempotency keys** are in Redis (`labsupport.scaleout.registry`),
  so a task created through one API process is visible through every other,
  and a key sent to two processes still makes one task.
* **The model** is published to Redis by whoever builds it. Each API process
  keeps the model it serves in memory and a background thread checks the
  `model:current` pointer every `poll_interval` seconds (one small MGET),
  loading a new version off the event loop; a recommendation never waits for Redis.
  Reading a task that completed with a newer model loads that model at once,
  so "complete" through a process means that process serves it.
* **Builds** run either in this process (`queue=None`: a daemon thread, as
  `RebuildService` does; the process holds the task's lease and a crash of
  the process shows as `interrupted`) or on RQ workers (`queue=`
  `RQJobQueue`: `start` only enqueues, and a dead
  RQ worker shows as `failed`). See `labsupport.scaleout.rq`.

Shutting down an API process interrupts only the builds it runs itself;
with RQ, tasks belong to the queue and its workers and carry on.

All times are in seconds.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from labsupport.recommender import Model
from labsupport.scaleout._redis import connect_redis
from labsupport.scaleout.builder import Heartbeat, run_build
from labsupport.scaleout.registry import RedisTaskRegistry
from labsupport.store import Store
from labsupport.tasks.base import RebuildServiceBase, RebuildServiceProtocol
from labsupport.tasks.states import Builder, Task, TaskFinishedError, TaskStatus

__all__ = ["RedisRebuildService"]

logger = logging.getLogger("labsupport.scaleout.service")


class _JobQueue(Protocol):
    """Where a service sends rebuilds that run elsewhere: `RQJobQueue`."""

    def enqueue(self, task_id: str, settings: Mapping[str, Any]) -> None:
        """Queue a job that builds `task_id` with these settings."""

    def stop(self, task_id: str) -> None:
        """Take `task_id`'s job out of the queue, or end it where it runs."""

    def job_state(self, task_id: str, grace: float) -> str | None:
        """Return `None` while the task's job may still run, else why it never will."""


class RedisRebuildService(RebuildServiceBase):
    """A rebuild service whose tasks and model live in Redis, shared with other processes.

    Args:
        store: Where ratings are read from (a SQLite file every process opens).
        registry: The Redis storage (see `from_url` to make both at once).
        queue: Send builds to a job queue instead of running them here.
        build: The builder for builds run here; `build_model` by default.
        build_options: Keyword arguments for `build_model` (`rank`...),
            also sent with queued jobs.
        build_delay: Extra seconds per build, so `running` is visible in class
            (sent with queued jobs too).
        executor: `"auto"`, `"thread"` or `"process"`: where the builds
            of this process run (as in `RebuildService`).
        poll_interval: How often the `model:current` pointer is checked.
        task_id_factory: Makes task ids (random UUIDs by default; ids must be
            unique across every process sharing the Redis).
        owns_client: Close the registry's Redis client at `shutdown`.

    Raises:
        ValueError: `executor` is not one of `EXECUTORS`.
    """

    _logger = logger

    def __init__(
        self,
        store: Store,
        registry: RedisTaskRegistry,
        *,
        queue: _JobQueue | None = None,
        build: Builder | None = None,
        build_options: Mapping[str, Any] | None = None,
        build_delay: float = 0.0,
        executor: str = "auto",
        poll_interval: float = 0.5,
        task_id_factory: Callable[[], str] | None = None,
        owns_client: bool = False,
    ) -> None:
        super().__init__(
            store,
            build=build,
            build_options=build_options,
            build_delay=build_delay,
            executor=executor,
            task_id_factory=task_id_factory,
            builds_here=queue is None,  # with a queue, the RQ workers build
        )
        self.registry = registry
        self.queue = queue
        self.poll_interval = poll_interval
        self._owns_client = owns_client
        self.owner = f"api:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        """This service's lease token: the tasks it builds are held under it."""
        self._lock = threading.Lock()  # one model refresh at a time
        self._mine: set[str] = set()  # unfinished tasks this process builds (and heartbeats)
        self._active = 0  # builds running on this process's threads
        self._stop = threading.Event()
        self.refresh_model()
        self._poller = threading.Thread(
            target=self._poll, name="labsupport-model-poll", daemon=True
        )
        self._poller.start()
        self._heartbeat = Heartbeat(registry, self.owner, self._my_tasks)
        if queue is None:  # this process builds: it keeps its tasks' leases alive
            self._heartbeat.start()

    @classmethod
    def from_url(
        cls,
        url: str,
        store: Store,
        *,
        queue: str = "none",
        prefix: str = "labsupport",
        lease_ttl: float = 10.0,
        **options: Any,
    ) -> RedisRebuildService:
        """Connect to Redis at `url` and make a service on it.

        Args:
            url: A `redis://host:port/db` URL.
            store: Where ratings are read from.
            queue: `"none"` (build in this process) or `"rq"` (enqueue for
                the RQ workers of `python -m labsupport worker`).
            prefix: First part of every key.
            lease_ttl: See `RedisTaskRegistry`.
            **options: Passed to the constructor (`build_delay`, `executor`...).

        Raises:
            ValueError: `queue` is neither `"none"` nor `"rq"`.
            RedisUnavailableError: nothing answered at `url`.
            MissingRedisError: the `redis` package is not installed.
        """
        if queue not in ("none", "rq"):
            msg = f"queue must be 'none' or 'rq', got {queue!r}"
            raise ValueError(msg)
        client = connect_redis(url)
        registry = RedisTaskRegistry(client, prefix=prefix, lease_ttl=lease_ttl)
        job_queue: _JobQueue | None = None
        if queue == "rq":
            from labsupport.scaleout.rq import RQJobQueue

            job_queue = RQJobQueue(client)
        return cls(store, registry, queue=job_queue, owns_client=True, **options)

    def __repr__(self) -> str:
        where = "rq" if self.queue else "this process"
        return f"<RedisRebuildService prefix={self.registry.prefix!r} builds in {where}>"

    # -- reading -----------------------------------------------------------

    def get(self, task_id: str) -> Task | None:
        """Return the task as every process sees it, or `None` if unknown.

        An unfinished task nobody is working on any more is settled first
        (`interrupted` or `failed`), so a dead builder's task never reads
        `running` for longer than the lease TTL.
        """
        task = self.registry.get(task_id)
        if task is not None and not task.done and self._reap(task_id):
            task = self.registry.get(task_id)
        if (
            task is not None
            and task.status is TaskStatus.COMPLETE
            and task.model_version is not None
            and (self._model is None or self._model.version < task.model_version)
        ):
            self.refresh_model()  # "complete" here means this process serves it
        return task

    def tasks(self) -> list[Task]:
        """Return every stored task, oldest first, abandoned ones settled."""
        tasks = self.registry.tasks()
        if any(not t.done and self._reap(t.task_id) for t in tasks):
            tasks = self.registry.tasks()
        return tasks

    def refresh_model(self) -> Model | None:
        """Load the model `model:current` names, if it is not the one served; return it.

        When the named version has expired (or cannot be read) the served
        model stays and a warning is logged.
        """
        with self._lock:
            version, ratings_version = self.registry.current()
            if version is None:
                return self._model
            if self._model is None or self._model.version != version:
                model = self.registry.load_model(version)
                if model is None:
                    logger.warning("model %d is named current but its bytes are gone", version)
                    return self._model
                self._model = model  # the one reference swap readers rely on
            self._model_ratings_version = ratings_version
            return self._model

    # -- asking for a rebuild ------------------------------------------------

    def request(
        self, idempotency_key: str | None = None, *, trigger: str = "manual"
    ) -> tuple[Task, bool]:
        """Ask for a rebuild; return the task that will do it and whether it is new.

        The rules of `RebuildService.request`, kept across processes: a
        key seen within the TTL returns its task (unless it was canceled);
        otherwise a queued task is joined; otherwise a new task is queued,
        marked with its `trigger`. Only a new task needs `start`.

        Raises:
            ServiceClosedError: this process is shutting down.
        """
        self._check_accepting()
        waiting = self.registry.pointer("queued")
        if waiting is not None:
            self._reap(waiting)  # never join a queued task nobody will build
        task_id, created = self.registry.request(
            self._new_id(),
            owner=self.owner,
            runner="rq" if self.queue else "api",
            idempotency_key=idempotency_key,
            trigger=trigger,
        )
        if created and self.queue is None:
            with self._changed:
                self._mine.add(task_id)
        task = self.registry.get(task_id)
        assert task is not None, "a task just queued or joined cannot have expired"
        return task, created

    def reuses(self, idempotency_key: str | None = None) -> bool:
        """Say whether `request` would return a task that exists already.

        It would for a key that made a task (a replay), and whenever a task is
        queued (the request joins it): such requests start no build.
        """
        if idempotency_key is not None and self.registry.task_for_key(idempotency_key):
            return True
        waiting = self.registry.pointer("queued")
        return (
            waiting is not None
            and not self._reap(waiting)
            and (self.registry.get(waiting) is not None)
        )

    def cancel(self, task_id: str) -> Task:
        """Cancel a queued or running rebuild, in whichever process builds it; return it.

        The task reads `canceled` at once, for every process. Its builder
        stops: an RQ job leaves the queue or its worker ends it; a build in
        an API process stops at its next progress report (a build in that
        process's build process is ended at once when it runs here).
        Nothing is published, so the serving model stays as it was.

        Raises:
            KeyError: no task has this id.
            TaskFinishedError: the task is already in a final state.
        """
        before = self.registry.cancel(task_id)
        task = self.registry.get(task_id)
        if before == "missing" or task is None:
            raise KeyError(task_id)
        if before not in ("queued", "running"):
            raise TaskFinishedError(task)
        if self.queue is not None:
            self.queue.stop(task_id)
        elif before == "running" and task_id in self._my_tasks():
            self._stop_build()
        logger.info("rebuild %s canceled", task_id)
        return task

    def start(self, task_id: str) -> threading.Thread | None:
        """Start a new task's build and return at once.

        With a job queue this enqueues the job (and returns `None`);
        otherwise the build runs on a daemon thread of this process, which is
        returned.
        """
        if self.queue is not None:
            self.queue.enqueue(task_id, self.job_settings())
            return None
        return self._start_thread(task_id)

    def job_settings(self) -> dict[str, Any]:
        """Return what a queued job needs to know (JSON values only)."""
        registry = self.registry
        return {
            "prefix": registry.prefix,
            "lease_ttl": registry.lease_ttl,
            "idempotency_ttl": registry.idempotency_ttl,
            "task_ttl": registry.task_ttl,
            "old_model_ttl": registry.old_model_ttl,
            "build_delay": self.build_delay,
            "build_options": self.build_options,
        }

    def rebuild_now(self, timeout: float | None = 600.0) -> Task:
        """Request a rebuild and wait for it (at most `timeout` seconds); return the task.

        Without a job queue a new task is built in the calling thread; with
        one it waits for an RQ worker. `None` waits without a limit. A server
        must not call this from a request handler.
        """
        return super().rebuild_now(timeout)

    def wait(self, task_id: str, timeout: float | None = 600.0) -> Task:
        """Poll until a task reaches a final state or `timeout` seconds pass; return it.

        `None` polls without a limit.

        Raises:
            KeyError: no task has this id.
        """
        deadline = math.inf if timeout is None else time.monotonic() + timeout
        pause = 0.02
        while True:
            task = self.get(task_id)
            if task is None:
                raise KeyError(f"no rebuild task {task_id!r}")
            if task.done or time.monotonic() >= deadline:
                return task
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, 0.2)

    # -- internals ---------------------------------------------------------------

    def _build_now(self, task_id: str, timeout: float | None) -> Task:
        if self.queue is None:
            self._execute(task_id)
        else:
            self.start(task_id)
        return self.wait(task_id, timeout)

    def _idle(self) -> bool:
        return self._active == 0

    def _interrupt_unfinished(self) -> list[Task]:
        # Only tasks this process builds: with a job queue, queued and running
        # tasks belong to the RQ workers and carry on.
        interrupted = []
        error = "the service shut down before this rebuild finished"
        for task_id in self._my_tasks():
            if self.registry.settle(task_id, TaskStatus.INTERRUPTED, error, owner=self.owner):
                task = self.registry.get(task_id)
                if task is not None:
                    interrupted.append(task)
        return interrupted

    def _release(self) -> None:
        self._stop.set()
        self._heartbeat.stop()
        self._poller.join(5)
        if self._build_process is not None:
            self._build_process.close()
        if self._owns_client:
            self.registry.client.close()

    def _my_tasks(self) -> list[str]:
        with self._changed:
            return sorted(self._mine)

    def _reap(self, task_id: str) -> bool:
        job_state = self.queue.job_state if self.queue is not None else None
        return self.registry.reap(task_id, job_state=job_state)

    def _execute(self, task_id: str) -> None:
        with self._changed:
            self._active += 1
        try:
            model = run_build(
                self.registry,
                task_id,
                self.owner,
                store=self.store,
                build=self._build,
                build_delay=self.build_delay,
                should_stop=lambda: not self._accepting,
            )
            if model is not None:
                self._adopt(model)
        finally:
            task = self.registry.get(task_id)
            with self._changed:
                if task is None or task.done:
                    self._mine.discard(task_id)
                self._active -= 1
                self._changed.notify_all()

    def _adopt(self, model: Model) -> None:
        """Serve a model this process just published, without reading its bytes back."""
        with self._lock:
            version, ratings_version = self.registry.current()
            if version == model.version:
                self._model, self._model_ratings_version = model, ratings_version
        if version != model.version:  # a newer one was published meanwhile
            self.refresh_model()

    def _poll(self) -> None:
        import redis

        failing = False
        while not self._stop.wait(self.poll_interval):
            try:
                self.refresh_model()
            except (redis.RedisError, ValueError) as exc:
                if not failing:  # say it once, not every poll
                    logger.warning("cannot check the current model in Redis: %s", exc)
                failing = True
            else:
                failing = False


if TYPE_CHECKING:  # mypy checks that the class provides the protocol the API types against
    _CONFORMS: type[RebuildServiceProtocol] = RedisRebuildService
