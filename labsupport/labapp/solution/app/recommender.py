"""Recommendations from a truncated SVD of the rating matrix (Session 09).

`build_model` runs in a background task and replaces `MODEL_CACHE` in one
assignment when it is done, so a request always sees a whole model: the old
one or the new one, never one half built. Users the model has not seen get
Session 08's list instead (the most-rated movies they have not rated); a
request never builds a model itself.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable

import numpy as np

# user id -> movie ids, best first; replaced whole by build_model
MODEL_CACHE: dict[int, list[int]] = {}


def build_model(ratings: Iterable[dict[str, int]], k: int = 10) -> dict[int, list[int]]:
    """Rank every movie for every user by a rank-`k` approximation of their ratings."""
    global MODEL_CACHE
    by_user: dict[int, dict[int, float]] = defaultdict(dict)
    for row in ratings:
        by_user[int(row["user_id"])][int(row["movie_id"])] = float(row["score"])
    user_ids = sorted(by_user)
    movie_ids = sorted({movie_id for scores in by_user.values() for movie_id in scores})
    column = {movie_id: j for j, movie_id in enumerate(movie_ids)}

    matrix = np.zeros((len(user_ids), len(movie_ids)))  # 0 = not rated
    for i, user_id in enumerate(user_ids):
        for movie_id, score in by_user[user_id].items():
            matrix[i, column[movie_id]] = score

    model: dict[int, list[int]] = {}
    if user_ids:
        u, s, vt = np.linalg.svd(matrix, full_matrices=False)
        k = min(k, len(s))
        scores = (u[:, :k] * s[:k]) @ vt[:k]  # (users, movies): no reshape needed
        for i, user_id in enumerate(user_ids):
            best_first = np.argsort(-scores[i], kind="stable")
            model[user_id] = [movie_ids[j] for j in best_first]
    MODEL_CACHE = model  # one assignment: readers never see a half-built model
    return model


def recommend_for_user(ratings: Iterable[dict[str, int]], user_id: int, k: int = 5) -> list[int]:
    """The model's top `k` for this user; before the model knows them, Session 08's list."""
    if user_id in MODEL_CACHE:
        return MODEL_CACHE[user_id][:k]
    rows = list(ratings)
    seen = {row["movie_id"] for row in rows if row["user_id"] == user_id}
    counts = Counter(row["movie_id"] for row in rows if row["movie_id"] not in seen)
    return [movie_id for movie_id, _ in counts.most_common(k)]
