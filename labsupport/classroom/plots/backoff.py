"""Figures for notebook 04: backoff schedules, real retry timings, many clients contending.

Every function returns a new `Figure` and leaves
matplotlib's global settings alone (the notebook's Setup calls
`labsupport.classroom.plots.use_style`). Randomness comes only from the `seed`
you pass, so the same call draws the same picture. All times are in seconds.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np

from labsupport.classroom.contention import ContentionResult
from labsupport.classroom.plots import PALETTE
from labsupport.retry.backoff import STRATEGIES, Attempt, backoff_schedule

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "attempt_timings",
    "contention",
    "gaps",
    "schedule_spread",
    "schedules",
]

_STRATEGY_COLOURS: dict[str, str] = {
    "none": PALETTE[7],  # black: the reference every other strategy is compared with
    "seed": PALETTE[4],
    "full": PALETTE[0],
    "equal": PALETTE[1],
    "decorrelated": PALETTE[2],
}
"""One colour per backoff strategy, shared by every figure in this module."""

_OK = PALETTE[2]  # green: a 2xx/3xx answer
_FAILED = PALETTE[3]  # vermilion: an error answer
_NO_ANSWER = "#999999"  # grey: the call raised before any response


def schedule_spread(
    strategy: str,
    *,
    attempts: int = 8,
    base: float = 0.5,
    cap: float = 30.0,
    jitter: float = 0.2,
    draws: int = 200,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Summarise `draws` seeded schedules of one strategy, retry by retry.

    Each draw is one call of `labsupport.retry.backoff_schedule`, all
    from one `random.Random(seed)`, so the numbers are the same on every run.

    Args:
        strategy: One of `labsupport.retry.STRATEGIES`.
        attempts: Retries per schedule.
        base: The first exponential step.
        cap: The longest delay.
        jitter: The `"seed"` strategy's extra random wait.
        draws: How many schedules to draw.
        seed: Seed for the random source.

    Returns:
        `{"median": [...], "p5": [...], "p95": [...]}`, one value per retry.

    Raises:
        ValueError: for an unknown strategy, a negative number or `draws < 1`.
    """
    if draws < 1:
        msg = f"draws must be at least 1, got {draws!r}"
        raise ValueError(msg)
    rng = random.Random(seed)
    delays = np.array(
        [
            backoff_schedule(
                strategy, attempts=attempts, base=base, cap=cap, jitter=jitter, rng=rng
            )
            for _ in range(draws)
        ]
    ).reshape(draws, attempts)
    p5, median, p95 = np.percentile(delays, [5, 50, 95], axis=0)
    return {
        "median": [float(x) for x in median],
        "p5": [float(x) for x in p5],
        "p95": [float(x) for x in p95],
    }


