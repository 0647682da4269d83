"""Where a build runs: in the calling thread, or in a long-lived child process.

A build in a thread of the API process competes with request handling for
the GIL and the cores. `BuildProcess` moves it to one child process started
with `spawn`, running at lower priority with one BLAS thread, so the server
keeps answering quickly while it works; `build_where` picks one or the other
(`executor="auto"` switches at `PROCESS_MIN_RATINGS` ratings).

The hand-over never pickles big arrays through the pipe, because pickling
and unpickling hold the GIL for the whole copy:

* the ratings go to the child in one block of shared memory, the three
  columns back to back (`_column_views`);
* the model comes back as a pickle of a few kB through the pipe, its arrays
  in a second shared block that the parent copies out and unlinks
  (`_pack`, `_unpack`);
* every copy goes a few MiB at a time (`_copy_in_chunks`), so the server's
  thread never waits long for the GIL.

The benchmarks in `benchmarks/` measure what each of these buys.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import pickle
import threading
from collections.abc import Callable
from multiprocessing import shared_memory
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import numpy.typing as npt
from threadpoolctl import threadpool_limits

from labsupport._types import RatingArrays, as_rating_arrays
from labsupport.recommender import Model, build_model

__all__ = [
    "EXECUTORS",
    "PROCESS_MIN_RATINGS",
    "BuildProcess",
    "build_where",
    "check_executor",
    "uses_build_process",
]

EXECUTORS = ("auto", "thread", "process")
"""Where a rebuild service can run its builds."""

PROCESS_MIN_RATINGS = 100_000
"""From this many ratings, `executor="auto"` builds in a `BuildProcess`.

Below it a build takes milliseconds, less than the round trip to a child
process; above it, a build in a thread holds the GIL and a core long enough
to slow requests down (see `benchmarks/`).
"""

_COLUMNS = (("user_ids", np.int64), ("movie_ids", np.int64), ("scores", np.float32))
_CHUNK = 1 << 22  # 4 MiB: a copy this size takes about a millisecond


def check_executor(executor: str) -> None:
    """Raise `ValueError` unless `executor` is one of `EXECUTORS`."""
    if executor not in EXECUTORS:
        msg = f"executor must be one of {', '.join(map(repr, EXECUTORS))}, got {executor!r}"
        raise ValueError(msg)


def uses_build_process(executor: str, n_ratings: int) -> bool:
    """Whether a build of `n_ratings` ratings goes to the build process, when there is one.

    `"process"` always does, `"auto"` from `PROCESS_MIN_RATINGS` ratings. (A
    service whose executor is `"thread"` has no build process at all.)
    """
    return executor == "process" or n_ratings >= PROCESS_MIN_RATINGS


def build_where(
    executor: str,
    build_process: BuildProcess | None,
    ratings: Any,
    *,
    version: int,
    progress: Callable[[float], None],
    **options: Any,
) -> Model:
    """Build a model where `executor` says: in `build_process`, or in this thread.

    See `uses_build_process` for the choice. Without a `build_process` the
    build always runs in the calling thread, with one BLAS thread, so the
    other core stays free for requests.

    Args:
        executor: One of `EXECUTORS`.
        build_process: The child to build in, if the service has one.
        ratings: What `build_model` takes (a `RatingArrays` or a data frame).
        version: The new model's version.
        progress: Called with the build's progress, from 0 to 1.
        **options: Keyword arguments for `build_model` (`rank`...).

    Returns:
        The new model.
    """
    if build_process is not None and uses_build_process(executor, len(ratings)):
        return build_process.build(ratings, version=version, progress=progress, **options)
    with threadpool_limits(limits=1):
        return build_model(ratings, version=version, progress=progress, **options)


# ---------------------------------------------------------------- the hand-over


def _column_views(buffer: Any, n: int) -> list[npt.NDArray[Any]]:
    """Lay the three rating columns out back to back in one shared buffer."""
    views, offset = [], 0
    for _, dtype in _COLUMNS:
        views.append(np.ndarray((n,), dtype=dtype, buffer=buffer, offset=offset))
        offset += n * np.dtype(dtype).itemsize
    return views


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
    copying it into the pickle, so the pickle stays a few kB; the arrays (most
    of their bytes are the rated matrix) travel in shared memory, which the
    parent copies out in chunks and unlinks. Unpickling one big pickle instead
    held the parent's GIL long enough to stall every request.
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


# ---------------------------------------------------------------- the child process


class BuildProcess:
    """One long-lived child process that builds models for this process.

    The child runs at lower priority (`nice` 10) with BLAS limited to one
    thread, so a server in this process keeps answering quickly while it
    works; threads alone cannot promise that, because of the GIL. It is
    started once (with `spawn`, which is safe in a process that runs
    threads) and reused: starting Python with numpy and scipy is expensive,
    and paying that at every rebuild put the start-up, not the build, inside
    the window where requests slowed down. A child that dies is replaced at
    the next build.

    The ratings travel in one block of shared memory rather than pickled
    through the pipe, which would hold the GIL for the whole copy. The
    finished model comes back the same way: a pickle of a few kB through the
    pipe, its arrays in a shared block (see `_pack`). Both copies go a few
    MiB at a time, so the server's thread never waits long for the GIL.
    """

    def __init__(self) -> None:
        self._ctx = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()  # one build at a time through the pipe
        self._proc: Any = None
        self._conn: Connection | None = None
        self._building = False  # a build is in the child now (what `cancel` ends)

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
                    self._building = True
                    conn.send((shm.name, n, version, options))
                    return self._receive(conn, progress)
                except (EOFError, OSError):
                    code = self._proc.exitcode if self._proc is not None else None
                    self._stop_child()
                    msg = f"the build process died (exit code {code}) before finishing"
                    raise RuntimeError(msg) from None
                finally:
                    self._building = False
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

    def cancel(self) -> bool:
        """End the child in the middle of a build; return whether a build was running.

        The build in progress raises `RuntimeError` at once, and the next one
        starts a new child. An idle child is left alone.
        """
        proc = self._proc
        if not self._building or proc is None or not proc.is_alive():
            return False
        proc.kill()
        return True

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
