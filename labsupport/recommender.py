"""Build a movie recommender from ratings with truncated SVDs, and evaluate it.

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

Nothing is ever densified: the matrix is built straight from numpy arrays
with `scipy.sparse` and factored by a seeded randomized SVD.  The
seed's design (dense matrix, full-rank SVD) is kept as
`seed_build_model` for comparison.

How the defaults were chosen, always on a validation split carved out of the
*training* part (each user's training ratings split 75/25 again, three
seeds), never on the test part:

* Ranking (precision@10, training movies excluded), on ml-100k and
  ml-latest-small: exponents 0.3 / 0.4 with the weighting beat plain
  PureSVD at every rank tried (10 to 50), and rank 30 was within 2 % of the
  best rank on both (ml-100k peaked at 20, ml-latest-small at 30).
* Prediction (RMSE on ml-100k folds u1..u5, 20 % of each `uN.base` held
  out): bias shrinkage 5, residual rank 10 and one ALS round with penalty
  10 sit on a flat optimum (ranks 5 to 20, 1 to 3 rounds: all within 0.002).

What they give on the test parts.  ml-100k, each user's ratings split 75/25
by `labsupport.data.split_per_user` (seed 0, as in `python -m
benchmarks`), training movies excluded from the lists:

    ranking                            precision@10   nDCG@10
    "scaled", rank 30 (default)               0.422     0.483
    "puresvd", rank 30 / rank 15      0.369 / 0.404     0.426 / 0.461
    "binary", rank 30                         0.375     0.433
    "biased", rank 30                         0.116     0.131
    most-rated movies for everyone            0.227     0.251
    the seed's design (full rank)             0.086     0.097

RMSE of `predict` averaged over ml-100k folds u1..u5 is 0.9185 (biases
alone: 0.944).  On ml-latest-small the same split gives precision@10 0.336
(`"scaled"`), 0.310 (`"puresvd"`) and 0.189 (most-rated).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from labsupport._types import RatingArrays, as_rating_arrays
from labsupport.tables import about_seconds, html_table

__all__ = [
    "METHODS",
    "Model",
    "build_model",
    "precision_recall_at_k",
    "predict",
    "recommend",
    "recommend_for_user",
    "rmse",
    "score_matrix",
    "seed_build_model",
]

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

METHODS = ("scaled", "puresvd", "binary", "biased")
"""The ranking factorisations `build_model` knows, default first."""

_ITEM_EXPONENT = 0.3  # "scaled": divide movie columns by count**0.3 ...
_USER_EXPONENT = 0.4  # ... and user rows by count**0.4 before the SVD.
_BIAS_SHRINKAGE = 5.0  # pseudo-ratings pulling each bias towards 0.
_RATING_RANK = 10  # rank of the residual factors behind predict().
_RIDGE = 10.0  # ridge penalty of the ALS round that refines them.
_POPULARITY_PRIOR = 10.0  # pseudo-ratings at the global mean in the popularity chart.
_EMPTY_MEAN = 3.0  # what predict() says when there are no ratings at all.
_MAX_SCORE_CELLS = 5_000_000  # score_matrix() refuses bigger models.
_OVERSAMPLING = 10  # randomized SVD: extra random vectors beyond the rank ...
_POWER_ITERATIONS = 4  # ... and passes over the data that sharpen them.


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
        rating_user_factors: Residual factors behind `predict`.
        rating_item_factors: Residual factors behind `predict`.
        global_mean: Mean of all ratings.
        user_bias: Shrunk mean offset of each user.
        item_bias: Shrunk mean offset of each movie.
        rated: Users x movies CSR matrix of the ratings themselves.
        popular: Movie ids, best first, by shrunk mean rating (ties: more
            ratings first); what unknown users get.
        version: Caller's model version number.
        built_at: Wall-clock time of the build (`time.time()`).
        rank: Rank of the ranking factors actually used.
        method: Ranking method, one of `METHODS`.
        n_users: Number of users.
        n_movies: Number of movies.
        n_ratings: Number of distinct (user, movie) ratings.
        build_seconds: How long `build_model` took, in seconds.
    """

    user_ids: IntArray
    movie_ids: IntArray
    user_factors: FloatArray
    item_factors: FloatArray
    rating_user_factors: FloatArray
    rating_item_factors: FloatArray
    global_mean: float
    user_bias: FloatArray
    item_bias: FloatArray
    rated: sp.csr_matrix
    popular: IntArray
    version: int
    built_at: float
    rank: int
    method: str
    n_users: int
    n_movies: int
    n_ratings: int
    build_seconds: float

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
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
    if rank < 1:
        msg = f"rank must be at least 1, got {rank}; try the default of 30"
        raise ValueError(msg)
    if method not in METHODS:
        msg = f"unknown method {method!r}; choose one of {', '.join(METHODS)}"
        raise ValueError(msg)
    report = progress if progress is not None else (lambda fraction: None)
    started = time.perf_counter()
    arrays = as_rating_arrays(ratings)
    user_ids, user_pos = _encode(arrays.user_ids)
    movie_ids, movie_pos = _encode(arrays.movie_ids)
    shape = (len(user_ids), len(movie_ids))
    rated = _rating_matrix(user_pos, movie_pos, arrays.scores, shape)
    report(0.05)

    rows = np.repeat(np.arange(shape[0]), np.diff(rated.indptr))  # CSR order from here on
    cols, scores = rated.indices, rated.data.astype(np.float64)
    user_count = np.diff(rated.indptr)
    item_count = np.bincount(cols, minlength=rated.shape[1])
    mean = float(scores.mean(dtype=np.float64)) if len(scores) else _EMPTY_MEAN
    item_bias = np.bincount(cols, scores - mean, rated.shape[1]) / (item_count + _BIAS_SHRINKAGE)
    user_bias = np.bincount(rows, scores - mean - item_bias[cols], rated.shape[0]) / (
        user_count + _BIAS_SHRINKAGE
    )
    residuals = _same_pattern(rated, scores - mean - user_bias[rows] - item_bias[cols])
    total = np.bincount(cols, scores, rated.shape[1])
    shrunk = (total + _POPULARITY_PRIOR * mean) / (item_count + _POPULARITY_PRIOR)
    popular = movie_ids[np.lexsort((movie_ids, -item_count, -shrunk))]
    report(0.2)

    if method == "biased":  # rank by predicted rating: b_i + p_u . q_i
        u, s, vt = _truncated_svd(residuals, rank, seed)
        user_factors = np.column_stack([u * s, np.ones(len(u))])
        item_factors = np.column_stack([vt.T, item_bias])
    else:
        values = scores if method == "puresvd" else np.ones_like(scores)
        item_scale = np.ones(rated.shape[1])
        if method == "scaled":
            item_scale = item_count**_ITEM_EXPONENT
            values = scores / (item_scale[cols] * user_count[rows] ** _USER_EXPONENT)
        u, s, vt = _truncated_svd(_same_pattern(rated, values), rank, seed)
        user_factors = u * (_shrink(s) if method == "scaled" else s)
        item_factors = vt.T * item_scale[:, None]
    report(0.6)

    rating_users, rating_items = _rating_factors(residuals, seed)
    report(0.9)
    model = Model(
        user_ids=user_ids,
        movie_ids=movie_ids,
        user_factors=_float32(user_factors),
        item_factors=_float32(item_factors),
        rating_user_factors=_float32(rating_users),
        rating_item_factors=_float32(rating_items),
        global_mean=mean,
        user_bias=_float32(user_bias),
        item_bias=_float32(item_bias),
        rated=rated,
        popular=popular,
        version=version,
        built_at=time.time(),
        rank=int(s.shape[0]),
        method=method,
        n_users=len(user_ids),
        n_movies=len(movie_ids),
        n_ratings=rated.nnz,
        build_seconds=time.perf_counter() - started,
    )
    report(1.0)
    return model


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


