"""How fresh the serving model stays while ratings arrive: a recorder and a metrics reader.

`rate_while_watching` posts ratings to a running server at a steady pace from
one thread while the caller's thread reads `GET /recommender` every
`sample_every` seconds, and returns one row per reading: how many ratings the
model has not seen, how old the oldest of them is, and which model version
serves. `plots.freshness.timeline` draws it. `metric_samples` turns a
`GET /metrics` answer into a dict with `prometheus_client`'s own parser.
Every loop is bounded in count and in time; all times are in seconds.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import httpx
import pandas as pd
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["COLUMNS", "metric_samples", "rate_while_watching"]

COLUMNS = ("t", "posted", "version", "ratings_since_build", "staleness_seconds")
"""The columns of `rate_while_watching`'s rows."""


def _post_ratings(
    url: str, n: int, per_second: float, seed: int, posted: list[int], stop: threading.Event
) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=url, timeout=5.0) as http:
        for i in range(n):
            if stop.wait(1.0 / per_second):
                return
            rating = {"movie_id": rng.randint(1, 72), "user_id": rng.randint(1, 40), "score": 5}
            http.post("/ratings", json=rating).raise_for_status()
            posted[0] = i + 1


def rate_while_watching(
    url: str,
    *,
    n_ratings: int = 60,
    per_second: float = 20.0,
    sample_every: float = 0.1,
    settle: float = 3.0,
    seed: int = 0,
) -> pd.DataFrame:
    """Post `n_ratings` ratings at `per_second`, reading `GET /recommender` meanwhile.

    Readings go on after the last rating until the model has seen every
    rating, or `settle` seconds pass.

    Args:
        url: The server's base URL.
        n_ratings: How many ratings to post (seeded random users and movies).
        per_second: How fast to post them.
        sample_every: The pause between two readings.
        settle: How long to keep reading after the last rating, at most.
        seed: Seeds who rates what.

    Returns:
        One row per reading, with the `COLUMNS`; `t` counts from the start.
    """
    posted, stop = [0], threading.Event()
    poster = threading.Thread(
        target=_post_ratings,
        args=(url, n_ratings, per_second, seed, posted, stop),
        name="rate-while-watching",
        daemon=True,
    )
    rows: list[dict[str, Any]] = []
    start = time.monotonic()
    deadline = start + n_ratings / per_second + settle + 5.0  # whatever happens, stop here
    finished_at: float | None = None
    poster.start()
    try:
        with httpx.Client(base_url=url, timeout=5.0) as http:
            while (now := time.monotonic()) < deadline:
                info = http.get("/recommender").json()
                row = {key: info[key] for key in COLUMNS[2:]}
                rows.append({"t": now - start, "posted": posted[0], **row})
                if finished_at is None and not poster.is_alive():
                    finished_at = now
                if finished_at is not None and (
                    info["ratings_since_build"] == 0 or now - finished_at > settle
                ):
                    break
                time.sleep(sample_every)
    finally:
        stop.set()
        poster.join(5.0)
    return pd.DataFrame(rows, columns=list(COLUMNS))


def metric_samples(
    text: str, prefix: str = "labsupport_"
) -> dict[tuple[str, tuple[Any, ...]], float]:
    """Every sample of a Prometheus text answer: `(name, sorted label pairs) -> value`.

    Args:
        text: The body of a `GET /metrics` answer.
        prefix: Keep only the metrics whose names start with it.
    """
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith(prefix)
    }
