"""The lesson's original recommender design, kept to compare against.

`seed_build_model` is what the workbook started from: a dense users x movies
matrix, a full-rank SVD and a full sort per user. It is correct only in the
sense that it no longer crashes; `build_model` is the design to use.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from labsupport._types import as_rating_arrays

__all__ = ["seed_build_model"]


def seed_build_model(ratings: Any) -> dict[int, list[int]]:
    """Run the seed's `build_model` design, reshape bug fixed, for comparison.

    This is the seed's algorithm kept for benchmarks and notebooks: a dense
    users x movies matrix filled by a Python double loop, a *full-rank*
    `np.linalg.svd`, the product `U S V^T` and a full `argsort` per
    user.  The seed multiplied that product by a ones vector and reshaped
    the result, which raised `ValueError` for more than one movie; here
    the product is used directly.  Even fixed it is useless: a full-rank SVD
    reproduces its input exactly, so each user's "ranking" is just their own
    ratings in order with every unrated movie tied at zero.  It is also slow
    (quadratic memory, cubic SVD): use `build_model`.

    Args:
        ratings: Anything `as_rating_arrays` accepts.

    Returns:
        Each user id mapped to all movie ids, best first.
    """
    arrays = as_rating_arrays(ratings)
    by_user: dict[int, dict[int, float]] = {}
    columns = (arrays.user_ids.tolist(), arrays.movie_ids.tolist(), arrays.scores.tolist())
    for user, movie, score in zip(*columns, strict=True):
        by_user.setdefault(user, {})[movie] = score
    if not by_user:
        return {}
    user_ids = sorted(by_user)
    movie_ids = sorted({movie for rows in by_user.values() for movie in rows})
    matrix = np.zeros((len(user_ids), len(movie_ids)))
    for ui, user in enumerate(user_ids):
        for mj, movie in enumerate(movie_ids):
            matrix[ui, mj] = by_user[user].get(movie, 0)
    u, s, vt = np.linalg.svd(matrix, full_matrices=False)
    scores = (u * s) @ vt
    return {
        user: [movie_ids[i] for i in np.argsort(scores[ui])[::-1]]
        for ui, user in enumerate(user_ids)
    }