def schedules(
    strategies: Sequence[str] = ("seed", "full", "equal", "decorrelated"),
    *,
    attempts: int = 8,
    base: float = 0.5,
    cap: float = 30.0,
    jitter: float = 0.2,
    draws: int = 200,
    seed: int = 0,
) -> Figure:
    """Plot each strategy's delays, median and 5-95 % band, against plain exponential backoff.

    One panel per strategy (two columns), a log scale for the delay, and the
    `"none"` schedule as a dashed black reference line in every panel.

    Args:
        strategies: The strategies to draw, one panel each.
        attempts: Retries per schedule.
        base: The first exponential step.
        cap: The longest delay.
        jitter: The `"seed"` strategy's extra random wait.
        draws: Seeded schedules per strategy (see `schedule_spread`).
        seed: Seed for the random source (the same for every strategy).

    Returns:
        The figure.

    Raises:
        ValueError: for an unknown strategy or an empty `strategies`.
    """
    import matplotlib.pyplot as plt

    if not strategies:
        msg = "strategies is empty; pass at least one of " + ", ".join(STRATEGIES)
        raise ValueError(msg)
    rows = (len(strategies) + 1) // 2
    fig, axes = plt.subplots(
        rows, 2, figsize=(10.0, 3.2 * rows + 0.6), sharex=True, sharey=True, squeeze=False
    )
    retries = np.arange(1, attempts + 1)
    plain = backoff_schedule("none", attempts=attempts, base=base, cap=cap)
    for ax, strategy in zip(axes.flat, strategies, strict=False):
        spread = schedule_spread(
            strategy, attempts=attempts, base=base, cap=cap, jitter=jitter, draws=draws, seed=seed
        )
        colour = _STRATEGY_COLOURS.get(strategy, PALETTE[0])
        ax.fill_between(
            retries, spread["p5"], spread["p95"], color=colour, alpha=0.25, label="5-95 % of draws"
        )
        ax.plot(retries, spread["median"], "o-", color=colour, lw=2, label="median")
        ax.plot(retries, plain, "--", color=_STRATEGY_COLOURS["none"], lw=1.2, label="no jitter")
        ax.set_title(strategy if strategy != "seed" else "seed (the lesson's formula)")
        ax.set_yscale("log")
    for ax in axes.flat[len(strategies) :]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("delay before retry (s)")
    for ax in axes[-1, :]:
        ax.set_xlabel("retry number")
    axes.flat[0].legend(loc="upper left", fontsize=10)
    finding = "Jitter spreads the waits out"
    if "seed" in strategies:
        finding += f"; the lesson's {jitter:g} s of jitter barely does"
    fig.suptitle(f"{finding} ({draws} seeded draws per retry)")
    fig.tight_layout()
    return fig


def gaps(attempts: Sequence[Attempt]) -> list[tuple[float, float]]:
    """Pair each planned delay with the pause that really passed before the next call.

    The measured pause runs from the end of one call (`started + elapsed`)
    to the start of the next, so it is the sleep plus the client's own overhead.

    Args:
        attempts: One `with_backoff` run's records, in order
            (what `on_attempt=records.append` collected).

    Returns:
        `(planned, measured)` for every call followed by another.
    """
    pairs = []
    for this, following in itertools.pairwise(attempts):
        if this.delay is not None:
            pairs.append((this.delay, following.started - (this.started + this.elapsed)))
    return pairs


def _status_colour(status: int | None) -> str:
    if status is None:
        return _NO_ANSWER
    return _OK if status < 400 else _FAILED