def _encode(ids: IntArray) -> tuple[IntArray, npt.NDArray[np.intp]]:
    """Return the sorted unique ids and each id's position among them."""
    if len(ids) and int(ids.max()) - int(ids.min()) < 4 * len(ids) + 1024:
        low = int(ids.min())  # dense ids: a lookup table beats sorting
        present = np.zeros(int(ids.max()) - low + 1, dtype=bool)
        present[ids - low] = True
        positions = np.cumsum(present) - 1
        return np.flatnonzero(present).astype(np.int64) + low, positions[ids - low]
    unique, positions = np.unique(ids, return_inverse=True)
    return unique.astype(np.int64), positions


def _rating_matrix(
    rows: npt.NDArray[np.intp],
    cols: npt.NDArray[np.intp],
    scores: FloatArray,
    shape: tuple[int, int],
) -> sp.csr_matrix:
    """Build the CSR ratings matrix; for a repeated (user, movie) keep the last."""
    matrix = sp.csr_matrix((scores, (rows, cols)), shape=shape, dtype=np.float32)
    if matrix.nnz < len(scores):  # duplicates were summed: rebuild from the last ones
        keys = rows.astype(np.int64) * shape[1] + cols
        _, first_from_end = np.unique(keys[::-1], return_index=True)
        last = len(keys) - 1 - first_from_end
        matrix = sp.csr_matrix((scores[last], (rows[last], cols[last])), shape=shape)
    matrix.sort_indices()
    return matrix


def _same_pattern(matrix: sp.csr_matrix, values: npt.NDArray[Any]) -> sp.csr_matrix:
    """Return a CSR matrix with *matrix*'s nonzero pattern holding *values*."""
    return sp.csr_matrix(
        (values.astype(np.float64), matrix.indices, matrix.indptr), shape=matrix.shape
    )


