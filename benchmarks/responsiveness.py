"""Section ``responsiveness``: latency and throughput of a real server during a rebuild.

For each shape, one server process (:mod:`benchmarks._serve`) serves four
variants on loopback ports; wrk (a separate process, ``-t1 -c8``) asks for
``GET /recommendations/{random user}``. Per variant: a 1 s warm-up, then per
repetition an idle window, and the same window again while rebuilds run:
a :class:`RebuildLoop` posts a rebuild, waits for it, and starts the next
until the window is over (an ml-1m build is shorter than any window; an
ml-10m build covers it alone). The tasks' own ``started_at`` and
``finished_at`` give the share of the window during which a build ran
(``coverage``; ``inside`` means at least 90 %). Repetitions are summarised
by their medians (``busy_max_ms`` by the largest).
Ratios to the same variant's idle numbers are what the targets judge: p99
during a rebuild within 2x of idle, throughput at least 70 % of idle.

CPU shares are fractions of one core over the window: wrk's own (from
``wait4``), the server process's (``/proc``), and that of the server's child
processes (``child_cpu_share``): the ``process`` variant's long-lived build
process, idle while the other variants are measured (their builds run inside
the server and count as server CPU).
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks._common import Column, fmt, median
from benchmarks._procs import BenchServer, children_of, cpu_seconds
from benchmarks._serve import VARIANTS
from benchmarks._wrk import INSTALL_HINT, find_wrk, lua_script, run_wrk

__all__ = ["COLUMNS", "DEFAULTS", "run"]

DEFAULTS: dict[str, Any] = {
    # shape -> (window in whole seconds, repetitions); each repetition waits
    # for its rebuild to finish, so small shapes are cheap to repeat.
    "shapes": {"ml-1m": [2, 3], "ml-10m": [5, 3]},
    "variants": list(VARIANTS),
    "connections": 8,
    "max_build_wait": 240.0,
    "seed": 0,
}

NOTES = [
    "seed-sync and seed-async run the package's build_model with the seed's scheduling "
    "(BackgroundTasks); the seed's own dense build takes ~24 s at ml-1m and cannot run at ml-10m",
    "thread is the package's thread executor (what the default, auto, picks below "
    "100,000 ratings): a daemon thread with one BLAS thread",
    "all variants of a shape live in one server process and are measured one after the other",
    "a blocked event loop answers nothing during the build: p99 is then missing and req/s is 0",
]

P99_TARGET = 2.0
RPS_TARGET = 0.7

COLUMNS: list[Column] = [
    ("shape", "shape", fmt("")),
    ("variant", "variant", fmt("")),
    ("idle_p50_ms", "idle p50 ms", fmt(".1f")),
    ("idle_p99_ms", "idle p99 ms", fmt(".1f")),
    ("idle_rps", "idle req/s", fmt(".0f")),
    ("busy_p50_ms", "build p50 ms", fmt(".1f")),
    ("busy_p99_ms", "build p99 ms", fmt(".1f")),
    ("busy_max_ms", "build max ms", fmt(".0f")),
    ("busy_rps", "build req/s", fmt(".0f")),
    ("p99_ratio", "p99 x idle", fmt(".2f")),
    ("rps_ratio", "req/s share", fmt(".2f")),
    ("coverage", "window in build", fmt(".0%")),
    ("build_seconds", "build s", fmt(".1f")),
    ("repeats", "runs", fmt("d")),
    ("wrk_cpu_share", "wrk CPU", fmt(".2f")),
    ("server_cpu_share", "server CPU", fmt(".2f")),
    ("child_cpu_share", "child CPU", fmt(".2f")),
    ("meets", "targets", fmt("")),
]


def _trigger(client: httpx.Client, variant: str) -> str:
    """Start a rebuild; return its task id."""
    path = "/seed/rebuild" if variant.startswith("seed-") else "/recommender/rebuild"
    answer = client.post(path)
    answer.raise_for_status()
    task_id: str = answer.json()["task_id"]
    return task_id


def _wait_done(client: httpx.Client, variant: str, task_id: str, bound: float) -> dict[str, Any]:
    """Poll the rebuild's status every 50 ms until it is final or ``bound`` seconds pass."""
    prefix = "/seed/rebuild" if variant.startswith("seed-") else "/recommender/rebuild"
    deadline = time.monotonic() + bound
    status: dict[str, Any] = {"status": "unknown", "started_at": None, "finished_at": None}
    while time.monotonic() < deadline:
        try:  # an async-def seed build blocks the loop: this waits until it ends
            answer = client.get(
                f"{prefix}/{task_id}", timeout=max(1.0, deadline - time.monotonic())
            )
            status = answer.json()
        except httpx.TimeoutException:
            break
        if status["status"] in ("complete", "failed", "interrupted"):
            break
        time.sleep(0.05)
    return status


