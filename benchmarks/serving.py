"""Section ``serving``: what a recommendation costs next to a health check.

One server process (:mod:`benchmarks._serve`, variant ``thread``, synthetic
ml-1m, a model already built) answers ``GET /health`` and ``GET
/recommendations/{random user}`` in turns (health, recommendations, health,
recommendations: alternating cancels slow drift), each a wrk window
(``-t1 -c8``), after a 1 s warm-up on ``/health``. A row's req/s is the mean
of its windows, its latencies and CPU shares their medians (``max_ms`` the
largest). The target is recommendations at no less than 70 % of the health
check's throughput.

An in-process timing of ``recommend()`` per call says how much of a request
is the recommender itself.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import Column, fmt, median
from benchmarks._procs import BenchServer, cpu_seconds
from benchmarks._wrk import INSTALL_HINT, find_wrk, lua_script, run_wrk

__all__ = ["COLUMNS", "DEFAULTS", "recommend_cost", "run"]

DEFAULTS: dict[str, Any] = {
    "shape": "ml-1m",
    "window": 3,
    "rounds": 2,
    "seed": 0,
}

NOTES = [
    "both endpoints are async def (no thread-pool hop); /recommendations answers from a "
    "per-model cache of ready JSON bytes, so wrk's random users mostly hit it after the "
    "first pass over the 6,040 users; the uncached cost is recommend() below plus ~50 us",
]

RATIO_TARGET = 0.7

COLUMNS: list[Column] = [
    ("endpoint", "endpoint", fmt("")),
    ("rps", "req/s", fmt(".0f")),
    ("p50_ms", "p50 ms", fmt(".2f")),
    ("p99_ms", "p99 ms", fmt(".1f")),
    ("max_ms", "max ms", fmt(".0f")),
    ("vs_health", "x health", fmt(".2f")),
    ("server_cpu_share", "server CPU", fmt(".2f")),
    ("wrk_cpu_share", "wrk CPU", fmt(".2f")),
]


def recommend_cost(shape: str, *, calls: int = 2000, seed: int = 0) -> dict[str, float]:
    """Time ``recommend()`` in-process on the synthetic ``shape``: microseconds per call."""
    import numpy as np

    from labsupport.data import synthetic_shape
    from labsupport.recommender import build_model, recommend

    model = build_model(synthetic_shape(shape, seed=seed), seed=seed)
    users = np.random.default_rng(seed).integers(1, model.n_users + 1, calls).tolist()
    out = {}
    for exclude in (False, True):
        t0 = time.perf_counter()
        for user in users:
            recommend(model, user, limit=5, exclude_rated=exclude)
        out[f"exclude_rated={exclude}"] = round((time.perf_counter() - t0) / calls * 1e6, 1)
    return out


def _window(server: BenchServer, script: Path, seconds: int) -> dict[str, Any]:
    cpu0 = cpu_seconds(server.pid) or 0.0
    result = run_wrk(server.url("thread"), script, seconds=seconds)
    cpu = (cpu_seconds(server.pid) or 0.0) - cpu0
    row = result.to_dict()
    row["server_cpu_share"] = round(cpu / result.seconds, 3) if result.seconds else None
    return row


def _summarise(endpoint: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "endpoint": endpoint,
        "rps": round(sum(r["rps"] for r in runs) / len(runs), 1),
        "p50_ms": median([r["p50_ms"] for r in runs if r["p50_ms"] is not None] or [0.0]),
        "p99_ms": median([r["p99_ms"] for r in runs if r["p99_ms"] is not None] or [0.0]),
        "max_ms": max((r["max_ms"] or 0.0) for r in runs),
        "server_cpu_share": median([r["server_cpu_share"] or 0.0 for r in runs]),
        "wrk_cpu_share": median([r["wrk_cpu_share"] for r in runs]),
        "errors": sum(r["errors"] for r in runs),
        "runs": runs,
    }


def run(settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Measure both endpoints on one server; return the section's result."""
    cfg = {**DEFAULTS, **(settings or {})}
    result: dict[str, Any] = {
        "title": f"Serving cost: GET /recommendations vs GET /health ({cfg['shape']} model)",
        "settings": cfg,
        "rows": [],
        "targets": [],
        "notes": NOTES,
    }
    result["recommend_us"] = recommend_cost(cfg["shape"], seed=cfg["seed"])
    if find_wrk() is None:
        result["skipped"] = INSTALL_HINT
        return result
    with (
        tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp,
        BenchServer(cfg["shape"], ["thread"]) as server,
    ):
        result["server"] = server.info
        scripts = {
            "/health": lua_script(Path(tmp), target="health"),
            "/recommendations/{id}": lua_script(
                Path(tmp),
                target="recommendations",
                n_users=server.info["n_users"],
                seed=cfg["seed"],
            ),
        }
        run_wrk(server.url("thread"), scripts["/health"], seconds=1)  # warm-up
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in scripts}
        for _ in range(cfg["rounds"]):
            for name, script in scripts.items():
                runs[name].append(_window(server, script, cfg["window"]))
    health = _summarise("/health", runs["/health"])
    recs = _summarise("/recommendations/{id}", runs["/recommendations/{id}"])
    health["vs_health"] = 1.0
    recs["vs_health"] = round(recs["rps"] / health["rps"], 3) if health["rps"] else None
    result["rows"] = [health, recs]
    print(
        f"  health {health['rps']:.0f} req/s, recommendations {recs['rps']:.0f} req/s", flush=True
    )
    result["targets"].append(
        {
            "name": f"{cfg['shape']} recommendations throughput vs health",
            "target": f">= {RATIO_TARGET:.0%}",
            "measured": f"{recs['vs_health']:.0%}",
            "value": recs["vs_health"],
            "met": recs["vs_health"] is not None and recs["vs_health"] >= RATIO_TARGET,
        }
    )
    return result
