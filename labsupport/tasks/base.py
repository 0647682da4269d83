"""What a rebuild service provides, and the behaviour every rebuild service shares.

`RebuildServiceProtocol` is what the API (`create_app`) and the command line
type against. Two classes provide it:

* `labsupport.tasks.service.RebuildService` keeps its tasks and its model in
  this process (and the task records in its store);
* `labsupport.scaleout.service.RedisRebuildService` keeps them in Redis, so
  several API processes share them.

Both derive from `RebuildServiceBase`, which holds what they do the same way:
the serving model and its one-reference swap, refusing new rebuilds once
`close` ran, the shutdown sequence (close, let running builds finish within
the grace period, interrupt the rest), build threads, the default builder
and the teaching delay (`build_steps`). What differs, where tasks live and
how a build claims its task, each subclass writes itself.

All times are in seconds.
"""

from __future__ import annotations

import abc
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Protocol

from labsupport.recommender import Model
from labsupport.store import Store
from labsupport.tasks.executors import BuildProcess, build_where, check_executor
from labsupport.tasks.states import Builder, ServiceClosedError, Task

__all__ = ["RebuildServiceBase", "RebuildServiceProtocol", "build_steps"]


class RebuildServiceProtocol(Protocol):
    """What the API and the command line need from a rebuild service.

    `RebuildService` (this process) and
    `labsupport.scaleout.service.RedisRebuildService` (several processes over
    Redis) both provide it; code typed against it runs on either.
    """

    store: Store

    @property
    def model(self) -> Model | None:
        """The serving model, or `None` before the first build."""

    @property
    def accepting(self) -> bool:
        """Whether new rebuilds are accepted (false once `close` ran)."""

    def get(self, task_id: str) -> Task | None:
        """The task with this id, or `None` when there is none."""

    def tasks(self) -> list[Task]:
        """Every task this service knows, oldest first."""

    def ratings_since_build(self) -> int:
        """How many ratings arrived since the serving model was built."""

    def staleness_seconds(self) -> float | None:
        """The age of the oldest rating the serving model has not seen (`None`: none)."""

    def request(
        self, idempotency_key: str | None = None, *, trigger: str = "manual"
    ) -> tuple[Task, bool]:
        """Queue a rebuild or join the one queued; return it and whether it is new."""

    def cancel(self, task_id: str) -> Task:
        """Cancel a queued or running rebuild; return it, now `canceled`."""

    def reuses(self, idempotency_key: str | None = None) -> bool:
        """Whether `request` with this key would return an existing task."""

    def start(self, task_id: str) -> threading.Thread | None:
        """Run a queued task's build in the background (the thread, if it runs here)."""

    def wait(self, task_id: str, timeout: float | None = None) -> Task:
        """Wait until a task is final or `timeout` seconds pass (`None`: no limit); return it."""

    def rebuild_now(self, timeout: float | None = None) -> Task:
        """Build at once and wait for the result (for scripts and start-up)."""

    def close(self) -> None:
        """Refuse new rebuilds from now on."""

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no build runs here; return whether that happened in time."""

    def shutdown(self, grace: float = 5.0) -> list[Task]:
        """Stop: wait up to `grace` seconds, then mark unfinished tasks interrupted."""


def _uuid_id() -> str:
    return str(uuid.uuid4())


class RebuildServiceBase(abc.ABC):
    """The serving model, closing, shutting down and building: written once for both services.

    A subclass says where its tasks live (`get`, `tasks`, `request`,
    `reuses`, `wait`), how one build runs (`_execute`), when nothing is
    building (`_idle`) and what shutdown interrupts (`_interrupt_unfinished`).

    Args:
        store: Where ratings are read from.
        build: The model builder; `build_model` with `build_options` (run
            where `executor` says) by default.
        build_options: Keyword arguments for the default builder (`rank`...).
        build_delay: Extra seconds each build takes (a teaching knob).
        executor: One of `EXECUTORS`: where the default builder runs.
        task_id_factory: Makes task ids; random UUIDs by default.
        builds_here: Whether builds run in this process at all; a
            `BuildProcess` is made only then, for the default builder, and
            unless `executor` is `"thread"`.

    Raises:
        ValueError: `executor` is not one of `EXECUTORS`.
    """

    _logger: ClassVar[logging.Logger] = logging.getLogger("labsupport.tasks")

    def __init__(
        self,
        store: Store,
        *,
        build: Builder | None = None,
        build_options: Mapping[str, Any] | None = None,
        build_delay: float = 0.0,
        executor: str = "auto",
        task_id_factory: Callable[[], str] | None = None,
        builds_here: bool = True,
    ) -> None:
        check_executor(executor)
        self.store = store
        self.build_options = dict(build_options or {})
        self.build_delay = build_delay
        self.executor = executor
        self._build: Builder = build or self._default_build
        # a custom builder runs where it likes; only the default one needs the child
        local = builds_here and build is None and executor != "thread"
        self._build_process = BuildProcess() if local else None
        self._new_id = task_id_factory or _uuid_id
        self._changed = threading.Condition()  # guards the state below; notified on changes
        self._accepting = True
        self._closed_at = 0.0
        self._model: Model | None = None
        self._model_ratings_version = 0

    # -- reading -----------------------------------------------------------

    @property
    def model(self) -> Model | None:
        """The model this process serves (`None` before the first build)."""
        return self._model

    @property
    def accepting(self) -> bool:
        """Whether new rebuilds are accepted (false once shutdown has begun)."""
        return self._accepting

    def ratings_since_build(self) -> int:
        """Return how many rating writes happened since the serving model's build."""
        return max(0, self.store.ratings_version() - self._model_ratings_version)

    def staleness_seconds(self) -> float | None:
        """Return the age of the oldest rating the serving model has not seen, in seconds.

        `None` when the model has seen every rating (or there are none).
        Before the first build every rating is unseen.
        """
        written = self.store.oldest_unseen_write(self._model_ratings_version)
        return None if written is None else max(0.0, time.time() - written)

    @abc.abstractmethod
    def get(self, task_id: str) -> Task | None:
        """Return the latest snapshot of a task, or `None` if unknown."""

    @abc.abstractmethod
    def tasks(self) -> list[Task]:
        """Return every known task, oldest first."""

    # -- asking for a rebuild ----------------------------------------------

    @abc.abstractmethod
    def request(
        self, idempotency_key: str | None = None, *, trigger: str = "manual"
    ) -> tuple[Task, bool]:
        """Ask for a rebuild; return the task that will do it and whether it is new."""

    @abc.abstractmethod
    def cancel(self, task_id: str) -> Task:
        """Cancel a queued or running rebuild; return it, now `canceled`.

        Raises:
            KeyError: no task has this id.
            TaskFinishedError: the task is already in a final state.
        """

    @abc.abstractmethod
    def wait(self, task_id: str, timeout: float | None = None) -> Task:
        """Block until a task reaches a final state (or `timeout` seconds pass)."""

    def rebuild_now(self, timeout: float | None = None) -> Task:
        """Request a rebuild, build it if it is new, and wait for it; return the task.

        A new task is built at once (see `_build_now`); a task that existed
        already (one was queued) is waited for, at most `timeout` seconds
        (`None`: no limit). Useful in scripts, tests and notebook cells that
        simply want a fresh model; a server must not call this from a
        request handler.
        """
        task, created = self.request()
        if created:
            return self._build_now(task.task_id, timeout)
        return self.wait(task.task_id, timeout)

    def _build_now(self, task_id: str, timeout: float | None) -> Task:
        """Build a task `rebuild_now` just created, in the calling thread; return it."""
        self._execute(task_id)
        final = self.get(task_id)
        assert final is not None, "a task just built cannot be unknown"
        return final

    def _check_accepting(self) -> None:
        """Raise `ServiceClosedError` once `close` ran."""
        if not self._accepting:
            msg = "the service is shutting down and accepts no new rebuilds"
            raise ServiceClosedError(msg)

    def _start_thread(self, task_id: str) -> threading.Thread:
        """Run `_execute(task_id)` on a new daemon thread, named after the task; return it.

        A daemon thread: a slow build can neither delay the server's
        shutdown nor keep the process alive at exit (`shutdown` decides
        what becomes of its task).
        """
        thread = threading.Thread(
            target=self._execute, args=(task_id,), name=f"rebuild-{task_id}", daemon=True
        )
        thread.start()
        return thread

    # -- shutting down -----------------------------------------------------

    def close(self) -> None:
        """Refuse new rebuilds from now on; builds already running carry on.

        A server calls this the moment it is asked to stop, then keeps
        answering (new rebuilds get 503) while `wait_idle` lets a
        running build finish, and finally calls `shutdown`.
        """
        with self._changed:
            if self._accepting:
                self._accepting = False
                self._closed_at = time.monotonic()
                self._changed.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no build runs here (or `timeout` seconds pass); return whether idle."""
        with self._changed:
            return self._changed.wait_for(self._idle, timeout)

    def shutdown(self, grace: float = 5.0) -> list[Task]:
        """Refuse new rebuilds, wait up to `grace` seconds, interrupt the rest.

        The grace period counts from `close` when that was called
        earlier, so a server that drained first does not wait twice.

        Returns:
            The tasks marked `interrupted`. A build still running finishes
            on its daemon thread (or dies with the process) and is discarded:
            a final state is never overwritten.
        """
        self.close()
        with self._changed:
            self._changed.wait_for(self._idle, max(0.0, self._closed_at + grace - time.monotonic()))
            interrupted = self._interrupt_unfinished()
        if interrupted:
            self._logger.warning(
                "interrupted %d unfinished rebuild(s) at shutdown", len(interrupted)
            )
        self._release()
        return interrupted

    def _stop_build(self) -> None:
        """End the build running in the build process, if one is (its task was canceled)."""
        if self._build_process is not None:
            self._build_process.cancel()

    def _release(self) -> None:
        """Free what the service holds, last step of `shutdown`: here, the build process."""
        if self._build_process is not None:
            self._build_process.close(timeout=0.5)  # a build still running there is discarded

    @abc.abstractmethod
    def _idle(self) -> bool:
        """Whether no build runs in this process (called with `_changed` held)."""

    @abc.abstractmethod
    def _interrupt_unfinished(self) -> list[Task]:
        """Mark this service's unfinished tasks `interrupted`; return them (`_changed` held)."""

    # -- building ----------------------------------------------------------

    @abc.abstractmethod
    def _execute(self, task_id: str) -> None:
        """Build one queued task in the calling thread; failures are recorded, not raised."""

    def _default_build(
        self, ratings: Any, *, version: int, progress: Callable[[float], None]
    ) -> Model:
        return build_where(
            self.executor,
            self._build_process,
            ratings,
            version=version,
            progress=progress,
            **self.build_options,
        )


