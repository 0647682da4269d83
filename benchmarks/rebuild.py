"""Section ``rebuild``: build time and peak memory against the number of ratings.

Every measurement runs in a fresh process (:mod:`benchmarks._child`), so
each gets its own peak RSS (``VmHWM``, reset after the synthetic data is
made: the peak covers the interpreter, the libraries, the ratings and the
build). Designs:

``sparse``
    :func:`labsupport.recommender.build_model` with the library's BLAS
    threads (what ``executor="thread"`` runs).
``sparse-1blas``
    The same with one BLAS thread (what ``executor="process"`` runs).
``seed``
    :func:`labsupport.recommender.seed_build_model`: dense matrix filled by
    a Python double loop, full ``np.linalg.svd``. Only where it fits
    (ml-100k and ml-1m).

Small shapes are built three times in their process and reported by the
median (the first build pays one-off costs such as loading ARPACK); the
``seed`` design, which takes seconds, once.
The ``store`` row times the path from a SQLite file to a model at ml-1m;
``store_postgres`` the same from a fresh database in a throwaway PostgreSQL
cluster (:mod:`benchmarks._postgres`), or records why none could be started
here (``{"skipped": reason}``: not a failure, its target is left unjudged).
"""

from __future__ import annotations

from typing import Any

from benchmarks._common import Column, fmt, median, run_json_child
from benchmarks._postgres import why_unavailable
from labsupport.data import SHAPES

__all__ = ["COLUMNS", "DEFAULTS", "run"]

DEFAULTS: dict[str, Any] = {
    "shapes": ["ml-100k", "ml-1m", "ml-10m", "ml-25m"],
    "seed_shapes": ["ml-100k", "ml-1m"],
    "one_blas_shapes": ["ml-100k", "ml-1m", "ml-10m"],
    "store_shape": "ml-1m",
    "store_backends": ["sqlite", "postgres"],  # results keys "store" and "store_postgres"
    "repeats_up_to": 1_100_000,  # shapes with at most this many ratings are built 3 times
    "timeout": 900.0,
}

SPEEDUP_TARGET = 20.0
TIME_TARGET_25M = 120.0
MEMORY_TARGET_25M_MIB = 6 * 1024

NOTES = [
    "peak RSS is the whole build process (interpreter, libraries, the ratings and the build); "
    "VmHWM is reset after the synthetic ratings are made",
    "'seed / this' is the seed design's build time divided by this row's, at the same shape",
    "the PostgreSQL store row uses a throwaway local cluster (benchmarks/_postgres.py: "
    "loopback TCP, fsync off), stopped before the build",
]

COLUMNS: list[Column] = [
    ("shape", "shape", fmt("")),
    ("design", "design", fmt("")),
    ("n_ratings", "ratings", fmt(",d")),
    ("seconds", "build s", fmt(".2f")),
    ("min_seconds", "min s", fmt(".2f")),
    ("runs", "runs", fmt("d")),
    ("baseline_rss_mib", "RSS before MiB", fmt(",.0f")),
    ("peak_rss_mib", "peak RSS MiB", fmt(",.0f")),
    ("vs_seed", "seed / this", fmt(".1f")),
    ("status", "status", fmt("")),
]

STORE_COLUMNS: list[Column] = [
    ("shape", "shape", fmt("")),
    ("n_ratings", "ratings", fmt(",d")),
    ("load_seconds", "SQLite load s", fmt(".2f")),
    ("read_seconds", "first read s", fmt(".2f")),
    ("reread_seconds", "read +1k s", fmt(".3f")),
    ("build_seconds", "build s", fmt(".2f")),
    ("read_share", "first read share", fmt(".0%")),
    ("reread_share", "read +1k share", fmt(".0%")),
]


def _measure(shape: str, design: str, cfg: dict[str, Any]) -> dict[str, Any]:
    base = "seed" if design == "seed" else "sparse"
    repeats = 3 if SHAPES[shape][2] <= cfg["repeats_up_to"] and design != "seed" else 1
    args = ["benchmarks._child", shape, base, "--repeats", str(repeats)]
    if design == "sparse-1blas":
        args += ["--blas-threads", "1"]
    raw = run_json_child(args, timeout=cfg["timeout"])
    row: dict[str, Any] = {"shape": shape, "design": design, "n_ratings": SHAPES[shape][2]}
    if "error" in raw:
        row.update(status=f"failed: {raw['error']}", wall=round(raw["wall"], 1))
        return row
    times = raw["seconds"]
    row.update(
        seconds=round(median(times), 3),
        min_seconds=round(min(times), 3),
        first_seconds=round(times[0], 3),
        runs=len(times),
        all_seconds=[round(t, 3) for t in times],
        baseline_rss_mib=raw["baseline_rss_mib"],
        peak_rss_mib=raw["peak_rss_mib"],
        peak_reset=raw["peak_reset"],
        generate_seconds=raw["generate_seconds"],
        wall=round(raw["wall"], 1),
        status="ok",
    )
    return row


