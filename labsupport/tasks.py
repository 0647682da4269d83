"""The rebuild service: a task registry, its state machine and the current model.

A rebuild moves through `queued -> running -> complete | failed`; a task that
was queued or running when the service shut down (or crashed) becomes
`interrupted`. Final states never change again.

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

All times are Unix timestamps in seconds (`time.time()`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import html
import itertools
import logging
import multiprocessing
import pickle
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from multiprocessing import shared_memory
from multiprocessing.connection import Connection
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from threadpoolctl import threadpool_limits

from labsupport._types import RatingArrays, as_rating_arrays
from labsupport.recommender import Model, build_model
from labsupport.store import Store

__all__ = [
    "EXECUTORS",
    "FINAL_STATES",
    "PROCESS_MIN_RATINGS",
    "BuildProcess",
    "RebuildService",
    "RebuildServiceProtocol",
    "ServiceClosedError",
    "Task",
    "TaskStatus",
    "build_where",
    "counter_ids",
]

logger = logging.getLogger("labsupport.tasks")


class TaskStatus(str, enum.Enum):
    """Where a rebuild task is in its life."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"
    INTERRUPTED = "interrupted"

    def __str__(self) -> str:
        return self.value


FINAL_STATES = frozenset({TaskStatus.COMPLETE, TaskStatus.FAILED, TaskStatus.INTERRUPTED})


@dataclass(frozen=True)
class Task:
    """An immutable snapshot of one rebuild task.

    The service replaces the snapshot on every change, so a reader can never
    see a status and a timestamp from two different moments.
    """

    task_id: str
    status: TaskStatus
    queued_at: float
    started_at: float | None = None
    finished_at: float | None = None
    progress: float = 0.0
    error: str | None = None
    idempotency_key: str | None = None
    model_version: int | None = None
    # Keys that joined this task while it was queued, each with when it was first used.
    joined_keys: tuple[tuple[str, float], ...] = ()

    @property
    def done(self) -> bool:
        """Whether the task is in a final state."""
        return self.status in FINAL_STATES

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict (the shape stored and served by the API)."""
        data = dataclasses.asdict(self)
        data["status"] = self.status.value
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Task:
        """Rebuild a task from `to_dict` output (unknown keys ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in data.items() if k in names}
        fields["status"] = TaskStatus(fields["status"])
        fields["joined_keys"] = tuple((str(k), float(t)) for k, t in fields.get("joined_keys", ()))
        return cls(**fields)

    def _repr_html_(self) -> str:
        # ids and keys can come from clients (X-Task-Id, Idempotency-Key): escape them
        rows = "".join(
            f"<tr><th style='text-align:left'>{k}</th><td>{html.escape(str(v))}</td></tr>"
            for k, v in self.to_dict().items()
            if v is not None and v != ()
        )
        return f"<table>{rows}</table>"


class Builder(Protocol):
    """What `RebuildService` calls to build a model."""

    def __call__(
        self, ratings: Any, *, version: int, progress: Callable[[float], None]
    ) -> Model: ...


_COLUMNS = (("user_ids", np.int64), ("movie_ids", np.int64), ("scores", np.float32))


def _column_views(buffer: Any, n: int) -> list[npt.NDArray[Any]]:
    """Lay the three rating columns out back to back in one shared buffer."""
    views, offset = [], 0
    for _, dtype in _COLUMNS:
        views.append(np.ndarray((n,), dtype=dtype, buffer=buffer, offset=offset))
        offset += n * np.dtype(dtype).itemsize
    return views


def _build_one(
    conn: Connection, shm_name: str, n: int, version: int, options: dict[str, Any]
) -> None:
    """In the child: build one model from shared memory and report over `conn`."""
    shm = shared_memory.SharedMemory(name=shm_name)
    try:
        ratings = RatingArrays(*_column_views(shm.buf, n))
        with threadpool_limits(limits=1):  # one BLAS thread: leave a core to the server
            model = build_model(
                ratings,
                version=version,
                progress=lambda f: conn.send(("progress", f)),
                **options,
            )
        del ratings  # release the views before the shared block is closed
        conn.send(("done", _pack(model)))
    except Exception as exc:  # reported to the parent, which marks the task failed
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        shm.close()


_CHUNK = 1 << 22  # 4 MiB: a copy this size takes about a millisecond


