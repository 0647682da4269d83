"""How stale the serving model was while ratings arrived, and when it was rebuilt.

`timeline` draws the rows of `labsupport.classroom.freshness.rate_while_watching`:
the age of the oldest rating the model had not seen, and how many it had not
seen, over time, with a line at every new model version.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from labsupport.classroom.plots import PALETTE

__all__ = ["timeline"]


def timeline(rows: pd.DataFrame, *, title: str = "Ratings arriving, model refreshing") -> Figure:
    """Two panels over time: staleness (s) and unseen ratings; a dotted line per new version."""
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(9, 5))
    top.step(rows["t"], rows["staleness_seconds"].fillna(0.0), where="post", color=PALETTE[3])
    top.set_ylabel("staleness (s)")
    bottom.step(rows["t"], rows["ratings_since_build"], where="post", color=PALETTE[0])
    bottom.plot(rows["t"], rows["posted"], color=PALETTE[7], linestyle="--", label="posted")
    bottom.set_ylabel("ratings")
    bottom.set_xlabel("seconds since the first rating")
    changes = rows.loc[rows["version"].diff().fillna(0) > 0]
    for t, version in zip(changes["t"], changes["version"], strict=True):
        for ax in (top, bottom):
            ax.axvline(t, color=PALETTE[2], linestyle=":", linewidth=1.5)
        top.annotate(f"v{int(version)}", (t, top.get_ylim()[1]), ha="left", va="top", fontsize=9)
    bottom.plot([], [], color=PALETTE[0], label="not yet in the model")
    bottom.plot([], [], color=PALETTE[2], linestyle=":", label="a new model serves")
    bottom.legend(loc="upper left", fontsize=9)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
