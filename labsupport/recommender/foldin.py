"""Fold a user's current ratings into a built model: personal lists without a rebuild.

A model's movie side is fixed when it is built; a user's side need not be.
The ranking factorises a users x movies matrix `X ≈ U S Vᵀ` (truncated SVD,
orthonormal columns in `V`), so a user's row `x` of `X` gives `u = x V S⁻¹`
exactly (the least-squares fit of `x` with the movie side held fixed), and
their ranking factors are `u · weight` (`weight` is `shrink(s)` for
`"scaled"`, `s` for the other methods). `build_model` stores the movie side
of that product as `Model.fold_in_factors`, so a user who rated after the
build gets `x @ fold_in_factors[their movies]`: a few multiply-adds per rating,
then `item_factors @ factors` ranks the catalogue as for any known user. `x`
is the row the build would have made from the same ratings: for `"scaled"`
each rating divided by `n**0.4` for a user with `n` ratings (the movie's
`count**0.3` is already in the stored rows); for `"biased"` what the biases
leave over. For a user the model was built with, this gives their own
factors back. Other users, and the movie side, change at the next rebuild.

`fold_in` returns the factors; `recommend_from_ratings` ranks with them as
`recommend` does for a known user; `holds_ratings` says whether a model
already holds exactly a user's current ratings (then `recommend` answers).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from labsupport.recommender.model import _BIAS_SHRINKAGE, _USER_EXPONENT, Model, _top_k

__all__ = ["fold_in", "holds_ratings", "recommend_from_ratings"]


def _locate(model: Model, movie_ids: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.intp], Any]:
    """Each movie's column in *model* (0 where unknown) and whether the model knows it."""
    if model.n_movies == 0:
        return np.zeros(len(movie_ids), dtype=np.intp), np.zeros(len(movie_ids), dtype=bool)
    where = np.minimum(np.searchsorted(model.movie_ids, movie_ids), model.n_movies - 1)
    known = model.movie_ids[where] == movie_ids
    return np.where(known, where, 0), known


def fold_in(model: Model, movie_ids: Any, scores: Any) -> npt.NDArray[np.float32] | None:
    """Return the ranking factors a user with these ratings gets from *model*'s movie side.

    Ratings of movies the model does not know (added after its build) are
    left out: they have no row to project onto.

    Args:
        model: A model from `build_model`.
        movie_ids: The user's rated movies, each once.
        scores: Their scores, in the same order.

    Returns:
        A vector like a row of `model.user_factors`, or `None` when there is
        nothing to fold in: no rating of a movie the model knows, or a model
        saved without fold-in rows.
    """
    movies = np.asarray(movie_ids, dtype=np.int64)
    own = np.asarray(scores, dtype=np.float64)
    cols, known = _locate(model, movies)
    if model.fold_in_factors.shape[0] != model.n_movies or not known.any():
        return None
    cols, own = cols[known], own[known]
    if model.method == "scaled":
        row = own / len(own) ** _USER_EXPONENT
    elif model.method == "binary":
        row = np.ones_like(own)
    elif model.method == "biased":
        offsets = own - model.global_mean - model.item_bias[cols]
        row = offsets - offsets.sum() / (len(own) + _BIAS_SHRINKAGE)
    else:  # "puresvd"
        row = own
    factors = row @ model.fold_in_factors[cols].astype(np.float64)
    if model.method == "biased":
        factors[-1] = 1.0  # the column that adds each movie's bias to its score
    return np.asarray(factors, dtype=np.float32)


def recommend_from_ratings(
    model: Model, movie_ids: Any, scores: Any, limit: int = 5, exclude_rated: bool = False
) -> list[int]:
    """Return up to *limit* movie ids for a user with these ratings, best first.

    The same list `recommend` gives a known user, but from the ratings given
    here (folded in with `fold_in`) instead of those the model was built
    with: by default the rated movies first, highest rating first, then
    unrated movies by score; with *exclude_rated* only unrated movies. With
    nothing to fold in, the unrated movies follow the model's cold-start
    chart (`model.popular`).

    Args:
        model: A model from `build_model`.
        movie_ids: The user's rated movies, each once (e.g. a store's `user_ratings`).
        scores: Their scores, in the same order.
        limit: Maximum number of ids.
        exclude_rated: Leave out every movie in *movie_ids*.

    Returns:
        Distinct movie ids as Python ints.

    Raises:
        ValueError: if *limit* is negative.
    """
    if limit < 0:
        msg = f"limit must be 0 or more, got {limit}"
        raise ValueError(msg)
    movies = np.asarray(movie_ids, dtype=np.int64)
    own = np.asarray(scores, dtype=np.float64)
    cols, known = _locate(model, movies)
    factors = fold_in(model, movies, own)
    if factors is None:  # the chart as scores: first place highest
        ranking = np.zeros(model.n_movies)
        ranking[_locate(model, model.popular)[0]] = -np.arange(model.n_movies, dtype=np.float64)
    else:
        ranking = (model.item_factors @ factors).astype(np.float64)
    head: list[int] = []
    if not exclude_rated:
        tie = np.where(known, ranking[cols], -np.inf)
        head = [int(movie) for movie in movies[np.lexsort((movies, -tie, -own))[:limit]]]
    seen = np.unique(cols[known])
    ranking[seen] = -np.inf
    wanted = min(limit - len(head), model.n_movies - len(seen))
    return head + [int(movie) for movie in model.movie_ids[_top_k(ranking, wanted)]]


def holds_ratings(model: Model, user_id: int, movie_ids: Any, scores: Any) -> bool:
    """Say whether *model* was built with exactly these ratings of *user_id*.

    Only movies the model knows count, and scores are compared as the model
    stores them (float32). When this is true, `recommend(model, user_id, ...)`
    is already the user's current answer; when false, the user rated (or
    re-rated) something after the build, and `recommend_from_ratings` folds
    the new ratings in.

    Args:
        model: A model from `build_model`.
        user_id: The user.
        movie_ids: The user's rated movies now, each once.
        scores: Their scores, in the same order.

    Returns:
        True when the model's ratings of the user match those given.
    """
    movies = np.asarray(movie_ids, dtype=np.int64)
    cols, known = _locate(model, movies)
    own = np.asarray(scores, dtype=np.float32)[known]
    where = int(np.searchsorted(model.user_ids, user_id))
    if where == len(model.user_ids) or model.user_ids[where] != user_id:
        return not known.any()
    start, stop = model.rated.indptr[where], model.rated.indptr[where + 1]
    if stop - start != len(own):
        return False
    order = np.argsort(cols[known], kind="stable")
    return bool(
        np.array_equal(model.rated.indices[start:stop], cols[known][order])
        and np.array_equal(model.rated.data[start:stop], own[order])
    )
