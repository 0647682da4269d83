"""Section ``quality``: how good the recommendations are, on real MovieLens data.

Per data set, a random 75/25 split of each user's ratings (fixed seed,
:func:`labsupport.data.split_per_user`); movies the user rated in training are
never recommended. Four methods in one table:

``default``
    :func:`~labsupport.recommender.build_model` with its defaults, lists from
    ``recommend(model, user, limit=10, exclude_rated=True)``.
``most rated``
    The movies with the most training ratings, minus each user's own: the
    classic popularity baseline any recommender must beat.
``top rated``
    The model's own chart for unknown users (mean rating shrunk towards the
    global mean), minus each user's training movies.
``seed full-rank``
    :func:`~labsupport.recommender.seed_build_model`: a full-rank SVD
    reproduces the training matrix exactly, so every unrated movie scores
    (numerically) zero and the top-10 is an accident of rounding.

Metrics follow Microsoft Recommenders (binary relevance: any held-out rating
counts): precision@k = hits / k, recall@k = hits / held-out movies, nDCG@k,
MAP@k divided by ``min(held-out, k)``; averaged over users with held-out
ratings. RMSE of :func:`~labsupport.recommender.predict` is averaged over
ml-100k's five ready-made folds u1..u5 and, for ml-latest-small, taken on
its own split. MovieLens is read from ``../shared/data/movielens`` (or
``$LABSUPPORT_MOVIELENS``) and never copied into the repository.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from benchmarks._common import Column, fmt
from labsupport._types import RatingArrays
from labsupport.data import find_movielens, load_movielens, load_movielens_fold, split_per_user
from labsupport.recommender import (
    build_model,
    precision_recall_at_k,
    recommend,
    rmse,
    seed_build_model,
)

__all__ = ["COLUMNS", "DEFAULTS", "evaluate", "ranking_metrics", "run"]

DEFAULTS: dict[str, Any] = {
    "datasets": ["ml-100k", "ml-latest-small"],
    "k": 10,
    "test_fraction": 0.25,
    "seed": 0,
    "methods": ["default", "most rated", "top rated", "seed full-rank"],
}

PRECISION_TARGET = 0.42
RMSE_TARGET = 0.925

COLUMNS: list[Column] = [
    ("dataset", "data set", fmt("")),
    ("method", "method", fmt("")),
    ("precision", "precision@10", fmt(".3f")),
    ("recall", "recall@10", fmt(".3f")),
    ("ndcg", "nDCG@10", fmt(".3f")),
    ("map", "MAP@10", fmt(".3f")),
    ("rmse", "RMSE", fmt(".4f")),
    ("rmse_on", "RMSE on", fmt("")),
    ("seconds", "build s", fmt(".2f")),
]


def ranking_metrics(
    lists: Mapping[int, Sequence[int]], test: RatingArrays, *, k: int = 10
) -> dict[str, float]:
    """Score top-``k`` lists against held-out ratings (the package's definitions).

    Args:
        lists: Each user's recommended movie ids, best first; users with
            held-out ratings but no list score zero.
        test: Held-out ratings; every rated movie is relevant.
        k: List length; longer lists are cut.

    Returns:
        ``{"precision", "recall", "ndcg", "map", "users"}``.

    Raises:
        ValueError: if ``test`` is empty or ``k`` is below 1.
    """
    if len(test) == 0 or k < 1:
        msg = f"need at least one test rating and k >= 1, got {len(test)} ratings and k={k}"
        raise ValueError(msg)
    relevant = _movies_by_user(test)
    discount = [1 / math.log2(i + 2) for i in range(k)]
    totals = dict.fromkeys(("precision", "recall", "ndcg", "map"), 0.0)
    for user, wanted in relevant.items():
        top = list(lists.get(user, ()))[:k]
        hits = [movie in wanted for movie in top]
        n_hits = sum(hits)
        ideal = sum(discount[: min(len(wanted), k)])
        totals["precision"] += n_hits / k
        totals["recall"] += n_hits / len(wanted)
        totals["ndcg"] += sum(d for d, hit in zip(discount, hits, strict=False) if hit) / ideal
        found, ap = 0, 0.0
        for rank, hit in enumerate(hits, start=1):
            if hit:
                found += 1
                ap += found / rank
        totals["map"] += ap / min(len(wanted), k)
    result = {name: total / len(relevant) for name, total in totals.items()}
    result["users"] = float(len(relevant))
    return result


def _movies_by_user(ratings: RatingArrays) -> dict[int, set[int]]:
    movies: dict[int, set[int]] = {}
    for user, movie in zip(ratings.user_ids.tolist(), ratings.movie_ids.tolist(), strict=True):
        movies.setdefault(user, set()).add(movie)
    return movies


def _unseen(ranked: Sequence[int], seen: set[int], k: int) -> list[int]:
    """Return the first ``k`` of ``ranked`` that are not in ``seen``."""
    out = []
    for movie in ranked:
        if movie not in seen:
            out.append(movie)
            if len(out) == k:
                break
    return out


def evaluate(
    train: RatingArrays,
    test: RatingArrays,
    *,
    k: int = 10,
    methods: Sequence[str] = ("default", "most rated", "top rated", "seed full-rank"),
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Build each method on ``train`` and score its top-``k`` lists on ``test``.

    Returns:
        One row per method with ``precision``, ``recall``, ``ndcg``, ``map``,
        ``seconds`` (build time), and for ``default`` the package's own
        ``precision_recall_at_k`` as a cross-check and the RMSE on ``test``.
    """
    users = np.unique(test.user_ids).tolist()
    seen = _movies_by_user(train)
    rows = []
    model = None
    for method in methods:
        t0 = time.perf_counter()
        row: dict[str, Any] = {"method": method}
        if method == "most rated":
            movies, counts = np.unique(train.movie_ids, return_counts=True)
            chart = movies[np.lexsort((movies, -counts))].tolist()
            row["seconds"] = round(time.perf_counter() - t0, 3)
            lists = {u: _unseen(chart, seen.get(u, set()), k) for u in users}
        elif method in ("default", "top rated"):
            model = model or build_model(train, seed=seed)
            row["seconds"] = round(time.perf_counter() - t0, 3)
            if method == "default":
                lists = {u: recommend(model, u, limit=k, exclude_rated=True) for u in users}
                check = precision_recall_at_k(model, train, test, k=k)
                row["package_precision"] = round(check[f"precision@{k}"], 4)
                row["rmse"] = round(rmse(model, test), 4)
            else:
                chart = model.popular.tolist()
                lists = {u: _unseen(chart, seen.get(u, set()), k) for u in users}
        elif method == "seed full-rank":
            ranked = seed_build_model(train)
            row["seconds"] = round(time.perf_counter() - t0, 3)
            lists = {u: _unseen(ranked.get(u, []), seen.get(u, set()), k) for u in users}
        else:
            msg = f"unknown method {method!r}; choose from {', '.join(DEFAULTS['methods'])}"
            raise ValueError(msg)
        row.update({name: round(v, 4) for name, v in ranking_metrics(lists, test, k=k).items()})
        rows.append(row)
    return rows


def _fold_rmse(path: Any, seed: int) -> dict[str, Any]:
    values = []
    for fold in range(1, 6):
        train, test = load_movielens_fold(path, fold)
        values.append(rmse(build_model(train, seed=seed), test))
    return {"rmse_folds": [round(v, 4) for v in values], "rmse": round(float(np.mean(values)), 4)}


def run(settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate every method on every MovieLens copy found; return the section's result."""
    cfg = {**DEFAULTS, **(settings or {})}
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    for name in cfg["datasets"]:
        path = find_movielens(name)
        if path is None:
            notes.append(
                f"{name} skipped: not found in ../shared/data/movielens/{name} or "
                "$LABSUPPORT_MOVIELENS (download it from grouplens.org; it is never committed)"
            )
            print(f"  {notes[-1]}", flush=True)
            continue
        data = load_movielens(path)
        train, test = split_per_user(
            data.ratings, test_fraction=cfg["test_fraction"], seed=cfg["seed"]
        )
        found = evaluate(train, test, k=cfg["k"], methods=cfg["methods"], seed=cfg["seed"])
        for row in found:
            row["dataset"] = name
            if row["method"] == "default":
                row["rmse_on"] = "75/25 split"
                if name == "ml-100k":
                    row["rmse_split"] = row["rmse"]
                    row.update(_fold_rmse(path, cfg["seed"]))
                    row["rmse_on"] = "folds u1-u5"
            print(f"  {name} {row['method']}: P@10 {row['precision']:.3f}", flush=True)
        rows.extend(found)
    return {
        "title": "Recommendation quality on MovieLens (75/25 split per user, seed 0)",
        "settings": cfg,
        "rows": rows,
        "targets": _targets(rows),
        "notes": notes,
    }


def _targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    targets = []
    for row in rows:
        if row["method"] != "default" or row["dataset"] != "ml-100k":
            continue  # the targets are set on ml-100k; other data sets are for reference
        targets.append(
            {
                "name": f"{row['dataset']} precision@10",
                "target": f">= {PRECISION_TARGET}",
                "measured": f"{row['precision']:.3f}",
                "value": row["precision"],
                "met": row["precision"] >= PRECISION_TARGET,
            }
        )
        targets.append(
            {
                "name": f"{row['dataset']} RMSE ({row['rmse_on']})",
                "target": f"<= {RMSE_TARGET}",
                "measured": f"{row['rmse']:.4f}",
                "value": row["rmse"],
                "met": row["rmse"] <= RMSE_TARGET,
            }
        )
    return targets
