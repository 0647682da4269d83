"""Figures for notebook 03: a rebuild task's observed states, and how a rebuild moved the scores.

- `state_timeline`: the statuses a client saw while polling, as a
  coloured band, with the reported progress over time.
- `score_heatmaps`: a model's users x movies scores before and after a
  rebuild, and their difference.

All times are in seconds. Call `labsupport.classroom.plots.use_style` first for
the workbook's look; these functions only draw, on new pyplot figures (end the
cell with `plt.show()`; close them with `plt.close(fig)` in scripts).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from matplotlib.artist import Artist
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from labsupport.classroom.plots import PALETTE, STATUS_COLOURS

__all__ = ["distinct_states", "score_heatmaps", "state_timeline"]

_UNKNOWN_COLOUR = "#999999"  # a status outside STATUS_COLOURS (e.g. "unknown")
_BAND_BOTTOM = 1.08  # the status band sits above the progress axis (0 to 1)
_BAND_HEIGHT = 0.16
_DIFF_CMAP = "PuOr_r"  # diverging and colour-blind safe: purple down, orange up
_SCORE_CMAP = "viridis"


def distinct_states(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """Return the statuses in the order they were first seen, each once.

    Args:
        records: Status payloads (dicts with a `"status"`), oldest first.

    Returns:
        For example `["queued", "running", "complete"]`.
    """
    return list(dict.fromkeys(str(record["status"]) for record in records))


def _segments(
    times: list[float], statuses: list[str], end: float
) -> list[tuple[str, float, float]]:
    """Merge consecutive equal statuses into `(status, start, stop)` spans ending at `end`."""
    spans: list[tuple[str, float, float]] = []
    for i, status in enumerate(statuses):
        stop = times[i + 1] if i + 1 < len(times) else end
        if spans and spans[-1][0] == status:
            spans[-1] = (status, spans[-1][1], stop)
        else:
            spans.append((status, times[i], stop))
    return spans


def state_timeline(records: Sequence[Mapping[str, Any]], *, title: str | None = None) -> Figure:
    """Draw the statuses a client observed while polling a task, and its progress.

    Each record is one observation: the time it was made (`"t"`, seconds
    since the POST), the `"status"` and, if the server reports it, the
    `"progress"` (0 to 1; missing counts as 0). A status is drawn from the
    observation that reported it until the next observation, so the band
    shows what the client *knew*, which lags the server by up to one polling
    interval. The last status gets a short stub so it stays visible.

    Args:
        records: Observations, oldest first; the POST's own answer
            (`status: "queued"`) makes a good first one.
        title: The figure title; by default it names the sequence and how long
            it took.

    Returns:
        The figure (one axes).

    Raises:
        ValueError: if `records` is empty or its times go backwards.
    """
    if not records:
        msg = "state_timeline needs at least one record, e.g. the POST's own {'status': 'queued'}"
        raise ValueError(msg)
    times = [float(r["t"]) for r in records]
    if any(b < a for a, b in itertools.pairwise(times)):
        msg = "records must be in time order (oldest first); sort them by their 't' first"
        raise ValueError(msg)
    statuses = [str(r["status"]) for r in records]
    progress = [float(r.get("progress") or 0.0) for r in records]
    span = times[-1] - times[0]
    end = times[-1] + max(0.04 * span, 0.02)

    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.0, 4.0), layout="constrained")
    for status, start, stop in _segments(times, statuses, end):
        colour = STATUS_COLOURS.get(status, _UNKNOWN_COLOUR)
        ax.broken_barh([(start, stop - start)], (_BAND_BOTTOM, _BAND_HEIGHT), color=colour)
        if stop - start > 0.12 * (end - times[0]):
            ax.text(
                (start + stop) / 2,
                _BAND_BOTTOM + _BAND_HEIGHT / 2,
                status,
                ha="center",
                va="center",
                color="white",
                fontweight="bold",
            )
    ax.plot(times, progress, marker="o", markersize=4, color=PALETTE[7], label="progress")
    ax.set_ylim(-0.05, _BAND_BOTTOM + _BAND_HEIGHT + 0.05)
    ax.set_yticks([0.0, 0.25, 0.5, 0.75, 1.0])
    ax.set_xlim(min(0.0, times[0]), end)
    ax.set_xlabel("time since the POST (s)")
    ax.set_ylabel("build progress (fraction)")
    seen = distinct_states(records)
    handles: list[Artist] = [
        Patch(color=STATUS_COLOURS.get(s, _UNKNOWN_COLOUR), label=s) for s in seen
    ]
    handles.append(Line2D([], [], color=PALETTE[7], marker="o", markersize=4, label="progress"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(0.0, 0.8))
    ax.set_title(title or f"Observed {' → '.join(seen)} in {span:.1f} s")
    return fig


def _label_ids(ax: Any, ids: Sequence[int] | None, axis: str, n_ticks: int = 7) -> None:
    """Put a few id labels on a heatmap axis (positions are rows or columns)."""
    if ids is None:
        return
    positions = np.unique(np.linspace(0, len(ids) - 1, min(n_ticks, len(ids))).round().astype(int))
    labels = [str(ids[p]) for p in positions]
    if axis == "x":
        ax.set_xticks(positions, labels)
    else:
        ax.set_yticks(positions, labels)


def score_heatmaps(
    before: npt.ArrayLike,
    after: npt.ArrayLike,
    *,
    user_ids: Sequence[int] | None = None,
    movie_ids: Sequence[int] | None = None,
    title: str | None = None,
) -> Figure:
    """Draw two users x movies score matrices and their difference, side by side.

    The first two panels share one colour scale, so equal colours mean equal
    scores; the third uses a diverging scale centred on zero (orange: the
    score rose, purple: it fell).

    Args:
        before: Scores of the old model, e.g. `score_matrix(old_model)`.
        after: Scores of the new model, same shape and row/column order.
        user_ids: The user id of each row, for the tick labels.
        movie_ids: The movie id of each column, for the tick labels.
        title: The figure title (say what the difference shows).

    Returns:
        The figure (three heatmaps, each with its colour bar).

    Raises:
        ValueError: if the matrices are not 2-D or differ in shape.
    """
    old = np.asarray(before, dtype=np.float64)
    new = np.asarray(after, dtype=np.float64)
    if old.ndim != 2 or old.shape != new.shape:
        msg = (
            f"before and after must be 2-D and the same shape, got {old.shape} and {new.shape}; "
            "compare models built over the same users and movies (align them first)"
        )
        raise ValueError(msg)
    diff = new - old
    low, high = float(min(old.min(), new.min())), float(max(old.max(), new.max()))
    reach = float(np.abs(diff).max()) or 1.0

    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13.0, 4.4), sharey=True, layout="constrained")
    panels = [
        (old, "before", _SCORE_CMAP, low, high),
        (new, "after", _SCORE_CMAP, low, high),
        (diff, "after \N{MINUS SIGN} before", _DIFF_CMAP, -reach, reach),
    ]
    for ax, (matrix, name, cmap, vmin, vmax) in zip(axes, panels, strict=True):
        image = ax.imshow(
            matrix, aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest"
        )
        ax.set_title(name)
        ax.set_xlabel("movie id" if movie_ids is not None else "movie (column)")
        ax.grid(False)
        _label_ids(ax, movie_ids, "x")
        fig.colorbar(image, ax=ax, shrink=0.85, label="score (model units)")
    axes[0].set_ylabel("user id" if user_ids is not None else "user (row)")
    _label_ids(axes[0], user_ids, "y")
    fig.suptitle(title or "Ranking scores before and after the rebuild")
    return fig