def _copy_in_chunks(dst: Any, src: Any) -> None:
    """Copy the bytes of one buffer into another of the same size, a few MiB at a time.

    Each slice is one short memcpy, so another thread (the server's event
    loop) never waits long for the GIL, however big the buffers are.
    """
    to, of = np.frombuffer(dst, dtype=np.uint8), np.frombuffer(src, dtype=np.uint8)
    for start in range(0, of.size, _CHUNK):
        to[start : start + _CHUNK] = of[start : start + _CHUNK]


def _pack(model: Model) -> tuple[bytes, str, list[int]]:
    """In the child: pickle `model` with its arrays' bytes in a new shared block.

    Pickle protocol 5 hands each array's data to `buffer_callback` instead of
    copying it into the pickle, so the pickle stays a few kB; the arrays (100 MB
    at ML-10M, most of it the rated matrix) travel in shared memory, which the
    parent copies out in chunks and unlinks. Unpickling a 100 MB pickle instead
    held the parent's GIL for about 20 ms: a visible stall for every request.
    """
    buffers: list[pickle.PickleBuffer] = []
    payload = pickle.dumps(model, protocol=5, buffer_callback=buffers.append)
    raws = [buffer.raw() for buffer in buffers]
    sizes = [raw.nbytes for raw in raws]
    block = shared_memory.SharedMemory(create=True, size=max(sum(sizes), 1))
    try:
        shared, offset = block.buf, 0
        assert shared is not None  # None only once closed
        for raw in raws:
            _copy_in_chunks(shared[offset : offset + raw.nbytes], raw)
            offset += raw.nbytes
        return payload, block.name, sizes
    finally:
        block.close()  # the block outlives this mapping until the parent unlinks it


def _unpack(payload: bytes, name: str, sizes: list[int]) -> Model:
    """In the parent: rebuild the model from its pickle and its shared block, then unlink it."""
    block = shared_memory.SharedMemory(name=name)
    try:
        shared, buffers, offset = block.buf, [], 0
        assert shared is not None  # None only once closed
        for size in sizes:
            data = bytearray(size)
            _copy_in_chunks(data, shared[offset : offset + size])
            buffers.append(data)
            offset += size
    finally:
        block.close()
        block.unlink()
    model: Model = pickle.loads(payload, buffers=buffers)
    return dataclasses.replace(model)  # __post_init__ makes the arrays read-only again


def _child_main(conn: Connection) -> None:
    """The build process's life: lower its priority, then build whatever it is sent."""
    import os

    os.nice(10)  # the API process keeps priority for the CPU
    with conn:
        while True:
            try:
                request = conn.recv()
            except EOFError:  # the parent went away
                return
            if request is None:  # asked to stop
                return
            _build_one(conn, *request)


