"""Self-checks for the exercises of the SVD recommender notebook.

Each `check_*` function calls the student's function on small inputs,
compares with a reference answer, prints a `✔` line when it matches and
raises `CheckFailed` with one sentence of help
(what was expected, what to look at) when it does not. Checks never change
the inputs they are given.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence, Sized
from typing import Any

import numpy as np
import numpy.typing as npt

from labsupport._types import RatingArrays
from labsupport.classroom.checks import CheckFailed, passed, require

__all__ = [
    "check_choose_k",
    "check_fixed_scores",
    "check_rank_k",
    "check_rank_unseen",
    "reference_choose_k",
    "reference_rank_k",
]

_FloatMatrix = npt.NDArray[np.float64]

_ATOL = 1e-8  # agreement tolerance for reconstructions, in stars


def _sample_matrices(seed: int) -> list[_FloatMatrix]:
    """Return small rating-like matrices (zeros where missing) of awkward shapes."""
    rng = np.random.default_rng(seed)
    shapes = [(4, 6), (6, 4), (3, 3), (1, 5), (5, 1)]
    matrices = []
    for shape in shapes:
        scores = rng.integers(1, 6, size=shape).astype(np.float64)
        scores[rng.random(shape) < 0.3] = 0.0
        matrices.append(scores)
    return matrices


def _call(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call the student's function, turning a crash into a helpful CheckFailed."""
    try:
        return function(*args, **kwargs)
    except CheckFailed:
        raise
    except Exception as exc:
        shapes = ", ".join(str(np.shape(a)) for a in args if isinstance(a, np.ndarray))
        where = f" on an input of shape {shapes}" if shapes else ""
        msg = (
            f"your function raised {type(exc).__name__}: {str(exc).rstrip('.')}{where}; "
            "print the shapes of the intermediate arrays to see where it goes wrong"
        )
        raise CheckFailed(msg) from exc


def check_fixed_scores(fixed_scores: Callable[[_FloatMatrix], Any]) -> None:
    """Check `fixed_scores(matrix)`: the seed's score matrix without the reshape bug.

    The right answer has one score per (user, movie), shape `(n_users,
    n_movies)`, and (because the SVD is full rank) equals the input.

    Raises:
        CheckFailed: if the shape or the values are wrong, or it crashes.
    """
    for matrix in _sample_matrices(seed=0):
        original = matrix.copy()
        result = np.asarray(_call(fixed_scores, matrix))
        require(
            np.array_equal(matrix, original),
            "fixed_scores changed the matrix it was given; work on the SVD factors instead",
        )
        require(
            result.shape == matrix.shape,
            f"for a {matrix.shape[0]} x {matrix.shape[1]} matrix the scores should have shape "
            f"{matrix.shape} (one per user and movie), but yours has shape {result.shape}; "
            "multiplying by the ones vector sums each row into one number: drop it",
        )
        require(
            bool(np.allclose(result, matrix, atol=_ATOL)),
            "the shape is right but the values are not U * S @ Vt: for a full-rank SVD that "
            "product equals the input matrix (check you multiply u by s, not by vt)",
        )
    passed("fixed_scores returns one score per user and movie: exactly the input, as feared")


def reference_rank_k(matrix: Any, k: int) -> _FloatMatrix:
    """Return the best rank-*k* approximation of *matrix* (truncated SVD).

    Args:
        matrix: A 2-D array.
        k: Number of singular triplets kept; clipped to the matrix's rank.

    Returns:
        `U[:, :k] * S[:k] @ Vt[:k]`, the same shape as *matrix*.
    """
    array = np.asarray(matrix, dtype=np.float64)
    u, s, vt = np.linalg.svd(array, full_matrices=False)
    return np.asarray((u[:, :k] * s[:k]) @ vt[:k])


def check_rank_k(rank_k: Callable[[_FloatMatrix, int], Any]) -> None:
    """Check `rank_k(matrix, k)`, the rank-*k* reconstruction, against numpy.

    Every `k` from 1 to `min(matrix.shape) - 1` is tried (the range
    `scipy.sparse.linalg.svds` accepts), on small matrices of a few
    shapes; a numpy full-SVD answer passes too.

    Raises:
        CheckFailed: if a reconstruction has the wrong shape, rank or values.
    """
    for matrix in _sample_matrices(seed=1)[:3]:
        original = matrix.copy()
        for k in range(1, min(matrix.shape)):
            result = np.asarray(_call(rank_k, matrix, k), dtype=np.float64)
            require(
                np.array_equal(matrix, original),
                "rank_k changed the matrix it was given; compute on the SVD factors instead",
            )
            require(
                result.shape == matrix.shape,
                f"rank_k(matrix, {k}) should have the matrix's shape {matrix.shape}, not "
                f"{result.shape}: slice u[:, :k], s[:k] and vt[:k, :]",
            )
            expected = reference_rank_k(matrix, k)
            if not np.allclose(result, expected, atol=1e-6):
                rank = int(np.linalg.matrix_rank(result))
                hint = (
                    f"rank_k(matrix, {k}) has rank {rank}, not {k}: keep exactly k columns of u, "
                    "k singular values and k rows of vt"
                    if rank != k and k <= np.linalg.matrix_rank(matrix)
                    else f"rank_k(matrix, {k}) differs from numpy's truncated SVD: keep the k "
                    "LARGEST singular values (numpy lists them first) and scale u's columns by s"
                )
                raise CheckFailed(hint)
    passed("rank_k matches numpy's truncated SVD for every k")