class RebuildLoop(threading.Thread):
    """Keep a rebuild running until ``until`` (``time.time()``): start one, wait, start the next.

    ml-1m builds take well under a second, less than any wrk window, so one
    build cannot cover the window; back-to-back builds can. A long build
    (ml-10m) simply covers the window on its own. The loop never starts a
    build after ``until`` and gives up waiting after ``bound`` seconds.
    """

    def __init__(self, url: str, variant: str, *, until: float, bound: float) -> None:
        super().__init__(name=f"rebuild-loop-{variant}", daemon=True)
        self.url, self.variant, self.until, self.bound = url, variant, until, bound
        self.builds: list[dict[str, Any]] = []
        self.error: str | None = None

    def run(self) -> None:
        try:
            with httpx.Client(base_url=self.url, timeout=30.0) as client:
                while time.time() < self.until:
                    task_id = _trigger(client, self.variant)
                    self.builds.append(_wait_done(client, self.variant, task_id, self.bound))
                    if self.builds[-1]["status"] != "complete":
                        break
        except httpx.HTTPError as exc:  # reported in the row, not raised in a thread
            self.error = f"{type(exc).__name__}: {exc}"


def coverage(builds: list[dict[str, Any]], start: float, end: float) -> float:
    """Return the share of ``[start, end]`` during which some build was running."""
    covered = 0.0
    for build in builds:
        begin, finish = build.get("started_at"), build.get("finished_at")
        if begin is None:
            continue
        finish = end if finish is None else finish
        covered += max(0.0, min(finish, end) - max(begin, start))
    return min(1.0, covered / (end - start)) if end > start else 0.0


def _once(
    server: BenchServer, variant: str, script: Path, window: int, settings: dict[str, Any]
) -> dict[str, Any]:
    """One idle window, then the same window while rebuilds run back to back."""
    url = server.url(variant)
    conns = settings["connections"]
    idle = run_wrk(url, script, seconds=window, connections=conns)
    loop = RebuildLoop(
        url, variant, until=time.time() + 0.2 + window, bound=settings["max_build_wait"]
    )
    loop.start()
    time.sleep(0.2)  # the first build starts after its 202 has gone out
    server_cpu0 = cpu_seconds(server.pid) or 0.0
    kids0 = {pid: cpu_seconds(pid) or 0.0 for pid in children_of(server.pid)}
    busy = run_wrk(url, script, seconds=window, connections=conns, timeout=window + 60)
    server_cpu1 = cpu_seconds(server.pid) or 0.0
    kids1 = {pid: cpu_seconds(pid) or 0.0 for pid in children_of(server.pid)}
    loop.join(settings["max_build_wait"])
    window_s = busy.seconds or 1.0
    durations = [
        b["finished_at"] - b["started_at"]
        for b in loop.builds
        if b.get("started_at") is not None and b.get("finished_at") is not None
    ]
    covered = coverage(loop.builds, busy.started_at, busy.finished_at)
    return {
        "idle": idle.to_dict(),
        "busy": busy.to_dict(),
        "builds": len(loop.builds),
        "build_status": [b.get("status") for b in loop.builds],
        "build_seconds": round(median(durations), 2) if durations else None,
        "coverage": round(covered, 3),
        "inside": covered >= 0.9 and loop.error is None,
        "loop_error": loop.error,
        "server_cpu_share": round((server_cpu1 - server_cpu0) / window_s, 3),
        "child_cpu_share": round(sum(kids1[p] - kids0.get(p, 0.0) for p in kids1) / window_s, 3),
    }


def _measure(
    server: BenchServer,
    variant: str,
    script: Path,
    window: int,
    repeats: int,
    settings: dict[str, Any],
) -> dict[str, Any]:
    run_wrk(server.url(variant), script, seconds=1, connections=settings["connections"])  # warm
    runs = [_once(server, variant, script, window, settings) for _ in range(repeats)]
    return _row(variant, runs)