def run(settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Measure every shape and design in fresh processes; return the section's result."""
    cfg = {**DEFAULTS, **(settings or {})}
    rows = []
    for shape in cfg["shapes"]:
        designs = ["sparse"]
        if shape in cfg["one_blas_shapes"]:
            designs.append("sparse-1blas")
        if shape in cfg["seed_shapes"]:
            designs.append("seed")
        for design in designs:
            row = _measure(shape, design, cfg)
            print(
                f"  {shape} {design}: {row.get('seconds')} s, {row.get('peak_rss_mib')} MiB",
                flush=True,
            )
            rows.append(row)
    by = {(r["shape"], r["design"]): r for r in rows}
    for row in rows:
        seed = by.get((row["shape"], "seed"))
        if seed and seed.get("seconds") and row.get("seconds") and row["design"] != "seed":
            row["vs_seed"] = round(seed["seconds"] / row["seconds"], 1)
    stores: dict[str, dict[str, Any]] = {}
    if cfg["store_shape"]:
        for backend in cfg["store_backends"]:
            stores[backend] = _measure_store(cfg["store_shape"], backend, cfg)
    return {
        "title": "Rebuild cost against scale (fresh process per build)",
        "settings": cfg,
        "rows": rows,
        "store": stores.get("sqlite", {}),
        "store_postgres": stores.get("postgres", {}),
        "targets": _targets(by, stores.get("sqlite", {}), stores.get("postgres", {})),
        "notes": NOTES,
    }


def _measure_store(shape: str, backend: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """One store row in a fresh process; for PostgreSQL, the reason when no cluster can be had."""
    if backend == "postgres":
        reason = why_unavailable()
        if reason is not None:
            print(f"  store path {shape} postgres: SKIPPED: {reason}", flush=True)
            return {"shape": shape, "design": "store", "backend": backend, "skipped": reason}
    raw = run_json_child(
        ["benchmarks._child", shape, "store", "--backend", backend], timeout=cfg["timeout"]
    )
    print(f"  store path {shape} {backend}: {raw}", flush=True)
    return {"shape": shape, "design": "store", "backend": backend, **raw}


def _postgres_target(store: dict[str, Any]) -> dict[str, Any]:
    """The PostgreSQL row's target: judged on a measurement, unjudged (None) when skipped."""
    target: dict[str, Any] = {
        "name": "PostgreSQL: incremental read after 1,000 new ratings under half of read plus "
        f"build at {str(store.get('shape', '')).upper()}",
        "target": "< 50 % of read + build",
    }
    if store.get("reread_share") is not None:
        share = store["reread_share"]
        return {
            **target,
            "measured": f"{share:.0%} ({store['reread_seconds']:.3f} s to merge 1,000 new "
            f"ratings, {store['build_seconds']:.2f} s build; the first full read, at start-up: "
            f"{store['read_seconds']:.2f} s = {store['read_share']:.0%})",
            "value": share,
            "met": share < 0.5,
        }
    if store.get("skipped"):
        return {**target, "measured": f"skipped: {store['skipped']}", "value": None, "met": None}
    return {**target, "measured": f"failed: {store.get('error')}", "value": None, "met": False}


def _targets(
    by: dict[tuple[str, str], dict[str, Any]],
    store: dict[str, Any],
    store_postgres: dict[str, Any] | None = None,
) -> list[Any]:
    targets: list[dict[str, Any]] = []
    fast, seed = by.get(("ml-1m", "sparse")), by.get(("ml-1m", "seed"))
    if fast and seed and fast.get("seconds") and seed.get("seconds"):
        speedup = seed["seconds"] / fast["seconds"]
        targets.append(
            {
                "name": "ml-1m speed-up over the seed's design",
                "target": f">= {SPEEDUP_TARGET:.0f}x",
                "measured": f"{speedup:.1f}x ({seed['seconds']:.1f} s / {fast['seconds']:.2f} s)",
                "value": round(speedup, 2),
                "met": speedup >= SPEEDUP_TARGET,
            }
        )
    big = by.get(("ml-25m", "sparse"))
    if big is not None:
        seconds, peak = big.get("seconds"), big.get("peak_rss_mib")
        targets.append(
            {
                "name": "ml-25m build time",
                "target": f"< {TIME_TARGET_25M:.0f} s",
                "measured": f"{seconds:.1f} s" if seconds else big["status"],
                "value": seconds,
                "met": bool(seconds and seconds < TIME_TARGET_25M),
            }
        )
        targets.append(
            {
                "name": "ml-25m peak RSS",
                "target": f"< {MEMORY_TARGET_25M_MIB / 1024:.0f} GiB",
                "measured": f"{peak / 1024:.2f} GiB" if peak else big["status"],
                "value": peak,
                "met": bool(peak and peak < MEMORY_TARGET_25M_MIB),
            }
        )
    if store.get("reread_share") is not None:
        # A service reads the whole table once, when it starts (RebuildService
        # warms the cache then); each rebuild reads only the rows written since.
        targets.append(
            {
                "name": "ml-1m SQLite read vs build, per rebuild",
                "target": "reading ratings does not dominate (< 50 % of read + build)",
                "measured": f"{store['reread_share']:.0%} "
                f"({store['reread_seconds']:.3f} s to merge 1,000 new ratings, "
                f"{store['build_seconds']:.2f} s build; the first full read, at start-up: "
                f"{store['read_seconds']:.2f} s = {store['read_share']:.0%})",
                "value": store["reread_share"],
                "met": store["reread_share"] < 0.5,
            }
        )
    if store_postgres:
        targets.append(_postgres_target(store_postgres))
    return targets