def attempt_timings(runs: Mapping[str, Sequence[Attempt]]) -> Figure:
    """Plot real retries: a timeline per run, and planned delay against measured pause.

    Left: one row per run, a dot where each call began (green for a 2xx/3xx
    answer, vermilion for an error answer, grey when the call raised before
    any answer), the measured pause as a grey bar (it
    starts when the call's answer arrived) and the planned end of the pause
    as a black tick. Right: each pause's measured length
    against its plan, with the line where the two are equal.

    Args:
        runs: A label for each `with_backoff` run and its
            `Attempt` records.

    Returns:
        The figure.

    Raises:
        ValueError: if `runs` is empty.
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    if not runs:
        msg = "runs is empty; pass {label: [Attempt, ...]} for at least one with_backoff run"
        raise ValueError(msg)
    fig, (timeline, scatter) = plt.subplots(
        1, 2, figsize=(11.0, 4.4), gridspec_kw={"width_ratios": [3, 2]}
    )
    for row, attempts in enumerate(runs.values()):
        for this, following in itertools.pairwise(attempts):
            end = this.started + this.elapsed
            timeline.plot(
                [end, following.started], [row, row], color="#BBBBBB", lw=6, solid_capstyle="butt"
            )
            if this.delay is not None:
                timeline.plot([end + this.delay], [row], "|", color="black", ms=20, mew=2, zorder=4)
        for attempt in attempts:
            timeline.plot([attempt.started], [row], "o", ms=9, color=_status_colour(attempt.status))
    timeline.set_yticks(range(len(runs)), list(runs))
    timeline.set_ylim(len(runs) - 0.5, -0.5)
    timeline.set_xlabel("time since the run's first call (s)")
    timeline.set_title("Every call of every run")
    timeline.legend(
        handles=[
            Line2D([], [], marker="o", ls="", color=_OK, label="answer < 400"),
            Line2D([], [], marker="o", ls="", color=_FAILED, label="error answer"),
            Line2D([], [], color="#BBBBBB", lw=6, label="measured pause"),
            Line2D([], [], marker="|", ls="", color="black", ms=12, mew=2, label="planned end"),
        ],
        loc="upper right",
        fontsize=10,
    )
    pairs = [pair for attempts in runs.values() for pair in gaps(attempts)]
    if pairs:
        planned, measured = np.array(pairs).T
        top = float(max(planned.max(), measured.max())) * 1.1
        scatter.plot([0, top], [0, top], "--", color="black", lw=1, label="measured = planned")
        scatter.plot(planned, measured, "o", color=PALETTE[0], ms=8, label="one pause")
        scatter.set_xlim(0, top)
        scatter.set_ylim(0, top)
        scatter.legend(loc="upper left", fontsize=10)
        worst = float((measured - planned).max()) * 1000
        scatter.set_title(f"Pauses match the plan (worst +{worst:.1f} ms)")
    else:
        scatter.set_title("No retries, so no pauses")
    scatter.set_xlabel("planned delay (s)")
    scatter.set_ylabel("measured pause (s)")
    fig.suptitle("Real retries against a server that fails on purpose")
    fig.tight_layout()
    return fig


def _line(
    ax: Axes,
    results: Sequence[ContentionResult],
    strategy: str,
    key: Literal["total_calls", "completion_time"],
) -> None:
    rows = sorted((r for r in results if r["strategy"] == strategy), key=lambda r: r["n_clients"])
    ax.plot(
        [r["n_clients"] for r in rows],
        [r[key] for r in rows],
        "o-",
        color=_STRATEGY_COLOURS.get(strategy, PALETTE[0]),
        lw=2,
        label=strategy,
    )


def contention(results: Sequence[ContentionResult]) -> Figure:
    """Plot total calls and completion time against the number of clients, per strategy.

    Two panels with log-scaled y axes; the title names the strategy with the
    fewest calls and the one that finished first at the largest client count.

    Args:
        results: `contention_simulation` results, for
            several strategies and client counts.

    Returns:
        The figure.

    Raises:
        ValueError: if `results` is empty.
    """
    import matplotlib.pyplot as plt

    if not results:
        msg = "results is empty; pass contention_simulation(...) results"
        raise ValueError(msg)
    strategies = list(dict.fromkeys(r["strategy"] for r in results))
    fig, (calls_ax, time_ax) = plt.subplots(1, 2, figsize=(11.0, 4.4))
    for strategy in strategies:
        _line(calls_ax, results, strategy, "total_calls")
        _line(time_ax, results, strategy, "completion_time")
    calls_ax.set_ylabel("calls by all clients")
    time_ax.set_ylabel("time until the last client succeeds (s)")
    calls_ax.set_title("Work done")
    time_ax.set_title("Time to finish")
    for ax in (calls_ax, time_ax):
        ax.set_yscale("log")
        ax.set_xlabel("clients contending at once")
    calls_ax.legend(fontsize=10)
    largest = max(r["n_clients"] for r in results)
    at_largest = [r for r in results if r["n_clients"] == largest]
    fewest = min(at_largest, key=lambda r: r["total_calls"])["strategy"]
    fastest = min(at_largest, key=lambda r: r["completion_time"])["strategy"]
    fig.suptitle(
        f"{largest} clients: '{fewest}' makes the fewest calls, '{fastest}' finishes first"
    )
    fig.tight_layout()
    return fig