class BuildProcess:
    """One long-lived child process that builds models for this process.

    The child runs at lower priority (`nice` 10) with BLAS limited to one
    thread, so a server in this process keeps answering quickly while it
    works; threads alone cannot promise that, because of the GIL. It is
    started once (with `spawn`, which is safe in a process that runs
    threads) and reused: starting Python with numpy and scipy costs about a
    second of CPU, and paying that at every rebuild put the start-up, not
    the build, inside the window where requests slowed down. A child that
    dies is replaced at the next build.

    The ratings travel in one block of shared memory rather than pickled
    through the pipe, which would hold the GIL for a fifth of a second at
    ML-10M size. The finished model comes back the same way: a pickle of a
    few kB through the pipe, its arrays in a shared block (see `_pack`).
    Both copies go a few MiB at a time, so the server's thread never waits
    long for the GIL.
    """

    def __init__(self) -> None:
        self._ctx = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()  # one build at a time through the pipe
        self._proc: Any = None
        self._conn: Connection | None = None

    @property
    def pid(self) -> int | None:
        """The child's process id, or `None` when no child is running."""
        return self._proc.pid if self._proc is not None and self._proc.is_alive() else None

    def start(self) -> None:
        """Start the child now (it imports numpy in the background) unless it runs already."""
        with self._lock:
            self._ensure_started()

    def _ensure_started(self) -> Connection:
        if self._proc is not None and self._proc.is_alive() and self._conn is not None:
            return self._conn
        self._stop_child()
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(
            target=_child_main, args=(child,), name="labsupport-build", daemon=True
        )
        proc.start()
        child.close()
        self._proc, self._conn = proc, parent
        return parent

    def build(
        self,
        ratings: Any,
        *,
        version: int,
        progress: Callable[[float], None] | None = None,
        **options: Any,
    ) -> Model:
        """Build a model in the child and return it (`options` go to `build_model`).

        Raises:
            RuntimeError: the build raised in the child (its message is kept),
                or the child died without an answer.
        """
        columns = as_rating_arrays(ratings)
        n = len(columns)
        size = sum(n * np.dtype(dtype).itemsize for _, dtype in _COLUMNS)
        shm = shared_memory.SharedMemory(create=True, size=max(size, 1))
        try:
            for view, (name, dtype) in zip(_column_views(shm.buf, n), _COLUMNS, strict=True):
                # in the view's dtype: a RatingArrays may hold, say, float64 scores
                _copy_in_chunks(view, np.ascontiguousarray(getattr(columns, name), dtype=dtype))
            del view  # no view may outlive the block
            with self._lock:
                conn = self._ensure_started()
                try:
                    conn.send((shm.name, n, version, options))
                    return self._receive(conn, progress)
                except (EOFError, OSError):
                    code = self._proc.exitcode if self._proc is not None else None
                    self._stop_child()
                    msg = f"the build process died (exit code {code}) before finishing"
                    raise RuntimeError(msg) from None
        finally:
            shm.close()
            shm.unlink()

    @staticmethod
    def _receive(conn: Connection, progress: Callable[[float], None] | None) -> Model:
        while True:
            kind, value = conn.recv()
            if kind == "progress" and progress is not None:
                progress(float(value))
            elif kind == "done":
                return _unpack(*value)
            elif kind == "error":
                raise RuntimeError(value)

    def close(self, timeout: float = 2.0) -> None:
        """Ask the child to stop; kill it if it is still busy after `timeout` seconds."""
        acquired = self._lock.acquire(timeout=timeout)
        try:
            if acquired and self._conn is not None:
                with contextlib.suppress(OSError):
                    self._conn.send(None)
            self._stop_child(timeout)
        finally:
            if acquired:
                self._lock.release()

    def _stop_child(self, timeout: float = 0.0) -> None:
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if proc is not None:
            proc.join(timeout)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
            proc.close()
        if conn is not None:
            conn.close()

    def __enter__(self) -> BuildProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


EXECUTORS = ("auto", "thread", "process")
"""Where `RebuildService` can run its builds."""

PROCESS_MIN_RATINGS = 100_000
"""From this many ratings, `executor="auto"` builds in a `BuildProcess`.

Below it a build takes milliseconds (ml-100k: about 50 ms), less than the
round trip to a child process; above it, a build in a thread holds the GIL
and a core long enough to slow requests down (see `benchmarks/`).
"""


def build_where(
    executor: str,
    worker: BuildProcess | None,
    ratings: Any,
    *,
    version: int,
    progress: Callable[[float], None],
    **options: Any,
) -> Model:
    """Build a model where `executor` says: in `worker`, or in this thread.

    `"process"` always uses the build process, `"auto"` from
    `PROCESS_MIN_RATINGS` ratings; otherwise (or without a `worker`)
    the build runs in the calling thread with one BLAS thread, so the other
    core stays free for requests (measured at ML-1M: p99 during a build 3.5x
    -> 2.3x idle, throughput 57 % -> 72 % of idle).
    """
    if worker is not None and (executor == "process" or len(ratings) >= PROCESS_MIN_RATINGS):
        return worker.build(ratings, version=version, progress=progress, **options)
    with threadpool_limits(limits=1):
        return build_model(ratings, version=version, progress=progress, **options)


class ServiceClosedError(RuntimeError):
    """Raised by `RebuildService.request` once shutdown has begun."""


def counter_ids(prefix: str = "task-") -> Callable[[], str]:
    """Return a factory of readable, deterministic task ids: `task-1`, `task-2`...

    Notebooks use it so printed ids are the same on every run; the default
    factory makes random UUIDs, which is what a real service wants.
    """
    counter = itertools.count(1)
    return lambda: f"{prefix}{next(counter)}"