def _mid(values: list[float | None]) -> float | None:
    """Median of the values present; ``None`` when none are (nothing completed)."""
    present = [v for v in values if v is not None]
    return round(median(present), 3) if present else None


def _row(variant: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Summarise repetitions by their medians; ratios compare medians of the same variant."""
    idle = {k: _mid([r["idle"][k] for r in runs]) for k in ("p50_ms", "p99_ms", "rps")}
    busy = {k: _mid([r["busy"][k] for r in runs]) for k in ("p50_ms", "p99_ms", "rps")}
    busy_max = [r["busy"]["max_ms"] for r in runs if r["busy"]["max_ms"] is not None]
    p99_ratio = busy["p99_ms"] / idle["p99_ms"] if busy["p99_ms"] and idle["p99_ms"] else None
    rps_ratio = (busy["rps"] or 0.0) / idle["rps"] if idle["rps"] else None
    inside = all(r["inside"] for r in runs)
    meets = (
        bool(
            p99_ratio is not None
            and p99_ratio <= P99_TARGET
            and rps_ratio is not None
            and rps_ratio >= RPS_TARGET
        )
        if inside
        else None  # the window was not (mostly) inside builds: no verdict
    )
    return {
        "variant": variant,
        "repeats": len(runs),
        "idle_p50_ms": idle["p50_ms"],
        "idle_p99_ms": idle["p99_ms"],
        "idle_rps": idle["rps"],
        "busy_p50_ms": busy["p50_ms"],
        "busy_p99_ms": busy["p99_ms"],
        "busy_max_ms": max(busy_max) if busy_max else None,
        "busy_rps": busy["rps"],
        "busy_requests": sum(r["busy"]["requests"] for r in runs),
        "errors": sum(r["idle"]["errors"] + r["busy"]["errors"] for r in runs),
        "p99_ratio": round(p99_ratio, 3) if p99_ratio is not None else None,
        "rps_ratio": round(rps_ratio, 3) if rps_ratio is not None else None,
        "inside": inside,
        "coverage": _mid([r["coverage"] for r in runs]),
        "builds": sum(r["builds"] for r in runs),
        "build_seconds": _mid([r["build_seconds"] for r in runs]),
        "wrk_cpu_share": _mid([r["busy"]["wrk_cpu_share"] for r in runs]),
        "server_cpu_share": _mid([r["server_cpu_share"] for r in runs]),
        "child_cpu_share": _mid([r["child_cpu_share"] for r in runs]),
        "meets": meets,
        "runs": runs,
    }


def run(settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Measure every variant at every shape; return the section's result."""
    cfg = {**DEFAULTS, **(settings or {})}
    result: dict[str, Any] = {
        "title": "Responsiveness during a rebuild (GET /recommendations/{random user})",
        "settings": cfg,
        "rows": [],
        "servers": {},
        "targets": [],
        "notes": NOTES,
    }
    if find_wrk() is None:
        result["skipped"] = INSTALL_HINT
        return result
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        for shape, (window, repeats) in cfg["shapes"].items():
            with BenchServer(shape, cfg["variants"]) as server:
                result["servers"][shape] = server.info
                script = lua_script(
                    Path(tmp),
                    target="recommendations",
                    n_users=server.info["n_users"],
                    seed=cfg["seed"],
                )
                for variant in cfg["variants"]:
                    row = _measure(server, variant, script, window, repeats, cfg)
                    row["shape"] = shape
                    result["rows"].append(row)
                    print(
                        f"  {shape} {variant}: p99 x{row['p99_ratio']} rps x{row['rps_ratio']}",
                        flush=True,
                    )
    for row in result["rows"]:
        result["targets"].append(
            {
                "name": f"{row['shape']} {row['variant']}",
                "target": f"p99 <= {P99_TARGET}x idle and req/s >= {RPS_TARGET:.0%} of idle",
                "measured": f"p99 x{row['p99_ratio']}, req/s x{row['rps_ratio']}"
                + ("" if row["inside"] else f" (window {row['coverage']:.0%} inside builds)"),
                "met": row["meets"],
            }
        )
    return result
