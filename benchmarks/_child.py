"""One rebuild measured in a fresh process: ``python -m benchmarks._child SHAPE DESIGN``.

The child makes the synthetic ratings, resets the kernel's peak-RSS mark (so
the data generator's own peak does not count), then runs the build
``--repeats`` times and prints one JSON line: the times, the resident memory
before the build (interpreter, libraries and the ratings) and the peak during
it. ``DESIGN`` is ``sparse`` (:func:`labsupport.recommender.build_model`) or
``seed`` (:func:`labsupport.recommender.seed_build_model`). ``--blas-threads``
caps BLAS threads as the process executor does (``threadpoolctl``).

``DESIGN`` ``store`` measures the path from a store to a model instead: load
the ratings, then time ``rating_arrays()`` (the first full read, and the
incremental read after 1,000 new ratings) and ``build_model`` separately.
``--backend`` picks the store: ``sqlite`` (the default: a
:class:`~labsupport.store.SQLiteStore` in a temporary folder) or ``postgres``
(a :class:`~labsupport.store.postgres.PostgresStore` on a fresh database in a
:class:`~benchmarks._postgres.ThrowawayPostgres` cluster started for the run).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

from benchmarks._common import emit_child_result, peak_rss_mib, reset_peak_rss, rss_mib

__all__ = ["STORE_BACKENDS", "main", "measure_build", "measure_store_path"]

STORE_BACKENDS = ("sqlite", "postgres")
"""The stores :func:`measure_store_path` can time."""


Shape = str | tuple[int, int, int]
"""A key of :data:`labsupport.data.SHAPES`, or ``(n_users, n_movies, n_ratings)``."""


def _ratings(shape: Shape, seed: int) -> Any:
    from labsupport.data import synthetic_ratings, synthetic_shape

    if isinstance(shape, str):
        return synthetic_shape(shape, seed=seed)
    return synthetic_ratings(*shape, seed=seed)


def measure_build(shape: Shape, design: str, *, repeats: int = 1, seed: int = 0) -> dict[str, Any]:
    """Build ``repeats`` times on synthetic ratings of ``shape``; return times and memory.

    Runs in the calling process: the peak is this process's peak since the
    reset, so call it in a fresh process for a clean number (as the
    ``rebuild`` section does).

    Raises:
        ValueError: for an unknown shape or design.
    """
    from labsupport.recommender import build_model, seed_build_model

    builders: dict[str, Callable[[Any], object]] = {
        "sparse": build_model,
        "seed": seed_build_model,
    }
    if design not in builders:
        msg = f"design must be one of {', '.join(builders)}, got {design!r}"
        raise ValueError(msg)
    build = builders[design]
    t0 = time.perf_counter()
    ratings = _ratings(shape, seed)
    generate = time.perf_counter() - t0
    gc.collect()
    baseline = rss_mib()
    reset = reset_peak_rss()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model = build(ratings)
        times.append(time.perf_counter() - t0)
        del model
        gc.collect()
    return {
        "shape": shape if isinstance(shape, str) else list(shape),
        "design": design,
        "n_ratings": len(ratings),
        "seconds": times,
        "generate_seconds": round(generate, 3),
        "baseline_rss_mib": round(baseline, 1) if baseline is not None else None,
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "peak_reset": reset,
    }


@contextlib.contextmanager
def _empty_store(backend: str) -> Iterator[Any]:
    """An empty store of ``backend``, closed and deleted (files, cluster) when the block ends.

    Raises:
        ValueError: for an unknown backend.
        RuntimeError: ``postgres`` when no throwaway cluster can be had here.
    """
    if backend == "sqlite":
        from labsupport.store import SQLiteStore

        with tempfile.TemporaryDirectory(prefix="bench-store-") as folder:
            store = SQLiteStore(os.path.join(folder, "ratings.db"))
            try:
                yield store
            finally:
                store.close()
    elif backend == "postgres":
        from benchmarks._postgres import ThrowawayPostgres, why_unavailable

        reason = why_unavailable()
        if reason is not None:
            msg = f"no throwaway PostgreSQL: {reason}"
            raise RuntimeError(msg)
        from labsupport.store.postgres import PostgresStore

        with ThrowawayPostgres() as cluster:
            store = PostgresStore(cluster.create_database("ratings"))
            try:
                yield store
            finally:
                store.close()
    else:
        msg = f"backend must be one of {', '.join(STORE_BACKENDS)}, got {backend!r}"
        raise ValueError(msg)


def measure_store_path(shape: Shape, backend: str = "sqlite", *, seed: int = 0) -> dict[str, Any]:
    """Time a store's load, ``rating_arrays()`` and ``build_model`` on synthetic ``shape``.

    ``backend`` is ``"sqlite"`` (a file in a temporary folder) or ``"postgres"``
    (a fresh database in a throwaway cluster, stopped before the build, so an
    idle server does not share the CPUs with it).

    Raises:
        ValueError: for an unknown backend.
        RuntimeError: ``postgres`` when no throwaway cluster can be had here
            (:func:`benchmarks._postgres.why_unavailable` says why).
    """
    import numpy as np

    from labsupport._types import RatingArrays
    from labsupport.recommender import build_model

    if backend not in STORE_BACKENDS:  # before making the ratings
        msg = f"backend must be one of {', '.join(STORE_BACKENDS)}, got {backend!r}"
        raise ValueError(msg)
    ratings = _ratings(shape, seed)
    with _empty_store(backend) as store:
        t0 = time.perf_counter()
        store.add_ratings(ratings)
        load = time.perf_counter() - t0
        t0 = time.perf_counter()
        n_loaded = len(store.rating_arrays())
        read = time.perf_counter() - t0
        # what a running service's next rebuild reads: 1,000 new ratings merged in
        rng = np.random.default_rng(seed + 1)
        users, movies = np.unique(ratings.user_ids), np.unique(ratings.movie_ids)
        store.add_ratings(
            RatingArrays.from_columns(
                rng.choice(users, 1_000), rng.choice(movies, 1_000), rng.integers(1, 6, 1_000)
            )
        )
        t0 = time.perf_counter()
        arrays = store.rating_arrays()
        reread = time.perf_counter() - t0
    t0 = time.perf_counter()
    build_model(arrays)
    build = time.perf_counter() - t0
    return {
        "shape": shape if isinstance(shape, str) else list(shape),
        "design": "store",
        "backend": backend,
        "n_ratings": n_loaded,
        "load_seconds": round(load, 3),
        "read_seconds": round(read, 3),
        "build_seconds": round(build, 3),
        "read_share": round(read / (read + build), 3),
        "reread_seconds": round(reread, 3),
        "reread_share": round(reread / (reread + build), 3),
    }


def main(argv: list[str] | None = None) -> int:
    """Measure one build and print it as the last line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks._child")
    parser.add_argument("shape")
    parser.add_argument("design", choices=("sparse", "seed", "store"))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--blas-threads", type=int, default=0, help="0: library default")
    parser.add_argument(
        "--backend",
        choices=STORE_BACKENDS,
        default="sqlite",
        help="the store the design 'store' reads from (default: sqlite)",
    )
    args = parser.parse_args(argv)
    if args.backend != "sqlite" and args.design != "store":
        parser.error("--backend only applies to the design 'store'")
    limit: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    if args.blas_threads:
        from threadpoolctl import threadpool_limits

        limit = threadpool_limits(limits=args.blas_threads)
    with limit:
        if args.design == "store":
            result = measure_store_path(args.shape, args.backend)
        else:
            result = measure_build(args.shape, args.design, repeats=args.repeats)
    result["blas_threads"] = args.blas_threads or None
    emit_child_result(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
