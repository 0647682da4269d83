"""Measure a model against held-out ratings: top-k list quality and RMSE.

`precision_recall_at_k` scores the ranking factors (what `recommend`
returns), `rmse` the rating factors (what `predict` returns). Split the
ratings with `labsupport.data.split_per_user` first, and fit the model on the
training part only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from labsupport._types import RatingArrays
from labsupport.recommender.model import Model

__all__ = ["precision_recall_at_k", "rmse"]

_IntArray = npt.NDArray[np.int64]


def precision_recall_at_k(
    model: Model, train: RatingArrays, test: RatingArrays, k: int = 10
) -> dict[str, float]:
    """Score the model's top-*k* lists against held-out ratings.

    For every user with at least one test rating, the *k* best-scored movies
    the user did not rate in *train* are compared with the user's test
    movies (any rating counts as relevant).  Definitions follow Microsoft
    Recommenders: precision = hits / k, recall = hits / test movies, nDCG
    with binary gains, MAP@k divided by `min(test movies, k)`; each is
    averaged over users.  Unknown users get the popularity chart.

    Args:
        model: A model fitted on *train*.
        train: Ratings whose movies are excluded from each user's list.
        test: Held-out ratings.
        k: List length.

    Returns:
        `{"precision@k", "recall@k", "ndcg@k", "map@k", "users"}` with *k*
        spelled out, e.g. `"precision@10"`.

    Raises:
        ValueError: if *k* is below 1 or *test* is empty.
    """
    if k < 1 or len(test) == 0:
        msg = f"need k >= 1 and at least one test rating, got k={k} and {len(test)} ratings"
        raise ValueError(msg)
    test_users, test_rows = np.unique(test.user_ids, return_inverse=True)
    pairs = np.unique(np.column_stack([test_rows, test.movie_ids]), axis=0)
    n_relevant = np.bincount(pairs[:, 0])
    model_rows, known = _positions(model.user_ids, test_users)
    test_cols, in_catalogue = _positions(model.movie_ids, test.movie_ids)
    relevant = np.unique(test_rows[in_catalogue] * model.n_movies + test_cols[in_catalogue])
    train_rows, train_known = _positions(test_users, train.user_ids)
    train_cols, train_in = _positions(model.movie_ids, train.movie_ids)
    keep = train_known & train_in
    seen = sp.csr_matrix(
        (np.ones(keep.sum(), dtype=bool), (train_rows[keep], train_cols[keep])),
        shape=(len(test_users), model.n_movies),
    )
    chart = np.zeros(model.n_movies)
    chart[_positions(model.movie_ids, model.popular)[0]] = -np.arange(model.n_movies)
    top_n = min(k, model.n_movies)
    discount = 1 / np.log2(np.arange(2, k + 2))
    totals = dict.fromkeys(("precision", "recall", "ndcg", "map"), 0.0)
    batch = max(1, 4_000_000 // max(model.n_movies, 1))
    for start in range(0, len(test_users), batch):
        users = np.arange(start, min(start + batch, len(test_users)))
        scores = np.tile(chart, (len(users), 1))
        scores[known[users]] = model.user_factors[model_rows[users][known[users]]] @ (
            model.item_factors.T
        )
        scores[seen[users].nonzero()] = -np.inf
        top = _top_k_rows(scores, top_n)
        hits = np.zeros((len(users), k), dtype=bool)
        hits[:, :top_n] = np.isin(users[:, None] * model.n_movies + top, relevant)
        hits[:, :top_n] &= np.isfinite(np.take_along_axis(scores, top, 1))
        n_true = n_relevant[users]
        ideal = np.cumsum(discount)[np.minimum(n_true, k) - 1]
        precision_at = np.cumsum(hits, axis=1) / np.arange(1, k + 1)
        totals["precision"] += float((hits.sum(1) / k).sum())
        totals["recall"] += float((hits.sum(1) / n_true).sum())
        totals["ndcg"] += float(((hits @ discount) / ideal).sum())
        totals["map"] += float(((precision_at * hits).sum(1) / np.minimum(n_true, k)).sum())
    result = {f"{name}@{k}": total / len(test_users) for name, total in totals.items()}
    result["users"] = float(len(test_users))
    return result


def rmse(model: Model, test: RatingArrays) -> float:
    """Return the root-mean-square error of `predict` on *test*.

    Args:
        model: A model from `build_model`.
        test: Held-out ratings.

    Returns:
        The RMSE, in stars.

    Raises:
        ValueError: if *test* is empty.
    """
    if len(test) == 0:
        msg = "rmse needs at least one test rating"
        raise ValueError(msg)
    rows, row_known = _positions(model.user_ids, test.user_ids)
    cols, col_known = _positions(model.movie_ids, test.movie_ids)
    both = row_known & col_known
    value = np.full(len(test), model.global_mean)
    value[row_known] += model.user_bias[rows[row_known]]
    value[col_known] += model.item_bias[cols[col_known]]
    value[both] += np.einsum(
        "ij,ij->i",
        model.rating_user_factors[rows[both]],
        model.rating_item_factors[cols[both]],
    )
    error = np.clip(value, 1.0, 5.0) - test.scores
    return float(np.sqrt(np.mean(error**2)))


def _positions(ids: _IntArray, values: _IntArray) -> tuple[npt.NDArray[np.intp], npt.NDArray[Any]]:
    """Find each of *values* in the sorted *ids*: positions (0 where absent) and a found mask."""
    where = np.minimum(np.searchsorted(ids, values), max(len(ids) - 1, 0))
    found = ids[where] == values if len(ids) else np.zeros(len(values), dtype=bool)
    return np.where(found, where, 0), found


def _top_k_rows(scores: npt.NDArray[Any], k: int) -> npt.NDArray[np.intp]:
    """Return the positions of the *k* largest scores of each row, largest first."""
    if k < scores.shape[1]:
        best = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        best = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    order = np.argsort(-np.take_along_axis(scores, best, 1), axis=1, kind="stable")
    return np.take_along_axis(best, order, 1)