def _uuid_id() -> str:
    return str(uuid.uuid4())


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

    def request(self, idempotency_key: str | None = None) -> tuple[Task, bool]:
        """Queue a rebuild or join the one queued; return it and whether it is new."""

    def reuses(self, idempotency_key: str | None = None) -> bool:
        """Whether `request` with this key would return an existing task."""

    def start(self, task_id: str) -> threading.Thread | None:
        """Run a queued task's build in the background."""

    def rebuild_now(self) -> Task:
        """Build at once and wait for the result (for scripts and start-up)."""

    def close(self) -> None:
        """Refuse new rebuilds from now on."""

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no build runs here; return whether that happened in time."""

    def shutdown(self, grace: float = 5.0) -> list[Task]:
        """Stop: wait up to `grace` seconds, then mark unfinished tasks interrupted."""


class RebuildService:
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
        self.store = store
        self._options = dict(build_options or {})
        self._build: Builder = build or self._default_build
        self.build_delay = build_delay
        if executor not in EXECUTORS:
            msg = f"executor must be one of {', '.join(map(repr, EXECUTORS))}, got {executor!r}"
            raise ValueError(msg)
        self.executor = executor
        # a custom builder runs where it likes; only the default one needs the child
        self._worker = None if executor == "thread" or build is not None else BuildProcess()
        self.idempotency_ttl = idempotency_ttl
        self._new_id = task_id_factory or _uuid_id
        self._clock = clock
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._build_lock = threading.Lock()
        self._tasks: dict[str, Task] = {}
        self._keys: dict[str, tuple[str, float]] = {}  # key -> (task id, first used at)
        self._model: Model | None = None
        self._model_ratings_version = 0
        self._last_version = 0  # highest model version ever completed (persisted in tasks)
        self._accepting = True
        self._closed_at = 0.0
        self._restore()
        if self._worker is not None and (
            executor == "process" or store.count_ratings() >= PROCESS_MIN_RATINGS
        ):
            # Pay the one-off costs now, not inside the first rebuild: the child's
            # start-up, and the store's first full read of the ratings (later
            # reads merge only the rows written since).
            self._worker.start()
            threading.Thread(
                target=store.rating_arrays, name="warm-ratings-cache", daemon=True
            ).start()

    # -- reading -----------------------------------------------------------

    @property
    def model(self) -> Model | None:
        """The model currently serving (`None` before the first build)."""
        return self._model

    @property
    def accepting(self) -> bool:
        """Whether new rebuilds are accepted (false once shutdown has begun)."""
        return self._accepting

    def get(self, task_id: str) -> Task | None:
        """Return the latest snapshot of a task, or `None` if unknown."""
        with self._lock:
            return self._tasks.get(task_id)

    def tasks(self) -> list[Task]:
        """Return every known task, oldest first."""
        with self._lock:
            return list(self._tasks.values())

    def ratings_since_build(self) -> int:
        """Return how many rating writes happened since the serving model's build."""
        return max(0, self.store.ratings_version() - self._model_ratings_version)

    # -- asking for a rebuild --------------------------------------------

    def request(self, idempotency_key: str | None = None) -> tuple[Task, bool]:
        """Ask for a rebuild; return the task that will do it and whether it is new.

        A key seen within `idempotency_ttl` returns the task it created,
        whatever that task's state. Without a key (or with a new one), a task
        that is still queued is returned instead of stacking a second one.
        Only a new task (`True`) needs `start` to be called.

        Raises:
            ServiceClosedError: shutdown has begun; ask again after a restart.
        """
        with self._lock:
            if not self._accepting:
                msg = "the service is shutting down and accepts no new rebuilds"
                raise ServiceClosedError(msg)
            now = self._clock()
            if idempotency_key is not None:
                known = self._keys.get(idempotency_key)
                if known is not None and now - known[1] < self.idempotency_ttl:
                    return self._tasks[known[0]], False
            waiting = next((t for t in self._tasks.values() if t.status is TaskStatus.QUEUED), None)
            if waiting is not None:
                if idempotency_key is not None:
                    # the binding is saved with the task, so it survives a restart
                    self._keys[idempotency_key] = (waiting.task_id, now)
                    joined = (*waiting.joined_keys, (idempotency_key, now))
                    waiting = self._update(waiting, joined_keys=joined)
                return waiting, False
            task = Task(self._new_id(), TaskStatus.QUEUED, now, idempotency_key=idempotency_key)
            if idempotency_key is not None:
                self._keys[idempotency_key] = (task.task_id, now)
            self._save(task)
            return task, True

    def reuses(self, idempotency_key: str | None = None) -> bool:
        """Say whether `request` would return a task that exists already.

        It would for a key seen within `idempotency_ttl` (a replay) and
        whenever a task is queued (the request joins it): such requests start
        no build, so a rate limit need not count them.
        """
        with self._lock:
            if idempotency_key is not None:
                known = self._keys.get(idempotency_key)
                if known is not None and self._clock() - known[1] < self.idempotency_ttl:
                    return True
            return any(t.status is TaskStatus.QUEUED for t in self._tasks.values())

    def start(self, task_id: str) -> threading.Thread:
        """Start a queued task's build on a worker thread and return at once.

        This is what the API hands to FastAPI's `BackgroundTasks`, so it
        runs after the 202 response has gone out. The numpy work runs on a
        daemon thread owned by this service, never on the event loop, and a
        slow build can neither delay the server's shutdown nor keep the
        process alive at exit (`shutdown` decides what becomes of it).

        Returns:
            The worker thread (join it to wait; or use `wait`).
        """
        worker = threading.Thread(
            target=self._execute, args=(task_id,), name=f"rebuild-{task_id}", daemon=True
        )
        worker.start()
        return worker

    def rebuild_now(self) -> Task:
        """Request a rebuild and run it in the calling thread; return the final task.

        Useful in scripts, tests and notebook cells that simply want a fresh
        model. A server must not call this from a request handler.
        """
        task, created = self.request()
        if created:
            self._execute(task.task_id)
        else:
            self.wait(task.task_id)
        final = self.get(task.task_id)
        assert final is not None
        return final

    def wait(self, task_id: str, timeout: float | None = None) -> Task:
        """Block until a task reaches a final state (or `timeout` seconds pass)."""
        with self._changed:
            self._changed.wait_for(lambda: self._tasks[task_id].done, timeout)
            return self._tasks[task_id]

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
        """Wait until no task is running (or `timeout` seconds pass); return whether idle."""
        with self._changed:
            return self._changed.wait_for(self._idle, timeout)

    def _idle(self) -> bool:
        return all(t.status is not TaskStatus.RUNNING for t in self._tasks.values())

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
            remaining = self._closed_at + grace - time.monotonic()
            self._changed.wait_for(self._idle, max(0.0, remaining))
            interrupted = []
            for task in list(self._tasks.values()):
                if not task.done:
                    interrupted.append(
                        self._update(
                            task,
                            status=TaskStatus.INTERRUPTED,
                            finished_at=self._clock(),
                            error="the service shut down before this rebuild finished",
                        )
                    )
        if interrupted:
            logger.warning("interrupted %d unfinished rebuild(s) at shutdown", len(interrupted))
        if self._worker is not None:
            self._worker.close(timeout=0.5)  # a build still running there is discarded anyway
        return interrupted

    # -- internals -----------------------------------------------------------

    def _default_build(
        self, ratings: Any, *, version: int, progress: Callable[[float], None]
    ) -> Model:
        return build_where(
            self.executor,
            self._worker,
            ratings,
            version=version,
            progress=progress,
            **self._options,
        )

    def _execute(self, task_id: str) -> None:
        with self._build_lock:  # one build at a time; a second one waits queued
            with self._lock:
                task = self._tasks[task_id]
                if task.status is not TaskStatus.QUEUED or not self._accepting:
                    return
                self._update(task, status=TaskStatus.RUNNING, started_at=self._clock())
            try:
                ratings_version = self.store.ratings_version()
                ratings = self.store.rating_arrays()
                self._pause(task_id)
                if self._tasks[task_id].done:  # interrupted during the pause: don't build
                    return
                version = self._last_version + 1
                model = self._build(
                    ratings,
                    version=version,
                    progress=lambda f: self._progress(task_id, 0.5 + f / 2),
                )
            except Exception as exc:  # any build failure is reported, not raised
                logger.exception("rebuild %s failed", task_id)
                self._finish(task_id, error=f"{type(exc).__name__}: {exc}")
                return
            self._finish(task_id, model=model, ratings_version=ratings_version)

    def _pause(self, task_id: str, steps: int = 10) -> None:
        """Spend `build_delay` seconds (the teaching knob), moving progress to 0.5."""
        if self.build_delay <= 0:
            return
        for i in range(1, steps + 1):
            if self._tasks[task_id].done:  # interrupted by shutdown: stop pretending to work
                return
            time.sleep(self.build_delay / steps)
            self._progress(task_id, 0.5 * i / steps)

    def _progress(self, task_id: str, fraction: float) -> None:
        with self._lock:
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
                self._update(
                    task,
                    status=TaskStatus.COMPLETE,
                    finished_at=self._clock(),
                    progress=1.0,
                    model_version=model.version,
                )
            else:
                self._update(task, status=TaskStatus.FAILED, finished_at=self._clock(), error=error)

    def _update(self, task: Task, **changes: Any) -> Task:
        new = dataclasses.replace(task, **changes)
        self._save(new)
        return new

    def _save(self, task: Task) -> None:
        with self._changed:
            self._tasks[task.task_id] = task
            self.store.save_task(task.to_dict())
            self._changed.notify_all()

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