def _truncated_svd(
    matrix: sp.csr_matrix, rank: int, seed: int
) -> tuple[npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any]]:
    """Return the top-*rank* singular triplets of *matrix*, largest first.

    A randomized SVD (Halko, Martinsson and Tropp, 2011): multiply the matrix
    by a random block of `rank + 10` vectors, sharpen that block with a few
    power iterations (re-orthonormalised by QR), then take the exact SVD of
    the matrix projected onto it.  Every step is a sparse x dense product or
    a small dense factorisation, and *seed* makes it repeatable.  Small (and
    all-zero) matrices take a dense SVD, which is cheap when one side is short.
    """
    rank = min(rank, *matrix.shape)
    if not np.any(matrix.data):  # nothing to factor (no ratings, or all residuals 0)
        return np.zeros((matrix.shape[0], rank)), np.zeros(rank), np.zeros((rank, matrix.shape[1]))
    if min(matrix.shape) <= rank + _OVERSAMPLING:
        u, s, vt = np.linalg.svd(matrix.toarray(), full_matrices=False)
        return u[:, :rank], s[:rank], vt[:rank]
    start = np.random.default_rng(seed).standard_normal((matrix.shape[1], rank + _OVERSAMPLING))
    basis, _ = np.linalg.qr(matrix @ start)
    for _ in range(_POWER_ITERATIONS):
        basis, _ = np.linalg.qr(matrix.T @ basis)
        basis, _ = np.linalg.qr(matrix @ basis)
    u, s, vt = np.linalg.svd((matrix.T @ basis).T, full_matrices=False)
    return (basis @ u)[:, :rank], s[:rank], vt[:rank]


def _shrink(s: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Weight singular values by `s**2 / (s**2 + s_k**2)`: the last counts half."""
    if len(s) == 0:
        return s
    power = s.astype(np.float64) ** 2
    weight = np.divide(power, power + power[-1], out=np.zeros_like(power), where=power > 0)
    return np.asarray(s * weight)


def _rating_factors(
    residuals: sp.csr_matrix, seed: int
) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """Factor the bias residuals: a rank-10 SVD, then one ALS round."""
    u, s, _ = _truncated_svd(residuals, _RATING_RANK, seed)
    mask = _same_pattern(residuals, np.ones(residuals.nnz))
    items = _ridge(mask.T, residuals.T, u * np.sqrt(s))
    return _ridge(mask, residuals, items), items


def _ridge(mask: sp.spmatrix, target: sp.spmatrix, other: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Solve every row's ridge regression of its ratings on *other*'s factors.

    Row `a` gets `(sum_b f_b f_b^T + ridge I)^-1 sum_b z_ab f_b` over the
    entries `b` it has.  The per-row Gram matrices come from one sparse
    product with the flattened outer products `f_b f_b^T`, so there is no
    Python loop over rows.
    """
    rank = other.shape[1]
    outer = (other[:, :, None] * other[:, None, :]).reshape(len(other), rank * rank)
    gram = (mask @ outer).reshape(mask.shape[0], rank, rank) + _RIDGE * np.eye(rank)
    return np.linalg.solve(gram, (target @ other)[:, :, None])[:, :, 0]


def _float32(array: npt.NDArray[Any]) -> FloatArray:
    """Return *array* as a C-contiguous float32 copy."""
    return np.ascontiguousarray(array, dtype=np.float32)


def _position(ids: IntArray, value: int) -> int | None:
    """Return the position of *value* in the sorted *ids*, or None."""
    where = int(np.searchsorted(ids, value))
    return where if where < len(ids) and ids[where] == value else None


def _positions(ids: IntArray, values: IntArray) -> tuple[npt.NDArray[np.intp], npt.NDArray[Any]]:
    """Vectorised `_position`: positions (0 where absent) and a found mask."""
    where = np.minimum(np.searchsorted(ids, values), max(len(ids) - 1, 0))
    found = ids[where] == values if len(ids) else np.zeros(len(values), dtype=bool)
    return np.where(found, where, 0), found


def _top_k(scores: npt.NDArray[Any], k: int) -> npt.NDArray[np.intp]:
    """Return the positions of the *k* largest *scores*, largest first."""
    if k <= 0:
        return np.zeros(0, dtype=np.intp)
    best = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    return best[np.argsort(-scores[best], kind="stable")]


def _top_k_rows(scores: npt.NDArray[Any], k: int) -> npt.NDArray[np.intp]:
    """Row-wise `_top_k` of a 2-D array."""
    if k < scores.shape[1]:
        best = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        best = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    order = np.argsort(-np.take_along_axis(scores, best, 1), axis=1, kind="stable")
    return np.take_along_axis(best, order, 1)
