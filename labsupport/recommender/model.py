"""Build a movie recommender from ratings with truncated SVDs, and answer with it.

One `build_model` call returns an immutable `Model` holding two
small factorisations, because ranking movies and predicting stars are
different jobs:

* **Ranking factors**, used by `recommend`: a rank-`rank` SVD of the
  sparse users x movies rating matrix, zeros where a rating is missing.  The
  default method `"scaled"` is PureSVD (Cremonesi et al., 2010) with three
  tweaks: movie columns are divided by `count**0.3` (so blockbusters do not
  own every factor), user rows by `count**0.4` (so heavy raters do not
  either), and each singular value is weighted by `s**2 / (s**2 + s_k**2)`
  (the last factor counts half), which makes the result much less sensitive
  to the rank.  Movie scores are multiplied back by `count**0.3`.
* **Rating factors**, used by `predict`: the global mean plus shrunk
  user and movie biases, plus a rank-10 SVD of what the biases leave over,
  refined by one round of alternating ridge regressions (penalty 10).

Users with no ratings get the most-rated chart, which beat every mean-rating
chart on held-out new users (`benchmarks/README.md`); a user who rated after
the build can be folded into the item side (`labsupport.recommender.foldin`).

Nothing is ever densified: the matrix is built straight from numpy arrays
with `scipy.sparse` and factored by a seeded randomized SVD
(`labsupport.recommender.svd`).  The seed's design (dense matrix, full-rank
SVD) is kept as `labsupport.recommender.seed.seed_build_model` for
comparison.

The defaults were tuned on a validation split carved out of the *training*
part of the ratings, never on the test part.  What they measure on
MovieLens, against the most-rated chart and the seed's design, is in
`benchmarks/README.md`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from labsupport._types import as_rating_arrays
from labsupport.recommender.svd import (
    encode_ids,
    rating_factors,
    rating_matrix,
    same_pattern,
    shrink,
    truncated_svd,
)
from labsupport.tables import about_seconds, html_table

__all__ = [
    "METHODS",
    "Model",
    "build_model",
    "predict",
    "recommend",
    "recommend_for_user",
    "score_matrix",
]

_FloatArray = npt.NDArray[np.float32]
_IntArray = npt.NDArray[np.int64]

METHODS = ("scaled", "puresvd", "binary", "biased")
"""The ranking factorisations `build_model` knows, default first."""

_ITEM_EXPONENT = 0.3  # "scaled": divide movie columns by count**0.3 ...
_USER_EXPONENT = 0.4  # ... and user rows by count**0.4 before the SVD.
_BIAS_SHRINKAGE = 5.0  # pseudo-ratings pulling each bias towards 0.
_POPULARITY_PRIOR = 10.0  # pseudo-ratings at the global mean: the chart's tie-break.
_EMPTY_MEAN = 3.0  # what predict() says when there are no ratings at all.
_MAX_SCORE_CELLS = 5_000_000  # score_matrix() refuses bigger models.


@dataclass(frozen=True, eq=False, kw_only=True)
class Model:
    """An immutable, fitted recommender: arrays are read-only, fields frozen.

    Users and movies are numbered by their position in the sorted
    `user_ids` and `movie_ids`; every other array uses those positions.
    Replacing the whole model (one assignment) is how a service swaps in a
    rebuilt one without readers ever seeing half of it.

    Attributes:
        user_ids: Sorted unique user ids.
        movie_ids: Sorted unique movie ids.
        user_factors: Ranking factors, one row per user.
        item_factors: Ranking factors, one row per movie; a user's scores
            are `item_factors @ user_factors[row]`.
        fold_in_factors: One row per movie: a user's ranking factors are
            their (scaled) ratings times these rows (`foldin.fold_in`); empty
            in a model saved before fold-in existed, which then cannot fold in.
        rating_user_factors: Residual factors behind `predict`.
        rating_item_factors: Residual factors behind `predict`.
        global_mean: Mean of all ratings.
        user_bias: Shrunk mean offset of each user.
        item_bias: Shrunk mean offset of each movie.
        rated: Users x movies CSR matrix of the ratings themselves.
        popular: Movie ids, most ratings first (ties: higher shrunk mean
            rating, then lower id); what users without ratings get.
        version: Caller's model version number.
        built_at: Wall-clock time of the build (`time.time()`).
        rank: Rank of the ranking factors actually used.
        method: Ranking method, one of `METHODS`.
        n_users: Number of users.
        n_movies: Number of movies.
        n_ratings: Number of distinct (user, movie) ratings.
        build_seconds: How long `build_model` took, in seconds.
    """

    user_ids: _IntArray
    movie_ids: _IntArray
    user_factors: _FloatArray
    item_factors: _FloatArray
    fold_in_factors: _FloatArray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    rating_user_factors: _FloatArray
    rating_item_factors: _FloatArray
    global_mean: float
    user_bias: _FloatArray
    item_bias: _FloatArray
    rated: sp.csr_matrix
    popular: _IntArray
    version: int
    built_at: float
    rank: int
    method: str
    n_users: int
    n_movies: int
    n_ratings: int
    build_seconds: float

    def __post_init__(self) -> None:
        for attribute in fields(self):
            value = getattr(self, attribute.name)
            arrays = [value] if isinstance(value, np.ndarray) else []
            if isinstance(value, sp.csr_matrix):
                arrays = [value.data, value.indices, value.indptr]
            for array in arrays:
                array.flags.writeable = False

    def summary(self) -> dict[str, Any]:
        """Return the JSON-able facts a status endpoint shows about this model."""
        return {
            "version": self.version,
            "built_at": self.built_at,
            "n_users": self.n_users,
            "n_movies": self.n_movies,
            "n_ratings": self.n_ratings,
            "rank": self.rank,
            "method": self.method,
            "build_seconds": self.build_seconds,
        }

    # -- display: the dataclass repr would print every array ----------------

    def _summary_rows(self) -> list[tuple[str, str]]:

        return [
            ("version", str(self.version)),
            ("users", f"{self.n_users:,}"),
            ("movies", f"{self.n_movies:,}"),
            ("ratings", f"{self.n_ratings:,}"),
            ("rank", str(self.rank)),
            ("method", self.method),
            ("build time", about_seconds(self.build_seconds)),
        ]

    def __repr__(self) -> str:
        return (
            f"Model(version={self.version}, users={self.n_users}, movies={self.n_movies}, "
            f"ratings={self.n_ratings}, rank={self.rank}, method={self.method!r})"
        )

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """Show `__repr__` in IPython."""
        printer.text(repr(self))

    def _repr_html_(self) -> str:
        """Show the model in a notebook as a small table of its facts."""

        return html_table(self._summary_rows(), caption=f"Model version {self.version}")


def build_model(
    ratings: Any,
    *,
    rank: int = 30,
    method: str = "scaled",
    version: int = 1,
    seed: int = 0,
    progress: Callable[[float], None] | None = None,
) -> Model:
    """Fit ranking and rating factors to *ratings* and return a new model.

    If a user rated the same movie twice, the later rating wins.  The rank is
    clipped to what the matrix allows; tiny matrices use a dense SVD and
    empty *ratings* give an empty model that recommends nothing.  The same
    input and *seed* always give the same model.

    Args:
        ratings: Anything `as_rating_arrays`
            accepts: seed-style rows, a DataFrame or `RatingArrays`.
        rank: Number of ranking factors.
        method: `"scaled"` (the default; ranks best), `"puresvd"` (SVD
            of the raw ratings, zeros where missing), `"binary"` (SVD of
            the 0/1 "has rated" matrix) or `"biased"` (SVD of what the
            biases leave over: ranks by predicted rating, which ranks badly).
        version: Number stored in the model for the caller's bookkeeping.
        seed: Seed of the random start block of the randomized SVDs.
        progress: Called with fractions rising from 0 to 1.0 as the build
            goes, so a job can report how far it got.

    Returns:
        The fitted model.

    Raises:
        ValueError: if *rank* is below 1, *method* is unknown, or *ratings*
            cannot be converted.
    """
    _check_options(rank, method)
    report = progress if progress is not None else (lambda fraction: None)
    started = time.perf_counter()
    arrays = as_rating_arrays(ratings)
    user_ids, user_pos = encode_ids(arrays.user_ids)
    movie_ids, movie_pos = encode_ids(arrays.movie_ids)
    shape = (len(user_ids), len(movie_ids))
    rated = rating_matrix(user_pos, movie_pos, arrays.scores, shape)
    report(0.05)

    stats = _fit_biases(rated)
    popular = _popularity_chart(stats, movie_ids)
    report(0.2)

    users, items, fold_in, used_rank = _ranking_factors(rated, stats, method, rank, seed)
    report(0.6)

    rating_users, rating_items = rating_factors(stats.residuals, seed)
    report(0.9)
    model = Model(
        user_ids=user_ids,
        movie_ids=movie_ids,
        user_factors=_float32(users),
        item_factors=_float32(items),
        fold_in_factors=_float32(fold_in),
        rating_user_factors=_float32(rating_users),
        rating_item_factors=_float32(rating_items),
        global_mean=stats.mean,
        user_bias=_float32(stats.user_bias),
        item_bias=_float32(stats.item_bias),
        rated=rated,
        popular=popular,
        version=version,
        built_at=time.time(),
        rank=used_rank,
        method=method,
        n_users=len(user_ids),
        n_movies=len(movie_ids),
        n_ratings=rated.nnz,
        build_seconds=time.perf_counter() - started,
    )
    report(1.0)
    return model


def _check_options(rank: int, method: str) -> None:
    """Raise `ValueError` for a rank below 1 or an unknown method."""
    if rank < 1:
        msg = f"rank must be at least 1, got {rank}; try the default of 30"
        raise ValueError(msg)
    if method not in METHODS:
        msg = f"unknown method {method!r}; choose one of {', '.join(METHODS)}"
        raise ValueError(msg)


@dataclass(frozen=True, eq=False)
class _RatingStats:
    """The ratings of a CSR matrix, in its order, with their counts and biases.

    Attributes:
        rows: Each rating's user position.
        cols: Each rating's movie position.
        scores: Each rating, as float64.
        user_count: Ratings per user.
        item_count: Ratings per movie.
        mean: Mean of all ratings (`_EMPTY_MEAN` when there are none).
        item_bias: Shrunk mean offset of each movie from `mean`.
        user_bias: Shrunk mean offset of each user, after the movie's.
        residuals: What the biases leave over, in the ratings' pattern.
    """

    rows: npt.NDArray[Any]
    cols: npt.NDArray[Any]
    scores: npt.NDArray[np.float64]
    user_count: npt.NDArray[Any]
    item_count: npt.NDArray[Any]
    mean: float
    item_bias: npt.NDArray[np.float64]
    user_bias: npt.NDArray[np.float64]
    residuals: sp.csr_matrix


def _fit_biases(rated: sp.csr_matrix) -> _RatingStats:
    """Count the ratings and fit the global mean and the shrunk biases."""
    rows = np.repeat(np.arange(rated.shape[0]), np.diff(rated.indptr))  # CSR order from here on
    cols, scores = rated.indices, rated.data.astype(np.float64)
    user_count = np.diff(rated.indptr)
    item_count = np.bincount(cols, minlength=rated.shape[1])
    mean = float(scores.mean(dtype=np.float64)) if len(scores) else _EMPTY_MEAN
    item_bias = np.bincount(cols, scores - mean, rated.shape[1]) / (item_count + _BIAS_SHRINKAGE)
    user_bias = np.bincount(rows, scores - mean - item_bias[cols], rated.shape[0]) / (
        user_count + _BIAS_SHRINKAGE
    )
    residuals = same_pattern(rated, scores - mean - user_bias[rows] - item_bias[cols])
    return _RatingStats(
        rows, cols, scores, user_count, item_count, mean, item_bias, user_bias, residuals
    )


def _popularity_chart(stats: _RatingStats, movie_ids: _IntArray) -> _IntArray:
    """Return movie ids by number of ratings, most first (ties: higher shrunk mean rating)."""
    total = np.bincount(stats.cols, stats.scores, len(movie_ids))
    shrunk = (total + _POPULARITY_PRIOR * stats.mean) / (stats.item_count + _POPULARITY_PRIOR)
    return movie_ids[np.lexsort((movie_ids, -shrunk, -stats.item_count))]


def _ranking_factors(
    rated: sp.csr_matrix, stats: _RatingStats, method: str, rank: int, seed: int
) -> tuple[npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any], int]:
    """Factor the matrix `method` ranks by; return both factors, the fold-in rows, the rank.

    A user's row `x` of the factored matrix maps to their factors by
    `x V diag(weight / s)` (the least-squares fit with `V` fixed; `x V = u s`
    for an exact SVD): the fold-in rows are `V diag(weight / s)`, divided by
    the movie's scale for `"scaled"`, with a zero column for `"biased"`.
    """
    rows, cols, scores = stats.rows, stats.cols, stats.scores
    if method == "biased":  # rank by predicted rating: b_i + p_u . q_i
        u, s, vt = truncated_svd(stats.residuals, rank, seed)
        user_factors = np.column_stack([u * s, np.ones(len(u))])
        item_factors = np.column_stack([vt.T, stats.item_bias])
        fold_in = np.column_stack([vt.T, np.zeros(len(vt.T))])  # the 1 is set by fold_in()
        return user_factors, item_factors, fold_in, int(s.shape[0])
    values = scores if method == "puresvd" else np.ones_like(scores)
    item_scale = np.ones(rated.shape[1])
    if method == "scaled":
        item_scale = stats.item_count**_ITEM_EXPONENT
        values = scores / (item_scale[cols] * stats.user_count[rows] ** _USER_EXPONENT)
    u, s, vt = truncated_svd(same_pattern(rated, values), rank, seed)
    weight = shrink(s) if method == "scaled" else s
    user_factors = u * weight
    per_s = np.divide(weight, s, out=np.zeros_like(weight), where=s > 0)
    fold_in = vt.T * per_s / np.maximum(item_scale, 1e-12)[:, None]
    return user_factors, vt.T * item_scale[:, None], fold_in, int(s.shape[0])


def recommend(model: Model, user_id: int, limit: int = 5, exclude_rated: bool = False) -> list[int]:
    """Return up to *limit* movie ids for *user_id*, best first.

    By default the user's own rated movies come first, highest rating first
    (ties broken by the model's score), then unrated movies by score.  With
    *exclude_rated* only unrated movies are returned.  Unknown users get the
    popularity chart.  The work per call is one matrix-vector product and a
    top-k selection, never a sort of the whole catalogue.

    Args:
        model: A model from `build_model`.
        user_id: The user to recommend for.
        limit: Maximum number of ids; more than the catalogue returns all.
        exclude_rated: Leave out movies the user has already rated.

    Returns:
        Distinct movie ids as Python ints.

    Raises:
        ValueError: if *limit* is negative.
    """
    if limit < 0:
        msg = f"limit must be 0 or more, got {limit}"
        raise ValueError(msg)
    row = _position(model.user_ids, user_id)
    if row is None:
        return [int(movie) for movie in model.popular[:limit]]
    scores = model.item_factors @ model.user_factors[row]
    start, stop = model.rated.indptr[row], model.rated.indptr[row + 1]
    seen = model.rated.indices[start:stop]
    head: list[int] = []
    if not exclude_rated:
        own = model.rated.data[start:stop]
        order = np.lexsort((-scores[seen], -own))[:limit]
        head = [int(movie) for movie in model.movie_ids[seen[order]]]
    scores[seen] = -np.inf
    wanted = min(limit - len(head), model.n_movies - len(seen))
    return head + [int(movie) for movie in model.movie_ids[_top_k(scores, wanted)]]


def predict(model: Model, user_id: int, movie_id: int) -> float:
    """Predict the rating *user_id* would give *movie_id*, clipped to 1..5.

    An unknown user or movie falls back to the biases that are known, and
    finally to the global mean.

    Args:
        model: A model from `build_model`.
        user_id: The user.
        movie_id: The movie.

    Returns:
        The predicted rating.
    """
    row = _position(model.user_ids, user_id)
    col = _position(model.movie_ids, movie_id)
    value = model.global_mean
    if row is not None:
        value += float(model.user_bias[row])
    if col is not None:
        value += float(model.item_bias[col])
    if row is not None and col is not None:
        value += float(model.rating_user_factors[row] @ model.rating_item_factors[col])
    return min(max(value, 1.0), 5.0)


def score_matrix(model: Model) -> npt.NDArray[np.float64]:
    """Return the users x movies ranking scores of a small model, for plots.

    Args:
        model: A model from `build_model`.

    Returns:
        Array of shape `(n_users, n_movies)`, rows and columns in the order
        of `model.user_ids` and `model.movie_ids`.

    Raises:
        ValueError: if the matrix would have more than 5,000,000 cells.
    """
    cells = model.n_users * model.n_movies
    if cells > _MAX_SCORE_CELLS:
        msg = (
            f"score_matrix would hold {model.n_users:,} x {model.n_movies:,} = {cells:,} cells "
            f"(limit {_MAX_SCORE_CELLS:,}); use recommend() per user, or build a model "
            "from a sample of the ratings for the plot"
        )
        raise ValueError(msg)
    return np.asarray(model.user_factors @ model.item_factors.T, dtype=np.float64)


def recommend_for_user(model_or_ratings: Any, user_id: int, k: int = 5) -> list[int]:
    """Recommend *k* movies for *user_id*, as the seed's entry point did.

    Given a `Model` this is `recommend(model, user_id, k)`.  Given
    raw ratings it builds a model first, every call: nothing is cached behind
    your back, so build once with `build_model` when you call it often.

    Args:
        model_or_ratings: A model, or anything `build_model` accepts.
        user_id: The user to recommend for.
        k: Number of movie ids wanted.

    Returns:
        Movie ids as Python ints.
    """
    model = model_or_ratings
    if not isinstance(model, Model):
        model = build_model(model_or_ratings)
    return recommend(model, user_id, k)


def _float32(array: npt.NDArray[Any]) -> _FloatArray:
    """Return *array* as a C-contiguous float32 copy."""
    return np.ascontiguousarray(array, dtype=np.float32)


def _position(ids: _IntArray, value: int) -> int | None:
    """Return the position of *value* in the sorted *ids*, or None."""
    where = int(np.searchsorted(ids, value))
    return where if where < len(ids) and ids[where] == value else None


def _top_k(scores: npt.NDArray[Any], k: int) -> npt.NDArray[np.intp]:
    """Return the positions of the *k* largest *scores*, largest first."""
    if k <= 0:
        return np.zeros(0, dtype=np.intp)
    best = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    return best[np.argsort(-scores[best], kind="stable")]
