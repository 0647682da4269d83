"""Figures for the workbook, in one readable, colour-blind-safe style.

Nothing here touches matplotlib's global settings at import: a notebook's
Setup cell calls `use_style` once. Figure code that would make a cell
longer than a projector screen lives in the topic modules
(`labsupport.classroom.plots.timeline`...).
"""

from __future__ import annotations

from typing import Any

from labsupport.classroom._lazy import submodule_loader

__all__ = ["PALETTE", "STATUS_COLOURS", "use_style"]

PALETTE = (
    "#0072B2",  # blue
    "#E69F00",  # orange
    "#009E73",  # green
    "#D55E00",  # vermilion
    "#CC79A7",  # purple
    "#56B4E9",  # sky blue
    "#F0E442",  # yellow
    "#000000",  # black
)
"""The Okabe-Ito palette: distinguishable with every common colour-vision deficiency."""

STATUS_COLOURS = {
    "queued": "#E69F00",
    "running": "#0072B2",
    "complete": "#009E73",
    "failed": "#D55E00",
    "interrupted": "#CC79A7",
    "canceled": "#999999",
}
"""One colour per task status, used by every timeline."""


def _style_dict() -> dict[str, Any]:
    """Return the rcParams of the workbook style (large text for projectors)."""
    from cycler import cycler

    return {
        "figure.figsize": (8.0, 4.0),
        "figure.dpi": 100,
        "savefig.dpi": 100,
        "font.size": 12,
        "axes.titlesize": 13,
        "axes.labelsize": 12,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.prop_cycle": cycler(color=PALETTE),
        "image.cmap": "viridis",
        "legend.frameon": False,
    }


def use_style() -> None:
    """Apply the workbook style to matplotlib (call once, in a notebook's Setup)."""
    import matplotlib as mpl

    rc: Any = mpl.rcParams  # its keys are typed as literals; ours are checked at runtime
    rc.update(_style_dict())


# Topic modules (`plots.backoff`...) load on first use.
__getattr__ = submodule_loader(__name__, __path__)
