"""Self-checks for notebook 07 (scaling): answers computed from the benchmark results.

Each check prints one line starting with ✔ when the answer is right and
raises `CheckFailed` with one sentence of help when
it is not. The expected values come from the same results the notebook
loaded, so the checks stay right when the benchmarks are run again.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from labsupport.classroom.checks import passed, require

__all__ = ["check_growth_exponent", "check_speedup", "expected_growth_exponent", "expected_speedup"]


def _rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = results.get("sections", {}).get("rebuild", {}).get("rows", [])
    return [r for r in rows if r.get("seconds") is not None]


def _seconds(results: Mapping[str, Any], shape: str, design: str) -> float:
    for row in _rows(results):
        if row["shape"] == shape and row["design"] == design:
            return float(row["seconds"])
    msg = f"the results have no {design!r} build at {shape!r}: run `python -m benchmarks`"
    raise KeyError(msg)


def _require_number(name: str, value: Any, hint: str) -> None:
    require(
        isinstance(value, (int, float)) and math.isfinite(float(value)),
        f"{name} should be one number, got {type(value).__name__}: {hint}",
    )


def expected_speedup(results: Mapping[str, Any], shape: str = "ml-1m") -> float:
    """Return the seed design's build time divided by `build_model`'s at `shape`."""
    return _seconds(results, shape, "seed") / _seconds(results, shape, "sparse")


def expected_growth_exponent(results: Mapping[str, Any], design: str = "sparse") -> float:
    """Return the slope of log(build time) against log(ratings) for `design`, fitted."""
    points = [(r["n_ratings"], r["seconds"]) for r in _rows(results) if r["design"] == design]
    if len(points) < 2:
        msg = f"need at least two {design!r} builds to fit a slope, found {len(points)}"
        raise ValueError(msg)
    x = np.log10([float(n) for n, _ in points])
    y = np.log10([float(s) for _, s in points])
    slope = np.polyfit(x, y, 1)[0]
    return float(slope)


def check_speedup(speedup: Any, results: Mapping[str, Any]) -> None:
    """Check exercise 1: how many times faster `build_model` is than the seed at ml-1m.

    Args:
        speedup: Your number: the seed's seconds divided by `build_model`'s.
        results: The results the notebook loaded.
    """
    _require_number("speedup", speedup, "divide two floats taken from the build table")
    want = expected_speedup(results)
    require(
        not math.isclose(float(speedup), 1 / want, rel_tol=0.01),
        "that is the inverse: divide the seed's time by build_model's time, not the other way",
    )
    require(
        math.isclose(float(speedup), want, rel_tol=0.01),
        f"expected about {want:.1f}: take the 'seconds' of the ml-1m rows whose design is "
        "'seed' and 'sparse', and divide the first by the second",
    )
    passed(f"build_model is {want:.0f}x faster than the seed's design at ml-1m")


def check_growth_exponent(slope: Any, results: Mapping[str, Any]) -> None:
    """Check exercise 2: the slope of build time against ratings on log-log axes.

    Args:
        slope: Your fitted slope (`np.polyfit(log10 ratings, log10 seconds, 1)[0]`).
        results: The results the notebook loaded.
    """
    _require_number("slope", slope, "np.polyfit(...) returns [slope, intercept], take the first")
    want = expected_growth_exponent(results)
    require(
        abs(float(slope) - want) <= 0.02,
        f"expected a slope near {want:.2f}: fit log10(seconds) against log10(ratings) for the "
        "'sparse' rows only (not the raw numbers, and not the seed's rows)",
    )
    passed(f"slope {want:.2f}: ten times more ratings cost about {10**want:.0f}x the build time")
