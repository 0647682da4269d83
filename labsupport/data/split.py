"""Split ratings into a training and a test part, per user."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from labsupport._types import RatingArrays

__all__ = ["split_per_user"]


def split_per_user(
    ratings: RatingArrays, *, test_fraction: float = 0.25, seed: int = 0
) -> tuple[RatingArrays, RatingArrays]:
    """Hold out a random share of each user's ratings.

    A user with `n >= 2` ratings puts `test_fraction * n` of them (rounded
    half up) in the test set, but always keeps at least one in training; a
    user with a single rating keeps it in training. So every test user is
    known to the model, as when a live service refreshes recommendations.
    Both parts keep the input's order.

    Args:
        ratings: The ratings to split.
        test_fraction: Share of each user's ratings to hold out, from 0 to
            below 1.
        seed: Seed for choosing which ratings are held out.

    Returns:
        `(train, test)`.

    Raises:
        ValueError: if `test_fraction` is outside `[0, 1)`.
    """
    if not 0.0 <= test_fraction < 1.0:
        msg = f"test_fraction must be at least 0 and below 1, got {test_fraction}"
        raise ValueError(msg)
    rng = np.random.default_rng(seed)
    n = len(ratings)
    shuffled = rng.permutation(n)
    order = shuffled[np.argsort(ratings.user_ids[shuffled], kind="stable")]
    sorted_users = ratings.user_ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])
    counts = np.diff(np.r_[starts, n])
    n_test = np.minimum(np.floor(test_fraction * counts + 0.5).astype(np.int64), counts - 1)
    rank_in_user = np.arange(n) - np.repeat(starts, counts)
    is_test = np.zeros(n, dtype=bool)
    is_test[order] = rank_in_user < np.repeat(n_test, counts)
    return _take(ratings, ~is_test), _take(ratings, is_test)


def _take(ratings: RatingArrays, mask: npt.NDArray[np.bool_]) -> RatingArrays:
    return RatingArrays(ratings.user_ids[mask], ratings.movie_ids[mask], ratings.scores[mask])
