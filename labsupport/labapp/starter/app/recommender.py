"""Recommendations (Session 08): the most-rated movies a user has not rated yet."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable


def recommend_for_user(ratings: Iterable[dict[str, int]], user_id: int, k: int = 5) -> list[int]:
    """Return up to `k` movie ids, most-rated first, leaving out the user's own."""
    rows = list(ratings)
    seen = {row["movie_id"] for row in rows if row["user_id"] == user_id}
    counts = Counter(row["movie_id"] for row in rows if row["movie_id"] not in seen)
    return [movie_id for movie_id, _ in counts.most_common(k)]
