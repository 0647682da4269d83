"""Helpers shared by the benchmark sections: machine facts, memory, tables, children.

All times are in seconds, memory in MiB.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from statistics import median
from typing import Any

__all__ = [
    "REPO_ROOT",
    "RESULTS_PATH",
    "Column",
    "child_env",
    "emit_child_result",
    "fmt",
    "format_table",
    "loadavg",
    "machine_facts",
    "median",
    "parse_child_result",
    "peak_rss_mib",
    "reset_peak_rss",
    "rss_mib",
    "run_json_child",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_PATH = REPO_ROOT / "benchmarks" / "results" / "latest.json"

_CHILD_MARK = "BENCHJSON "


def _status_field(name: str) -> float | None:
    """Return a ``/proc/self/status`` memory field (``VmHWM``, ``VmRSS``) in MiB."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(name + ":"):
                    return int(line.split()[1]) / 1024  # the file says kB
    except OSError:
        return None
    return None


def rss_mib() -> float | None:
    """Return this process's resident memory now, or ``None`` off Linux."""
    return _status_field("VmRSS")


def peak_rss_mib() -> float:
    """Return this process's peak resident memory since start (or the last reset)."""
    peak = _status_field("VmHWM")
    if peak is not None:
        return peak
    import resource  # not on Windows; the benchmarks run on Linux and macOS

    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / (1024 * 1024) if sys.platform == "darwin" else maxrss / 1024


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux ``clear_refs``).

    Returns:
        Whether it worked; when it did not, a later :func:`peak_rss_mib`
        also covers whatever ran before.
    """
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")
    except OSError:
        return False
    return True


def loadavg() -> list[float] | None:
    """Return the 1, 5 and 15 minute load averages (other users of the machine show here)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as info:
            for line in info:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        return None
    return None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine_facts() -> dict[str, Any]:
    """Return what a reader needs to judge the numbers: CPU, memory, versions, date, load."""
    import numpy  # noqa: F401  (load the BLAS libraries so threadpoolctl can see them)
    import scipy.linalg  # noqa: F401
    from threadpoolctl import threadpool_info

    blas = [
        {k: pool.get(k) for k in ("internal_api", "num_threads", "version")}
        for pool in threadpool_info()
    ]
    from benchmarks._wrk import find_wrk, wrk_version

    wrk = find_wrk()
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": _cpu_model(),
        "memory_gib": _memory_gib(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            name: _version(name)
            for name in ("numpy", "scipy", "pandas", "fastapi", "starlette", "uvicorn", "pydantic")
        },
        "blas": blas,
        "wrk": wrk_version(wrk) if wrk else None,
        "loadavg_start": loadavg(),
    }


Column = tuple[str, str, Callable[[Any], str]]
"""A table column: ``(row key, header, formatter)``."""


def fmt(spec: str, missing: str = "-") -> Callable[[Any], str]:
    """Return a formatter applying ``format(value, spec)``, or ``missing`` for ``None``."""

    def apply(value: Any) -> str:
        if value is None:
            return missing
        if isinstance(value, bool):
            return "yes" if value else "NO"
        if isinstance(value, str):
            return value
        return format(value, spec)

    return apply


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> str:
    """Render rows as a plain-text table with right-aligned numbers."""
    header = [title for _, title, _ in columns]
    body = [[render(row.get(key)) for key, _, render in columns] for row in rows]
    widths = [max(len(cell) for cell in column) for column in zip(header, *body, strict=False)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for cells in body:
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
        )
    return "\n".join(lines)


def child_env(**extra: str) -> dict[str, str]:
    """Return the environment for a benchmark child: the repo importable, output unbuffered."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def emit_child_result(result: Mapping[str, Any]) -> None:
    """Print a child's result where :func:`parse_child_result` finds it."""
    print(_CHILD_MARK + json.dumps(result), flush=True)


def parse_child_result(line: str) -> dict[str, Any] | None:
    """Return the result in a line printed by :func:`emit_child_result`, else ``None``."""
    if not line.startswith(_CHILD_MARK):
        return None
    result: dict[str, Any] = json.loads(line[len(_CHILD_MARK) :])
    return result


def run_json_child(
    args: Sequence[str], *, timeout: float, env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Run ``python -m <args>`` in a fresh process and return the JSON it emitted.

    The child is killed (by its own PID, through ``subprocess``) when it runs
    longer than ``timeout`` seconds.

    Returns:
        The child's result, plus ``wall`` (seconds, including start-up); on
        failure ``{"error": ...}`` with the end of its stderr.
    """
    started = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, "-m", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO_ROOT,
            env=dict(env) if env is not None else child_env(),
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s", "wall": time.perf_counter() - started}
    wall = time.perf_counter() - started
    for line in reversed(done.stdout.splitlines()):  # the last result line counts
        result = parse_child_result(line)
        if result is not None:
            result["wall"] = wall
            return result
    tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
    return {"error": f"exit code {done.returncode}: {' | '.join(tail)}", "wall": wall}
