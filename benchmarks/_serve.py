"""A benchmark server process: several variants of the movie API on loopback ports.

Run by :mod:`benchmarks.responsiveness` and :mod:`benchmarks.serving` as
``python -m benchmarks._serve --shape ml-1m --variants thread,process``. It
fills one :class:`~labsupport.store.MemoryStore` with synthetic ratings,
builds one model, and serves one app per variant with
:func:`labsupport.server.serve_in_thread` (127.0.0.1, free ports). All
variants share the store and the starting model; the load generator measures
them one after the other, never at the same time. It prints one JSON line
(``BENCHJSON {"ports": {...}}``) once every server accepts connections, and
stops when its stdin closes.

Variants:

``thread`` / ``process``
    :func:`labsupport.api.create_app` around a
    :class:`~labsupport.tasks.RebuildService` whose builder
    (:class:`FirstThenBuild`) builds as that executor does: ``POST
    /recommender/rebuild`` runs the package's rebuild.
``seed-sync`` / ``seed-async``
    The same app plus the seed's scheduling, added here as a throwaway
    route: ``POST /seed/rebuild`` returns 202 and hands a background task to
    FastAPI's ``BackgroundTasks`` that reads the ratings and runs
    :func:`~labsupport.recommender.build_model`. ``seed-sync`` uses a plain
    ``def`` task (Starlette runs it in its thread pool), ``seed-async`` an
    ``async def`` task, which runs on the event loop itself. Both use the
    package's fast build, so only the scheduling differs from ``thread``.
    ``GET /seed/rebuild/{task_id}`` reports ``{status, started_at, finished_at}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import itertools
import multiprocessing
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from fastapi import BackgroundTasks, FastAPI

from benchmarks._common import emit_child_result
from labsupport.api import create_app
from labsupport.data import synthetic_shape
from labsupport.recommender import Model, build_model
from labsupport.server import serve_in_thread
from labsupport.store import MemoryStore
from labsupport.tasks import BuildProcess, RebuildService

__all__ = ["VARIANTS", "FirstThenBuild", "main", "make_app"]

VARIANTS = ("thread", "process", "seed-sync", "seed-async")


class FirstThenBuild:
    """A rebuild function: the prebuilt model on the first call, then the package's own build.

    Passing this as ``RebuildService(build=...)`` lets the first
    ``rebuild_now()`` install a model built once for all variants; every
    later call does exactly what ``RebuildService``'s default builder does
    for ``executor`` (``build_model`` here, or a long-lived
    :class:`~labsupport.tasks.BuildProcess`, started now as the service
    starts its own).
    """

    def __init__(self, first: Model, executor: str) -> None:
        self._first: Model | None = first
        self.executor = executor
        self._worker = BuildProcess() if executor == "process" else None
        if self._worker is not None:
            self._worker.start()

    def __call__(self, ratings: Any, *, version: int, progress: Callable[[float], None]) -> Model:
        if self._first is not None:
            model, self._first = self._first, None
            return dataclasses.replace(model, version=version)
        if self._worker is not None:
            return self._worker.build(ratings, version=version, progress=progress)
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1):  # as RebuildService's thread executor does
            return build_model(ratings, version=version, progress=progress)


def _add_seed_routes(app: FastAPI, store: MemoryStore, *, use_async: bool) -> None:
    """Add the seed's ``POST /seed/rebuild`` (a BackgroundTasks build) to ``app``.

    Every POST starts a build, as in the seed (no coalescing); ``GET
    /seed/rebuild/{task_id}`` reports ``{status, started_at, finished_at}``.
    """
    runs: dict[str, dict[str, Any]] = {}
    numbers = itertools.count(1)
    latest: dict[str, Model] = {}

    def run_rebuild_task(task_id: str) -> None:  # the seed's task: a plain def, in a thread
        runs[task_id].update(status="running", started_at=time.time())
        latest["model"] = build_model(store.rating_arrays())
        runs[task_id].update(status="complete", finished_at=time.time())

    async def run_rebuild_task_async(task_id: str) -> None:  # the same in an async def: on the loop
        run_rebuild_task(task_id)

    @app.post("/seed/rebuild", status_code=202)
    async def seed_rebuild(background: BackgroundTasks) -> dict[str, str]:
        task_id = str(next(numbers))
        runs[task_id] = {"status": "queued", "started_at": None, "finished_at": None}
        background.add_task(run_rebuild_task_async if use_async else run_rebuild_task, task_id)
        return {"task_id": task_id, "status": "queued"}

    @app.get("/seed/rebuild/{task_id}")
    def seed_status(task_id: str) -> dict[str, Any]:
        return runs.get(task_id, {"status": "unknown", "started_at": None, "finished_at": None})


def make_app(variant: str, store: MemoryStore, model: Model) -> FastAPI:
    """Return the app for one variant, already serving ``model``."""
    executor = variant if variant == "process" else "thread"
    service = RebuildService(store, build=FirstThenBuild(model, executor))
    service.rebuild_now()  # installs the prebuilt model as version 1
    app = create_app(store, service=service, shutdown_grace=0.5)
    if variant.startswith("seed-"):
        _add_seed_routes(app, store, use_async=variant == "seed-async")
    return app


def main(argv: list[str] | None = None) -> int:
    """Serve the variants until stdin closes."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks._serve")
    parser.add_argument("--shape", required=True)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    variants = args.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")

    started = time.perf_counter()
    ratings = synthetic_shape(args.shape, seed=args.seed)
    store = MemoryStore()
    store.add_ratings(ratings)
    del ratings
    loaded = time.perf_counter()
    model = build_model(store.rating_arrays(), seed=args.seed)
    built = time.perf_counter()
    handles = {v: serve_in_thread(make_app(v, store, model), log_level="warning") for v in variants}
    # The store's upsert index holds one entry per rating (10M at ML-10M); a full
    # garbage collection walks it in ~20 ms, which showed up as idle-window p99
    # outliers. A long-lived server holding millions of objects should do the same.
    gc.collect()
    gc.freeze()
    emit_child_result(
        {
            "ports": {v: h.port for v, h in handles.items()},
            "pid": os.getpid(),
            "n_users": model.n_users,
            "n_movies": model.n_movies,
            "n_ratings": model.n_ratings,
            "load_seconds": round(loaded - started, 2),
            "build_seconds": round(built - loaded, 2),
        }
    )
    sys.stdin.read()  # the parent closes stdin to stop us
    for handle in handles.values():
        handle.stop(timeout=3.0)
    for child in multiprocessing.active_children():  # a process-executor build still running
        child.kill()
    sys.stdout.flush()
    os._exit(0)  # do not wait for a build thread that is still running


if __name__ == "__main__":
    sys.exit(main())
