"""Figures and tables for notebook 07: what a rebuild costs as the data grows.

Everything here reads the committed benchmark results
(`benchmarks/results/latest.json`, written by `make bench`), never
measures anything itself, so a notebook cell shows the same numbers on every
run. Every figure function returns a new `Figure`
and leaves matplotlib's global settings alone (the notebook's Setup calls
`labsupport.classroom.plots.use_style`). Times are in seconds, memory in MiB.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labsupport.classroom.plots import PALETTE

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

__all__ = [
    "build_table",
    "cold_start_table",
    "find_results",
    "fold_in_drift_figure",
    "latency_figure",
    "latency_table",
    "load_results",
    "quality_table",
    "rebuild_figure",
]

_DESIGN_COLOURS: dict[str, str] = {
    "sparse": PALETTE[0],  # blue: the package's build_model
    "sparse-1blas": PALETTE[5],  # sky blue: the same, one BLAS thread
    "seed": PALETTE[3],  # vermilion: the seed's dense, full-rank design
}
"""One colour per build design in the `rebuild` section."""

_VARIANT_COLOURS: dict[str, str] = {
    "thread": PALETTE[0],
    "process": PALETTE[2],
    "seed-sync": PALETTE[1],
    "seed-async": PALETTE[3],
}
"""One colour per serving variant in the `responsiveness` section."""

_DESIGN_LABELS = {
    "sparse": "build_model (sparse, truncated SVD)",
    "sparse-1blas": "build_model, 1 BLAS thread",
    "seed": "seed design (dense, full SVD)",
}
_VARIANT_LABELS = {
    "thread": 'executor="thread"',
    "process": 'executor="process"',
    "seed-sync": "seed: def background task",
    "seed-async": "seed: async def background task",
}


_RESULTS = Path("benchmarks") / "results" / "latest.json"


def find_results(start: str | Path = ".") -> Path:
    """Find the workbook's committed benchmark results, looking up from `start`.

    A checkout of the workbook keeps them in `benchmarks/results/latest.json`,
    beside `notebooks/`; a notebook's working folder is `notebooks/` or a
    folder inside the checkout, so the first match going up is the one.

    Args:
        start: Where to start looking (default: the working folder).

    Returns:
        The path of the results file.

    Raises:
        FileNotFoundError: when no folder from `start` up holds one (the
            message says how to make it).
    """
    here = Path(start).resolve()
    for folder in (here, *here.parents):
        if (folder / _RESULTS).is_file():
            return folder / _RESULTS
    msg = (
        f"no {_RESULTS} in {here} or any folder above it: run `make bench` (or "
        "`python -m benchmarks`) in the workbook's folder, or pass the file's path"
    )
    raise FileNotFoundError(msg)


def load_results(path: str | Path) -> dict[str, Any]:
    """Read a benchmark results file.

    Args:
        path: The JSON file `python -m benchmarks` wrote (in a checkout,
            `benchmarks/results/latest.json`).

    Returns:
        The parsed results: `machine` facts and one entry per section
        under `sections`.

    Raises:
        FileNotFoundError: when the file is missing (the message says how to
            make it).
    """
    file = Path(path)
    if not file.is_file():
        msg = (
            f"no benchmark results at {file}: run `make bench` (or `python -m benchmarks`) "
            "from the repository root to create them"
        )
        raise FileNotFoundError(msg)
    data: dict[str, Any] = json.loads(file.read_text(encoding="utf-8"))
    return data


def _section(results: Mapping[str, Any], name: str) -> dict[str, Any]:
    section = results.get("sections", {}).get(name)
    if not section or not section.get("rows"):
        msg = f"the results have no {name!r} rows: run `python -m benchmarks --only {name}`"
        raise KeyError(msg)
    found: dict[str, Any] = section
    return found


def build_table(results: Mapping[str, Any]) -> pd.DataFrame:
    """Return the `rebuild` rows as a table: one row per shape and design.

    Columns: `shape`, `design`, `ratings`, `seconds` (median build
    time), `peak_mib` (peak resident memory of the build's process).
    """
    import pandas as pd

    rows = [
        {
            "shape": r["shape"],
            "design": r["design"],
            "ratings": int(r["n_ratings"]),
            "seconds": None if r.get("seconds") is None else round(float(r["seconds"]), 3),
            "peak_mib": None if r.get("peak_rss_mib") is None else round(float(r["peak_rss_mib"])),
        }
        for r in _section(results, "rebuild")["rows"]
    ]
    return pd.DataFrame(rows)


def rebuild_figure(results: Mapping[str, Any]) -> Figure:
    """Plot build time and peak memory against the number of ratings, log-log.

    One line per design; the seed's design only exists where it fits in
    memory. The dotted line in the memory panel is what the seed's dense
    matrix alone would need (`users x movies x 8` bytes) at every shape.
    """
    import matplotlib.pyplot as plt

    table = build_table(results).dropna()
    shapes = list(dict.fromkeys(r["shape"] for r in _section(results, "rebuild")["rows"]))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11.0, 4.4))
    for design, group in table.groupby("design", sort=False):
        style = {"color": _DESIGN_COLOURS.get(str(design), PALETTE[7]), "marker": "o"}
        label = _DESIGN_LABELS.get(str(design), str(design))
        left.plot(group["ratings"], group["seconds"], label=label, **style)
        right.plot(group["ratings"], group["peak_mib"], label=label, **style)
    dense = _dense_matrix_mib(shapes)
    if dense:
        xs, ys = zip(*dense, strict=True)
        right.plot(xs, ys, ":", color=_DESIGN_COLOURS["seed"], label="seed's dense matrix alone")
    for ax, what in ((left, "build time (s)"), (right, "peak resident memory (MiB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("ratings (synthetic, MovieLens shapes)")
        ax.set_ylabel(what)
    left.set_title("The seed's design is slower at every size")
    right.set_title("Its dense matrix outgrows any laptop")
    left.legend(loc="upper left", fontsize=9)
    right.legend(loc="upper left", fontsize=9)
    fig.tight_layout()
    return fig


def _dense_matrix_mib(shapes: list[str]) -> list[tuple[int, float]]:
    """Return `(ratings, MiB)` of a dense float64 users x movies matrix per shape."""
    from labsupport.data import SHAPES

    points = []
    for shape in shapes:
        if shape in SHAPES:
            users, movies, ratings = SHAPES[shape]
            points.append((ratings, users * movies * 8 / 2**20))
    return sorted(points)


def latency_table(results: Mapping[str, Any]) -> pd.DataFrame:
    """Return the `responsiveness` rows: idle and during-rebuild latency per variant.

    Columns: `shape`, `variant`, `idle_p99_ms`, `build_p99_ms`,
    `p99_x_idle`, `idle_rps`, `build_rps`, `rps_share`; latencies
    are `NaN` when no request completed during the rebuild.
    """
    import pandas as pd

    def num(value: Any, digits: int) -> float:
        return math.nan if value is None else round(float(value), digits)

    rows = [
        {
            "shape": r["shape"],
            "variant": r["variant"],
            "idle_p99_ms": num(r["idle_p99_ms"], 1),
            "build_p99_ms": num(r["busy_p99_ms"], 1),
            "p99_x_idle": num(r["p99_ratio"], 2),
            "idle_rps": num(r["idle_rps"], 0),
            "build_rps": num(r["busy_rps"], 0),
            "rps_share": num(r["rps_ratio"], 2),
        }
        for r in _section(results, "responsiveness")["rows"]
    ]
    return pd.DataFrame(rows)


def latency_figure(results: Mapping[str, Any]) -> Figure:
    """Plot, per variant and shape, p99 latency and throughput during a rebuild.

    Left: p99 latency during the rebuild (bars, log scale) with the same
    variant's idle p99 as a black tick; a variant that answered nothing
    during the rebuild (its event loop was blocked) gets a hatched bar to
    the top, marked "no answer". Right: throughput during the rebuild as a
    share of idle, with the 70 % target.
    """
    import matplotlib.pyplot as plt

    table = latency_table(results)
    shapes = list(dict.fromkeys(table["shape"]))
    variants = list(dict.fromkeys(table["variant"]))
    width = 0.8 / max(len(variants), 1)
    top = float(table[["build_p99_ms", "idle_p99_ms"]].max(skipna=True).max()) * 3
    fig, (left, right) = plt.subplots(1, 2, figsize=(11.0, 5.0))
    for i, variant in enumerate(variants):
        rows = table[table["variant"] == variant].set_index("shape").reindex(shapes)
        xs = [j + (i - (len(variants) - 1) / 2) * width for j in range(len(shapes))]
        colour = _VARIANT_COLOURS.get(variant, PALETTE[7])
        label = _VARIANT_LABELS.get(variant, variant)
        busy = rows["build_p99_ms"].tolist()
        left.bar(
            xs,
            [top if math.isnan(v) else v for v in busy],
            width,
            color=colour,
            label=label,
        )
        for x, value, idle in zip(xs, busy, rows["idle_p99_ms"].tolist(), strict=True):
            if math.isnan(value):
                left.bar([x], [top], width, color="white", edgecolor=colour, hatch="//")
                left.text(x, top / 1.6, "no answer", rotation=90, ha="center", va="top", fontsize=9)
            if not math.isnan(idle):
                left.plot(
                    [x - width / 2, x + width / 2], [idle, idle], color=PALETTE[7], linewidth=2
                )
        right.bar(xs, rows["rps_share"].fillna(0.0).tolist(), width, color=colour)
    left.plot([], [], color=PALETTE[7], linewidth=2, label="idle p99 (same variant)")
    right.axhline(0.7, color=PALETTE[7], linestyle="--", linewidth=1)
    right.text(len(shapes) - 0.5, 0.72, "target 70 %", ha="right", va="bottom", fontsize=9)
    left.set_yscale("log")
    left.set_ylim(1.0, top)
    left.set_ylabel("p99 latency (ms)")
    right.set_ylabel("req/s during rebuild / idle req/s")
    right.set_ylim(0, max(1.2, float(table["rps_share"].max(skipna=True) or 0) + 0.1))
    for ax in (left, right):
        ax.set_xticks(range(len(shapes)), shapes)
        ax.set_xlabel("rating set (synthetic shape)")
    left.set_title("Tail latency while a rebuild runs")
    right.set_title("Throughput while a rebuild runs")
    fig.legend(loc="lower center", ncol=3, fontsize=9)
    fig.tight_layout(rect=(0.0, 0.12, 1.0, 1.0))
    return fig


def quality_table(results: Mapping[str, Any]) -> pd.DataFrame:
    """Return the `quality` rows: ranking metrics at 10 and RMSE per data set and method."""
    import pandas as pd

    def num(value: Any) -> float:
        return math.nan if value is None else round(float(value), 3)

    rows = [
        {
            "dataset": r["dataset"],
            "method": r["method"],
            "precision@10": num(r.get("precision")),
            "recall@10": num(r.get("recall")),
            "ndcg@10": num(r.get("ndcg")),
            "map@10": num(r.get("map")),
            "rmse": num(r.get("rmse")),
        }
        for r in _section(results, "quality")["rows"]
    ]
    return pd.DataFrame(rows)


def cold_start_table(results: Mapping[str, Any]) -> pd.DataFrame:
    """Return the cold-start candidates' nDCG@10 on new users, per data set and split."""
    import pandas as pd

    rows = pd.DataFrame(_section(results, "quality").get("cold_start", []))
    table = rows.pivot_table(index="candidate", columns=["dataset", "split"], values="ndcg")
    return table.round(3).sort_values(table.columns[0], ascending=False)


def fold_in_drift_figure(results: Mapping[str, Any]) -> Figure:
    """nDCG@10 of the stale model, with fold-in, and rebuilt, as ratings arrive after a build."""
    import matplotlib.pyplot as plt

    rows = _section(results, "quality").get("fold_in_drift", [])
    datasets = sorted({r["dataset"] for r in rows})
    fig, axes = plt.subplots(1, len(datasets), figsize=(10, 3.8), sharey=True, squeeze=False)
    lines = (
        ("stale_ndcg", "the model from before", PALETTE[3], "-o"),
        ("fold_in_ndcg", "the same model, with fold-in", PALETTE[0], "-s"),
        ("rebuild_ndcg", "a full rebuild", PALETTE[2], "--^"),
    )
    for ax, name in zip(axes[0], datasets, strict=True):
        mine = sorted((r for r in rows if r["dataset"] == name), key=lambda r: r["new_share"])
        shares = [100 * r["new_share"] for r in mine]
        for key, label, colour, style in lines:
            ax.plot(shares, [r[key] for r in mine], style, color=colour, label=label)
        ax.set_title(name)
        ax.set_xlabel("% of ratings newer than the model")
    axes[0][0].set_ylabel("nDCG@10 on later ratings")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig
