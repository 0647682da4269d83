"""Request timelines: who waited, and while what was running.

`request_gantt` draws what `labsupport.classroom.loadgen.record_requests`
measured: one horizontal bar per request, from when it was sent to when its
answer arrived, one lane per client, the rebuild windows shaded, one panel
per mode, on a shared time axis in seconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from labsupport.classroom.plots import PALETTE, STATUS_COLOURS

__all__ = ["request_gantt"]

_Window = tuple[float, float]

_FAST = PALETTE[2]  # green: answered quickly
_SLOW = PALETTE[3]  # vermilion: waited
_PLAIN = PALETTE[0]  # blue: no build to compare with
_TRIGGER = PALETTE[1]  # orange: the request that asked for the rebuild
_BUILD = STATUS_COLOURS["running"]
_PANEL_HEIGHT = 1.5  # inches per panel
_EXTRA_HEIGHT = 1.0  # inches for the title, legend and axis label


def request_gantt(
    requests: pd.DataFrame,
    builds: Mapping[str, Sequence[_Window]] | Sequence[_Window] | None = None,
    *,
    slow: float | None = None,
    title: str | None = None,
    panel_titles: Mapping[str, str] | None = None,
    min_width: float = 0.008,
) -> Figure:
    """Draw each request as a bar from start to end, one panel per mode.

    Lanes are the values of the `client` column, sorted; the lanes of the
    requests that *trigger* something (named `"POST ..."`, or `"during"`
    as `record_requests` labels them) come first and
    are drawn in orange. Other bars are green when they were fast and vermilion
    when they took longer than `slow` seconds. Without `slow`, a panel
    with a build calls "slow" anything longer than half its first build, and
    a panel without one draws every bar in blue. Very short requests are
    widened to `min_width` seconds so they stay visible.

    Args:
        requests: Columns `client`, `start` and `end` (seconds), and
            optionally `mode` (one panel per mode, in order of appearance)
            and `latency` (`end - start` when absent).
        builds: The rebuild windows `(start, end)` to shade: a mapping from
            mode to windows, or one list of windows for every panel.
        slow: The latency above which a bar is drawn as slow, in seconds.
        title: The figure's title; say what the figure shows.
        panel_titles: A title per mode (default: the mode, the longest
            request and the build time).
        min_width: The narrowest bar drawn, in seconds.

    Returns:
        The figure (`len(modes)` axes sharing the time axis), open in
        pyplot: end the cell with `plt.show()`.

    Raises:
        ValueError: if a needed column is missing or there are no requests.
    """
    missing = {"client", "start", "end"} - set(requests.columns)
    if missing or requests.empty:
        msg = (
            f"request_gantt needs a non-empty DataFrame with client, start and end columns; "
            f"missing {sorted(missing)} (got {len(requests)} rows)"
        )
        raise ValueError(msg)
    frame = requests.copy()
    if "mode" not in frame.columns:
        frame["mode"] = ""
    if "latency" not in frame.columns:
        frame["latency"] = frame["end"] - frame["start"]
    modes = list(dict.fromkeys(frame["mode"]))
    windows = {mode: _windows_for(builds, mode) for mode in modes}

    height = _EXTRA_HEIGHT + _PANEL_HEIGHT * len(modes)
    fig, grid = plt.subplots(
        len(modes), 1, sharex=True, squeeze=False, figsize=(8.0, height), layout="constrained"
    )
    axes = grid[:, 0]
    right = max([float(frame["end"].max())] + [end for w in windows.values() for _, end in w])
    for ax, mode in zip(axes, modes, strict=True):
        panel = frame[frame["mode"] == mode]
        _draw_panel(ax, panel, windows[mode], slow=slow, min_width=min_width)
        default = _default_title(mode, panel, windows[mode])
        ax.set_title((panel_titles or {}).get(mode, default), loc="left", fontsize=12)
    axes[-1].set_xlim(0.0, right * 1.02)
    axes[-1].set_xlabel("time since the recording started (s)")
    if title:
        fig.suptitle(title)
    fig.legend(
        handles=_legend_handles(frame, windows, slow),
        loc="outside lower center",
        ncols=4,
        fontsize=10,
    )
    return fig


def _windows_for(
    builds: Mapping[str, Sequence[_Window]] | Sequence[_Window] | None, mode: str
) -> list[_Window]:
    if builds is None:
        return []
    if isinstance(builds, Mapping):
        return [(float(a), float(b)) for a, b in builds.get(mode, [])]
    return [(float(a), float(b)) for a, b in builds]


def _is_trigger(lane: str) -> bool:
    return lane.startswith("POST ") or lane == "during"


def _lanes(panel: pd.DataFrame) -> list[str]:
    names = sorted(dict.fromkeys(panel["client"].astype(str)))
    return [n for n in names if _is_trigger(n)] + [n for n in names if not _is_trigger(n)]


def _draw_panel(
    ax: Axes, panel: pd.DataFrame, windows: list[_Window], *, slow: float | None, min_width: float
) -> None:
    threshold = slow
    if threshold is None and windows:
        start, end = windows[0]
        threshold = 0.5 * (end - start)
    for start, end in windows:
        ax.axvspan(start, end, color=_BUILD, alpha=0.15, linewidth=0)
    lanes = _lanes(panel)
    for y, lane in enumerate(lanes):
        rows = panel[panel["client"].astype(str) == lane]
        spans = [
            (float(s), max(float(e) - float(s), min_width))
            for s, e in zip(rows["start"], rows["end"], strict=True)
        ]
        if _is_trigger(lane):
            colours = [_TRIGGER] * len(spans)
        elif threshold is None:
            colours = [_PLAIN] * len(spans)
        else:
            colours = [_SLOW if lat > threshold else _FAST for lat in rows["latency"]]
        ax.broken_barh(spans, (y - 0.35, 0.7), facecolors=colours, linewidth=0)
    ax.set_yticks(range(len(lanes)), lanes)
    ax.set_ylim(len(lanes) - 0.5, -0.5)  # first lane on top
    ax.grid(axis="y", visible=False)


def _default_title(mode: str, panel: pd.DataFrame, windows: list[_Window]) -> str:
    others = panel[~panel["client"].astype(str).map(_is_trigger)]
    longest = float((others if len(others) else panel)["latency"].max())
    text = (
        f"{mode}: slowest request {longest:.2f} s" if mode else f"slowest request {longest:.2f} s"
    )
    if windows:
        start, end = windows[0]
        text += f", build {end - start:.2f} s"
    return text


def _legend_handles(
    frame: pd.DataFrame, windows: Mapping[str, list[_Window]], slow: float | None
) -> list[Patch]:
    clients = frame["client"].astype(str)
    has_builds = any(windows.values())
    handles = []
    if has_builds or slow is not None:
        handles += [
            Patch(color=_FAST, label="request answered fast"),
            Patch(color=_SLOW, label="request that waited"),
        ]
    else:
        handles.append(Patch(color=_PLAIN, label="one task, start to end"))
    if clients.map(_is_trigger).any():
        handles.append(Patch(color=_TRIGGER, label="the rebuild request"))
    if has_builds:
        handles.append(Patch(color=_BUILD, alpha=0.15, label="rebuild running"))
    return handles