def reference_choose_k(
    train: RatingArrays, ks: Sequence[int], *, seed: int, top_n: int = 10
) -> int:
    """Return the k with the best validation precision@*top_n* for PureSVD.

    The validation split is carved from *train* with
    `split_per_user(train, seed=seed)`; each k fits
    `build_model(fit, rank=k, method="puresvd", seed=seed)`. Ties go to the
    smallest k.

    Args:
        train: Training ratings (never the test split).
        ks: Candidate ranks.
        seed: Seed for the split and the SVD.
        top_n: Length of the recommendation list scored.

    Returns:
        The chosen k.

    Raises:
        ValueError: if *ks* is empty.
    """
    from labsupport.data import split_per_user
    from labsupport.recommender import build_model, precision_recall_at_k

    if len(ks) == 0:
        msg = "ks must hold at least one candidate rank"
        raise ValueError(msg)
    fit, valid = split_per_user(train, seed=seed)
    best_k, best = int(min(ks)), -1.0
    for k in sorted(ks):
        model = build_model(fit, rank=k, method="puresvd", seed=seed)
        score = precision_recall_at_k(model, fit, valid, k=top_n)[f"precision@{top_n}"]
        if score > best:
            best_k, best = int(k), score
    return best_k


def check_choose_k(
    choose_k: Callable[..., Any], train: RatingArrays, ks: Sequence[int], *, seed: int
) -> None:
    """Check `choose_k(train, ks, seed=seed)` against the reference choice.

    The student's function is run on *train* and on a second, small data set
    (the catalogue demo ratings), so an answer typed in by hand does not pass.

    Raises:
        CheckFailed: if a choice differs from the reference, or is not in *ks*.
    """
    from labsupport.data import demo_ratings

    cases = [("your training split", train), ("the demo ratings", demo_ratings(seed=seed))]
    for name, ratings in cases:
        got = _call(choose_k, ratings, ks, seed=seed)
        require(
            isinstance(got, (int, np.integer)) and int(got) in set(ks),
            f"choose_k should return one of the candidate ranks {tuple(ks)}, got {got!r}",
        )
        expected = reference_choose_k(ratings, ks, seed=seed)
        require(
            int(got) == expected,
            f"on {name} the best validation precision@10 is at k = {expected}, but yours "
            f"returned {int(got)}: carve (fit, valid) = split_per_user(train, seed=seed), fit "
            "method='puresvd' on fit, score precision@10 on valid, keep the highest "
            "(smallest k on ties); never look at the test split",
        )
    passed("choose_k picks k on a validation split carved from training, as the reference does")


def check_rank_unseen(
    rank_unseen: Callable[..., Any],
    scores: Any,
    matrix: Any,
    user_ids: Sequence[int],
    movie_ids: Sequence[int],
) -> None:
    """Check `rank_unseen(scores, matrix, user_ids, movie_ids)`.

    The answer maps each user id to all the movie ids that user has NOT
    rated (`matrix == 0`), best score first.

    Raises:
        CheckFailed: if a rated movie is recommended, an unseen one is
            missing, or the order does not follow the scores.
    """
    score_array = np.asarray(scores, dtype=np.float64)
    rated = np.asarray(matrix) != 0
    result = _call(rank_unseen, score_array.copy(), np.asarray(matrix).copy(), user_ids, movie_ids)
    entries = f" with {len(result)} entries" if isinstance(result, Sized) else ""
    require(
        isinstance(result, Mapping) and set(result) == set(user_ids),
        "rank_unseen should return a dict with one entry per user id, like the seed's "
        f"MODEL_CACHE; got {type(result).__name__}{entries}",
    )
    movies = list(movie_ids)
    for row, user in enumerate(user_ids):
        ranked = [int(m) for m in result[user]]
        seen = {movies[j] for j in np.flatnonzero(rated[row])}
        unseen = [movies[j] for j in np.flatnonzero(~rated[row])]
        leaked = [m for m in ranked if m in seen]
        require(
            not leaked,
            f"user {user} is offered movie {leaked[:1]} that they already rated: drop the "
            "movies whose matrix entry is non-zero",
        )
        require(
            sorted(ranked) == sorted(unseen),
            f"user {user} should get each of their {len(unseen)} unrated movies exactly once, "
            f"but got {len(ranked)} ids",
        )
        order = [movies.index(m) for m in ranked]
        require(
            bool(np.all(np.diff(score_array[row, order]) <= 1e-12)),
            f"user {user}'s list is not sorted by score, best first: argsort the scores and "
            "reverse it (or argsort their negatives)",
        )
    passed("rank_unseen never repeats a rated movie and keeps the score order")
