"""Figures for the SVD notebook: rating matrices, reconstructions, spectra and k curves.

Every function builds a new `Figure` and returns it
without showing it, so a notebook cell ends with `plt.show()` and a test can
inspect and close it. Default titles state what the figure shows (computed
from the data where they can be), axes name their units, and colours come from
`labsupport.classroom.plots.PALETTE`. Missing ratings (`NaN`) are always drawn
in light grey, so they never look like a score.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import Colormap
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from labsupport.classroom.plots import PALETTE

__all__ = [
    "k_curve",
    "rating_heatmap",
    "reconstruction_panel",
    "score_heatmaps",
    "spectrum",
]

_MISSING_COLOUR = "#DDDDDD"
"""Light grey: the colour of a cell nobody rated."""

_SCORE_CMAP = "viridis"
_DIFF_CMAP = "RdBu_r"
_TINY = 1e-9  # differences below this (in stars) are floating-point noise


def _as_array(matrix: Any) -> npt.NDArray[np.float64]:
    """Return *matrix* (array, DataFrame or nested lists) as a 2-D float array."""
    array = np.asarray(matrix, dtype=np.float64)
    if array.ndim != 2:
        msg = f"expected a 2-D users x movies matrix, got an array of shape {array.shape}"
        raise ValueError(msg)
    return array


def _cmap_with_missing(name: str) -> Colormap:
    """Return a copy of colormap *name* that paints NaN cells light grey."""
    import matplotlib as mpl

    return mpl.colormaps[name].with_extremes(bad=_MISSING_COLOUR)


def _label_groups(ax: Axes, labels: Sequence[str]) -> None:
    """Put one x tick per run of equal *labels*, with a thin line between runs."""
    starts = [i for i, label in enumerate(labels) if i == 0 or label != labels[i - 1]]
    ends = [*starts[1:], len(labels)]
    ax.set_xticks([(a + b - 1) / 2 for a, b in zip(starts, ends, strict=True)])
    ax.set_xticklabels([labels[a] for a in starts], rotation=45, ha="right")
    for boundary in starts[1:]:
        ax.axvline(boundary - 0.5, color="white", linewidth=0.8)


def _heatmap(ax: Axes, array: npt.NDArray[np.float64], **kwargs: Any) -> Any:
    """Draw one matrix on *ax* with users down and movies across; return the image."""
    image = ax.imshow(array, aspect="auto", interpolation="nearest", **kwargs)
    ax.grid(False)
    ax.set_xlabel("movie (column)")
    ax.set_ylabel("user (row)")
    return image


def rating_heatmap(
    matrix: Any,
    *,
    column_groups: Sequence[str] | None = None,
    title: str | None = None,
    figsize: tuple[float, float] = (11.0, 5.0),
) -> Figure:
    """Draw a users x movies rating matrix, with missing ratings in grey.

    Scores use a sequential colour scale fixed at 1 to 5 stars; `NaN` cells
    (nobody rated them) are light grey, so a missing rating can never be
    mistaken for a low one. Zeros, if you filled the gaps with zeros, are
    drawn as scores below one star: the point of the seed's bug.

    Args:
        matrix: Users x movies scores in stars, `NaN` where missing: a
            DataFrame (such as a pivot table) or an array.
        column_groups: One label per column (such as each movie's genre);
            runs of equal labels get one tick and a separating line.
        title: Figure title; by default it states the share of rated cells.
        figsize: Figure size in inches.

    Returns:
        The figure.

    Raises:
        ValueError: if *matrix* is not 2-D or *column_groups* has the wrong
            length.
    """
    import matplotlib.pyplot as plt

    array = _as_array(matrix)
    fig, ax = plt.subplots(figsize=figsize)
    rated = np.isfinite(array)
    image = _heatmap(ax, array, cmap=_cmap_with_missing(_SCORE_CMAP), vmin=1.0, vmax=5.0)
    fig.colorbar(image, ax=ax, label="rating (stars)", ticks=[1, 2, 3, 4, 5])
    if column_groups is not None:
        if len(column_groups) != array.shape[1]:
            msg = (
                f"column_groups needs one label per column: got {len(column_groups)} "
                f"for {array.shape[1]} columns"
            )
            raise ValueError(msg)
        _label_groups(ax, list(column_groups))
        ax.set_xlabel("movie (columns grouped by genre)")
    if title is None:
        title = (
            f"{array.shape[0]} users x {array.shape[1]} movies: only {rated.mean():.0%} "
            "of the cells are rated (grey = missing)"
        )
    ax.set_title(title)
    fig.tight_layout()
    return fig


def reconstruction_panel(
    input: Any,
    reconstruction: Any,
    *,
    title: str | None = None,
    figsize: tuple[float, float] = (14.0, 4.2),
) -> Figure:
    """Show a matrix, its reconstruction and their difference side by side.

    The first two panels share one colour scale (the range of *input*); the
    third uses a diverging scale centred on zero, sized to the largest
    difference, so a difference of 1e-14 stars still shows its pattern while
    the colour bar's exponent says how small it is.

    Args:
        input: The matrix that was factored (missing cells filled, e.g. 0).
        reconstruction: What the factors give back, same shape.
        title: Figure title; by default it states the largest difference.
        figsize: Figure size in inches.

    Returns:
        The figure (three image axes and their colour bars).

    Raises:
        ValueError: if the shapes differ.
    """
    import matplotlib.pyplot as plt

    before, after = _as_array(input), _as_array(reconstruction)
    if before.shape != after.shape:
        msg = f"input has shape {before.shape} but reconstruction has shape {after.shape}"
        raise ValueError(msg)
    difference = after - before
    largest = float(np.max(np.abs(difference))) if difference.size else 0.0
    fig, axes = plt.subplots(1, 3, figsize=figsize, sharey=True, layout="constrained")
    low, high = float(np.min(before)), float(np.max(before))
    for ax, array, name in zip(axes[:2], (before, after), ("input", "reconstruction"), strict=True):
        image = _heatmap(ax, array, cmap=_SCORE_CMAP, vmin=low, vmax=high)
        ax.set_title(name)
    fig.colorbar(image, ax=axes[1], label="score (stars)")
    limit = largest if largest > 0 else 1.0
    diff_image = _heatmap(axes[2], difference, cmap=_DIFF_CMAP, vmin=-limit, vmax=limit)
    axes[2].set_title("reconstruction - input")
    fig.colorbar(
        diff_image,
        ax=axes[2],
        label="difference (stars)",
        format=FuncFormatter(lambda value, _: f"{value:.0e}" if value else "0"),
    )
    for ax in axes[1:]:
        ax.set_ylabel("")
    if title is None:
        if largest < _TINY:
            title = (
                f"The reconstruction IS the input: the largest difference is {largest:.0e} "
                "stars, rounding noise"
            )
        else:
            title = f"The reconstruction differs from the input by up to {largest:.2f} stars"
    fig.suptitle(title)
    return fig


def spectrum(
    singular_values: Mapping[str, Any] | Any,
    *,
    planted_rank: int | None = None,
    chosen_k: int | None = None,
    max_components: int | None = None,
    title: str | None = None,
    figsize: tuple[float, float] = (8.0, 4.5),
) -> Figure:
    """Draw singular values against their index on a log scale (a scree plot).

    Each curve is divided by its own largest value, so spectra of matrices of
    different sizes share one axis; what matters is where a curve stops
    falling steeply (the "elbow").

    Args:
        singular_values: One array (largest first), or a mapping from a
            legend label to such an array.
        planted_rank: If the data came from a planted low-rank model, its
            rank: drawn as a dashed vertical line.
        chosen_k: A rank picked some other way (e.g. by validation): drawn
            as a dotted vertical line.
        max_components: Draw only the first this many values of each curve
            (the elbow is usually near the start).
        title: Figure title; by default it names the planted rank, if any.
        figsize: Figure size in inches.

    Returns:
        The figure.

    Raises:
        ValueError: if a curve is empty or its largest value is not positive.
    """
    import matplotlib.pyplot as plt

    curves = singular_values if isinstance(singular_values, Mapping) else {"": singular_values}
    fig, ax = plt.subplots(figsize=figsize)
    for i, (label, values) in enumerate(curves.items()):
        s = np.asarray(values, dtype=np.float64).ravel()
        if s.size == 0 or s[0] <= 0:
            msg = f"curve {label!r} needs positive singular values, largest first"
            raise ValueError(msg)
        shown = s[:max_components] if max_components is not None else s
        index = np.arange(1, shown.size + 1)
        colour = PALETTE[i % len(PALETTE)]
        ax.plot(index, shown / s[0], marker="o", markersize=4, color=colour, label=label or None)
    ax.set_yscale("log")
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.set_xlabel("component number (1 = strongest)")
    ax.set_ylabel("singular value / largest (log scale)")
    if planted_rank is not None:
        ax.axvline(planted_rank + 0.5, color=PALETTE[7], linestyle="--", linewidth=1.2)
        ax.annotate(
            f"planted rank {planted_rank}",
            xy=(planted_rank + 0.5, 1.0),
            xytext=(6, -4),
            textcoords="offset points",
            va="top",
        )
    if chosen_k is not None:
        ax.axvline(chosen_k + 0.5, color=PALETTE[3], linestyle=":", linewidth=1.5)
    if len(curves) > 1 or "" not in curves:
        ax.legend(loc="center right")
    if title is None:
        title = "Singular values, strongest first"
        if planted_rank is not None:
            title += f" (dashed: the planted rank, {planted_rank})"
    ax.set_title(title)
    fig.tight_layout()
    return fig


def score_heatmaps(
    dict_k_to_matrix: Mapping[Any, Any],
    *,
    title: str | None = None,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """Draw the score matrix of several ranks side by side, on one colour scale.

    Args:
        dict_k_to_matrix: Panel label (a rank `k`, or text such as
            `"full"`) mapped to a users x movies score matrix; panels are
            drawn in the mapping's order.
        title: Figure title; by default it says what small and full ranks do.
        figsize: Figure size in inches; by default 3.2 inches per panel.

    Returns:
        The figure (one image axis per panel, plus one colour bar).

    Raises:
        ValueError: if the mapping is empty or the matrices differ in shape.
    """
    import matplotlib.pyplot as plt

    if not dict_k_to_matrix:
        msg = "score_heatmaps needs at least one {k: matrix} entry"
        raise ValueError(msg)
    arrays = {k: _as_array(m) for k, m in dict_k_to_matrix.items()}
    shapes = {a.shape for a in arrays.values()}
    if len(shapes) > 1:
        msg = f"all score matrices must have one shape; got {sorted(shapes)}"
        raise ValueError(msg)
    stacked = np.stack(list(arrays.values()))
    low, high = float(np.min(stacked)), float(np.max(stacked))
    n = len(arrays)
    size = figsize if figsize is not None else (3.2 * n + 1.2, 4.0)
    fig, axes = plt.subplots(1, n, figsize=size, sharey=True, squeeze=False, layout="constrained")
    images = []
    for ax, (k, array) in zip(axes[0], arrays.items(), strict=True):
        images.append(_heatmap(ax, array, cmap=_SCORE_CMAP, vmin=low, vmax=high))
        ax.set_title(f"k = {k}" if isinstance(k, (int, np.integer)) else str(k))
    for ax in axes[0][1:]:
        ax.set_ylabel("")
    fig.colorbar(images[0], ax=list(axes[0]), label="score (stars)", fraction=0.03, pad=0.02)
    if title is None:
        title = "Small k keeps only the broad tastes; full rank copies the input, zeros included"
    fig.suptitle(title)
    return fig


def _metric_columns(df: pd.DataFrame) -> tuple[str, str]:
    """Return the RMSE column and the precision@N column of a k-curve table."""
    precision = [c for c in df.columns if str(c).startswith("precision@")]
    if "rmse" not in df.columns or "k" not in df.columns or len(precision) != 1:
        msg = (
            "k_curve needs columns 'k', 'rmse' and one 'precision@N' column (plus an "
            f"optional 'method'); got {list(df.columns)}"
        )
        raise ValueError(msg)
    return "rmse", str(precision[0])


def k_curve(
    df: pd.DataFrame,
    *,
    chosen_k: int | None = None,
    title: str | None = None,
    figsize: tuple[float, float] = (13.0, 4.5),
) -> Figure:
    """Plot validation RMSE and precision@N against the rank k.

    One line per `method` (if the column exists), one panel per metric; the
    best point of every line is circled. Each panel's title names the best
    method and k it found.

    Args:
        df: One row per (method, k) with columns `k`, `rmse` (stars) and
            one `precision@N`; optionally `method`.
        chosen_k: The k you picked: drawn as a dashed vertical line.
        title: Figure title; by default it names *chosen_k*.
        figsize: Figure size in inches.

    Returns:
        The figure (two axes).

    Raises:
        ValueError: if a column is missing or *df* is empty.
    """
    import matplotlib.pyplot as plt

    rmse_col, precision_col = _metric_columns(df)
    if df.empty:
        msg = "k_curve needs at least one row"
        raise ValueError(msg)
    groups = list(df.groupby("method", sort=False)) if "method" in df.columns else [("", df)]
    fig, axes = plt.subplots(1, 2, figsize=figsize)
    specs = ((axes[0], rmse_col, False), (axes[1], precision_col, True))
    for ax, column, higher_is_better in specs:
        best_overall: tuple[float, str, int] | None = None
        for i, (method, part) in enumerate(groups):
            part = part.sort_values("k")
            colour = PALETTE[i % len(PALETTE)]
            ax.plot(part["k"], part[column], marker="o", color=colour, label=str(method) or None)
            pick = part[column].idxmax() if higher_is_better else part[column].idxmin()
            value, k = float(part.loc[pick, column]), int(part.loc[pick, "k"])
            ax.plot([k], [value], marker="o", markersize=13, fillstyle="none", color=colour)
            better = best_overall is None or (
                value > best_overall[0] if higher_is_better else value < best_overall[0]
            )
            if better:
                best_overall = (value, str(method), k)
        assert best_overall is not None  # df is not empty
        value, method, k = best_overall
        who = f"{method}, " if method else ""
        word = "Highest" if higher_is_better else "Lowest"
        name = "RMSE" if column == rmse_col else column
        ax.set_title(f"{word} {name}: {who}{value:.3f} at k = {k}")
        ax.set_xlabel("rank k (number of components kept)")
        unit = " (stars, lower is better)" if column == rmse_col else " (higher is better)"
        ax.set_ylabel(f"validation {name}{unit}")
        if chosen_k is not None:
            ax.axvline(chosen_k, color=PALETTE[7], linestyle="--", linewidth=1.0)
        if len(groups) > 1:
            ax.legend()
    if title is None and chosen_k is not None:
        title = f"Chosen on the validation split: k = {chosen_k} (dashed line)"
    if title is not None:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