def build_steps(
    store: Store,
    build: Builder,
    *,
    version: Callable[[], int],
    progress: Callable[[float], None],
    build_delay: float = 0.0,
    stopped: Callable[[], bool] = lambda: False,
    steps: int = 10,
) -> tuple[Model, int] | None:
    """Read the ratings, spend the teaching delay, build: the middle of every build.

    Progress goes from 0 to 0.5 during `build_delay` (in `steps` sleeps) and
    from 0.5 to 1 during the build itself. Exceptions from `build` or
    `progress` propagate: the caller records the failure.

    Args:
        store: Where the ratings are read from.
        build: The model builder.
        version: Returns the new model's version, asked just before building.
        progress: Called with the task's progress, from 0 to 1.
        build_delay: Extra seconds spent before building (a teaching knob).
        stopped: Checked before each step of the delay and before building:
            `True` gives up (the task was interrupted meanwhile).
        steps: How many sleeps the delay is cut into.

    Returns:
        The model and the ratings counter it was built from, or `None` when
        `stopped` said to give up.
    """
    ratings_version = store.ratings_version()
    ratings = store.rating_arrays()
    if build_delay > 0:
        for i in range(1, steps + 1):
            if stopped():  # interrupted: stop pretending to work
                return None
            time.sleep(build_delay / steps)
            progress(0.5 * i / steps)
    if stopped():
        return None
    model = build(ratings, version=version(), progress=lambda f: progress(0.5 + f / 2))
    return model, ratings_version
