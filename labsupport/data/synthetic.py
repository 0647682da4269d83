"""Synthetic ratings at any size, drawn from a planted low-rank taste model.

`planted_model` draws the hidden truth: a taste vector and a bias per user
and per movie, how active each user is and how popular each movie is.
`synthetic_ratings` samples distinct (user, movie) pairs from it and scores
them with noise, rounded to 1 to 5 stars; `synthetic_shape` does so at the
size of a MovieLens release (`SHAPES`), so benchmarks can grow up to the
shape of MovieLens 25M without a download.

Users, movies, pairs and noise each draw from their own random stream,
spawned from one `seed`: the same arguments always give the same arrays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from labsupport._types import RatingArrays

__all__ = ["SHAPES", "PlantedModel", "planted_model", "synthetic_ratings", "synthetic_shape"]

_Float32Array = npt.NDArray[np.float32]
_Float64Array = npt.NDArray[np.float64]
_Int64Array = npt.NDArray[np.int64]

#: Benchmark shapes as `(n_users, n_movies, n_ratings)`, copied from the
#: MovieLens releases of the same name.
SHAPES: dict[str, tuple[int, int, int]] = {
    "ml-100k": (943, 1682, 100_000),
    "ml-1m": (6040, 3706, 1_000_209),
    "ml-10m": (69_878, 10_677, 10_000_054),
    "ml-25m": (162_541, 59_047, 25_000_095),
}

# The taste model's scales, in stars. Their squares add up to a rating
# variance close to MovieLens's (a standard deviation of about 1.1 stars).
_GLOBAL_MEAN = 3.6
_USER_BIAS_SD = 0.45
_ITEM_BIAS_SD = 0.6
_TASTE_SD = 0.75  # standard deviation of the dot product of the two factor vectors
_GENRE_WEIGHT = 0.7  # share of an item factor's variance that comes from its genre
_ACTIVITY_SIGMA = 1.2  # log-normal spread of user activity: medians near MovieLens's
_MIN_PER_USER = 20  # MovieLens keeps users with at least 20 ratings
_MAX_DENSITY = 0.5
_MAX_ROUNDS = 100
_CHUNK = 1 << 20  # ratings scored per step, to bound memory


@dataclass(frozen=True, eq=False)
class PlantedModel:
    """The hidden truth behind `synthetic_ratings`.

    A rating is `global_mean + user_bias[u] + item_bias[m] + user_factors[u] @
    item_factors[m]` plus noise, rounded and clipped to 1 to 5 stars. Which
    pairs get rated follows `user_activity` and `item_popularity`.
    Row `i` of every array belongs to id `i + 1`.

    Attributes:
        global_mean: The average taste, in stars.
        user_factors: `(n_users, rank)` taste vectors.
        item_factors: `(n_movies, rank)` taste vectors.
        user_bias: Per-user offsets, in stars.
        item_bias: Per-movie offsets, in stars.
        user_activity: Probability that a rating beyond each user's minimum
            goes to that user (sums to 1).
        item_popularity: Probability that a rating goes to that movie
            (sums to 1; Zipf-like, in a shuffled order).
    """

    global_mean: float
    user_factors: _Float32Array
    item_factors: _Float32Array
    user_bias: _Float32Array
    item_bias: _Float32Array
    user_activity: _Float64Array
    item_popularity: _Float64Array

    @property
    def n_users(self) -> int:
        """Number of users."""
        return int(self.user_factors.shape[0])

    @property
    def n_movies(self) -> int:
        """Number of movies."""
        return int(self.item_factors.shape[0])

    @property
    def rank(self) -> int:
        """Length of each taste vector."""
        return int(self.user_factors.shape[1])

    def __repr__(self) -> str:
        return (
            f"PlantedModel(n_users={self.n_users}, n_movies={self.n_movies}, "
            f"rank={self.rank}, global_mean={self.global_mean})"
        )

    def predict(self, user_ids: npt.ArrayLike, movie_ids: npt.ArrayLike) -> _Float32Array:
        """Return the noise-free, unrounded, unclipped score for each pair.

        Works in chunks, so it is fine to pass millions of pairs.

        Args:
            user_ids: 1-based user ids.
            movie_ids: 1-based movie ids, parallel to `user_ids`.

        Returns:
            One score per pair, in stars.

        Raises:
            ValueError: if the two id arrays differ in shape.
            IndexError: if an id is outside 1 to `n_users` or `n_movies`.
        """
        users = np.asarray(user_ids, dtype=np.int64) - 1
        movies = np.asarray(movie_ids, dtype=np.int64) - 1
        if users.shape != movies.shape:
            msg = f"user_ids and movie_ids differ in shape: {users.shape} and {movies.shape}"
            raise ValueError(msg)
        for name, ids, n in (("user", users, self.n_users), ("movie", movies, self.n_movies)):
            if ids.size and (ids.min() < 0 or ids.max() >= n):
                msg = (
                    f"{name} ids must be between 1 and {n}; got {ids.min() + 1} to {ids.max() + 1}"
                )
                raise IndexError(msg)
        users, movies = users.ravel(), movies.ravel()
        out = np.empty(users.size, dtype=np.float32)
        for start in range(0, users.size, _CHUNK):
            u = users[start : start + _CHUNK]
            m = movies[start : start + _CHUNK]
            taste = np.einsum("ij,ij->i", self.user_factors[u], self.item_factors[m])
            out[start : start + _CHUNK] = (
                self.global_mean + self.user_bias[u] + self.item_bias[m] + taste
            )
        return out.reshape(np.shape(user_ids))


def _streams(seed: int) -> list[np.random.Generator]:
    """Return independent generators for users, items, pairs and noise."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4)]


def planted_model(
    n_users: int,
    n_movies: int,
    *,
    rank: int = 8,
    seed: int = 0,
    popularity_exponent: float = 1.0,
    genres: Sequence[str] | None = None,
) -> PlantedModel:
    """Draw the low-rank taste model that `synthetic_ratings` samples from.

    Called with the same arguments, this returns exactly the model behind
    `synthetic_ratings(..., seed=seed)`, so a notebook can compare what a
    recommender learnt with the truth. Users and movies use separate random
    streams, so the movies' model does not change when `n_users` does.

    When `genres` is given, each movie's taste vector mixes a vector shared
    by its genre (70 % of the variance) with its own, so films of one genre
    are liked by the same people.

    Args:
        n_users: Number of users.
        n_movies: Number of movies.
        rank: Length of the taste vectors.
        seed: Seed for `numpy.random.default_rng`-style streams.
        popularity_exponent: Zipf exponent of movie popularity: the k-th most
            popular movie is drawn with probability proportional to `k **
            -popularity_exponent`; 0 makes all movies equally popular.
        genres: One genre per movie, or `None` for unrelated movies.

    Returns:
        The planted model.

    Raises:
        ValueError: if a size is not positive, the exponent is negative, or
            `genres` does not have one entry per movie.
    """
    _check_positive(n_users=n_users, n_movies=n_movies, rank=rank)
    if popularity_exponent < 0:
        msg = f"popularity_exponent must be >= 0, got {popularity_exponent}"
        raise ValueError(msg)
    if genres is not None and len(genres) != n_movies:
        msg = f"genres needs one entry per movie: got {len(genres)} for {n_movies} movies"
        raise ValueError(msg)
    user_rng, item_rng, _, _ = _streams(seed)
    # Each factor entry has this spread, so a dot product of two has _TASTE_SD.
    factor_sd = (_TASTE_SD**2 / rank) ** 0.25

    user_factors = user_rng.normal(0.0, factor_sd, size=(n_users, rank))
    user_bias = user_rng.normal(0.0, _USER_BIAS_SD, size=n_users)
    activity = user_rng.lognormal(0.0, _ACTIVITY_SIGMA, size=n_users)

    item_factors = item_rng.normal(0.0, factor_sd, size=(n_movies, rank))
    item_bias = item_rng.normal(0.0, _ITEM_BIAS_SD, size=n_movies)
    popularity_rank = item_rng.permutation(n_movies) + 1
    popularity = popularity_rank.astype(np.float64) ** -popularity_exponent
    if genres is not None:
        names, genre_index = np.unique(np.asarray(genres, dtype=str), return_inverse=True)
        centroids = item_rng.normal(0.0, factor_sd, size=(len(names), rank))
        item_factors = (
            math.sqrt(_GENRE_WEIGHT) * centroids[genre_index]
            + math.sqrt(1.0 - _GENRE_WEIGHT) * item_factors
        )

    return PlantedModel(
        global_mean=_GLOBAL_MEAN,
        user_factors=user_factors.astype(np.float32),
        item_factors=item_factors.astype(np.float32),
        user_bias=user_bias.astype(np.float32),
        item_bias=item_bias.astype(np.float32),
        user_activity=activity / activity.sum(),
        item_popularity=popularity / popularity.sum(),
    )


def synthetic_ratings(
    n_users: int = 943,
    n_movies: int = 1682,
    n_ratings: int = 100_000,
    *,
    rank: int = 8,
    seed: int = 0,
    popularity_exponent: float = 1.0,
    noise: float = 0.5,
    genres: Sequence[str] | None = None,
) -> RatingArrays:
    """Sample integer 1-5 star ratings from a planted low-rank taste model.

    The model is `planted_model(n_users, n_movies, rank=rank, seed=seed,
    popularity_exponent=popularity_exponent, genres=genres)`. Each user
    first gets a few ratings (up to 20, as in MovieLens), then the rest go to
    users in proportion to a heavy-tailed activity and to movies by Zipf-like
    popularity. Repeated (user, movie) pairs are dropped and topped up until
    exactly `n_ratings` distinct pairs remain. A score is the model's
    prediction plus Gaussian noise, rounded and clipped to 1 to 5 stars.

    Everything is vectorised: the shape of MovieLens 25M takes under ten
    seconds and about 1.5 GB. The same arguments always give the same arrays.

    Args:
        n_users: Number of users; ids run from 1 to `n_users` and every one
            appears.
        n_movies: Number of movies; ids run from 1 to `n_movies` (the least
            popular ones may have no rating).
        n_ratings: Number of distinct (user, movie) pairs to rate.
        rank: Length of the planted taste vectors.
        seed: Seed; different seeds give different data.
        popularity_exponent: Zipf exponent of movie popularity (0 is uniform).
        noise: Standard deviation of the noise added before rounding, in stars.
        genres: One genre per movie; movies of one genre then share tastes.

    Returns:
        Ratings sorted by user id, then movie id.

    Raises:
        ValueError: if a size is not positive, there are fewer ratings than
            users, more than half of all (user, movie) cells would be rated,
            `noise` is negative, or `genres` has the wrong length.
        RuntimeError: if popularity is so skewed that distinct pairs cannot
            be found; lower `popularity_exponent` or `n_ratings`.
    """
    _check_positive(n_users=n_users, n_movies=n_movies, n_ratings=n_ratings)
    if n_ratings < n_users:
        msg = f"every user needs a rating: n_ratings={n_ratings} < n_users={n_users}"
        raise ValueError(msg)
    if n_ratings > _MAX_DENSITY * n_users * n_movies:
        msg = (
            f"{n_ratings} ratings would fill more than half of the {n_users} x {n_movies} "
            "matrix; synthetic_ratings makes sparse data, so ask for fewer ratings"
        )
        raise ValueError(msg)
    if noise < 0:
        msg = f"noise must be >= 0, got {noise}"
        raise ValueError(msg)
    model = planted_model(
        n_users,
        n_movies,
        rank=rank,
        seed=seed,
        popularity_exponent=popularity_exponent,
        genres=genres,
    )
    _, _, pair_rng, noise_rng = _streams(seed)
    keys = _sample_pairs(model, n_ratings, pair_rng)
    user_index, movie_index = np.divmod(keys, np.int64(n_movies))
    del keys
    user_ids = user_index + 1
    movie_ids = movie_index + 1
    del user_index, movie_index
    scores = model.predict(user_ids, movie_ids)
    for start in range(0, n_ratings, _CHUNK):
        part = scores[start : start + _CHUNK]
        part += noise * noise_rng.standard_normal(part.size, dtype=np.float32)
    np.clip(np.rint(scores, out=scores), 1.0, 5.0, out=scores)
    return RatingArrays(user_ids, movie_ids, scores)


def _sample_pairs(model: PlantedModel, n_ratings: int, rng: np.random.Generator) -> _Int64Array:
    """Return `n_ratings` distinct sorted keys `user_index * n_movies + movie_index`.

    Each round draws the missing per-user minimums first, then extra pairs by
    activity and popularity, oversampled by the last round's acceptance rate.
    Room for the minimums is always kept, so the loop ends with both met.
    """
    n_users, n_movies = model.n_users, model.n_movies
    floor = min(_MIN_PER_USER, max(1, n_ratings // (3 * n_users)), n_movies)
    all_users = np.arange(n_users, dtype=np.int64)
    keys = np.empty(0, dtype=np.int64)
    short = np.full(n_users, floor, dtype=np.int64)  # ratings each user still needs
    acceptance = 1.0
    for _ in range(_MAX_ROUNDS):
        if short.any():
            users = np.repeat(all_users, short)
            movies = _draw(model.item_popularity, users.size, rng)
            keys = _merge(keys, _new_keys(keys, users * n_movies + movies))
            short = np.maximum(floor - np.bincount(keys // n_movies, minlength=n_users), 0)
        room = n_ratings - keys.size - int(short.sum())
        if room > 0:
            n_draw = min(math.ceil(1.05 * room / acceptance) + 64, 20 * room + 1000)
            users = np.repeat(all_users, rng.multinomial(n_draw, model.user_activity))
            movies = _draw(model.item_popularity, n_draw, rng)
            fresh = _new_keys(keys, users * n_movies + movies)
            del users, movies
            acceptance = max(fresh.size / n_draw, 0.01)
            if fresh.size > room:  # keep a random subset; fresh stays sorted
                keep = np.zeros(fresh.size, dtype=bool)
                keep[rng.choice(fresh.size, size=room, replace=False)] = True
                fresh = fresh[keep]
            keys = _merge(keys, fresh)
            if short.any():
                short = np.maximum(floor - np.bincount(keys // n_movies, minlength=n_users), 0)
        if keys.size == n_ratings:
            return keys
    msg = (
        f"found only {keys.size} of {n_ratings} distinct pairs after {_MAX_ROUNDS} rounds; "
        "lower popularity_exponent or n_ratings"
    )
    raise RuntimeError(msg)


def _draw(p: _Float64Array, size: int, rng: np.random.Generator) -> _Int64Array:
    """Draw `size` 0-based indices with probabilities `p`, in random order.

    Counting the draws per index first and shuffling afterwards is several
    times faster than looking each draw up in the cumulative sum.
    """
    index = np.repeat(np.arange(p.size, dtype=np.int64), rng.multinomial(size, p))
    rng.shuffle(index)
    return index


def _new_keys(keys: _Int64Array, candidates: _Int64Array) -> _Int64Array:
    """Return the distinct candidates missing from the sorted `keys`, sorted."""
    ordered = np.sort(candidates)  # np.unique is much slower on tens of millions
    first: npt.NDArray[np.bool_] = np.empty(ordered.size, dtype=bool)
    first[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    unique = ordered[first]
    if keys.size == 0:
        return unique
    position = np.minimum(np.searchsorted(keys, unique), keys.size - 1)
    missing: npt.NDArray[np.bool_] = keys[position] != unique
    return unique[missing]


def _merge(keys: _Int64Array, fresh: _Int64Array) -> _Int64Array:
    """Merge sorted `fresh` keys (absent from `keys`) into sorted `keys`."""
    if keys.size == 0:
        return fresh
    return np.insert(keys, np.searchsorted(keys, fresh), fresh)


def _check_positive(**sizes: int) -> None:
    for name, value in sizes.items():
        if value < 1:
            msg = f"{name} must be a positive integer, got {value!r}"
            raise ValueError(msg)


def synthetic_shape(name: str, *, seed: int = 0) -> RatingArrays:
    """Return synthetic ratings with the shape of a MovieLens release.

    Args:
        name: A key of `SHAPES`, such as `"ml-1m"` or `"ml-25m"`.
        seed: Seed passed to `synthetic_ratings`.

    Returns:
        Ratings with exactly the users, movies and rating count of `name`.

    Raises:
        ValueError: if `name` is not in `SHAPES`.
    """
    if name not in SHAPES:
        msg = f"unknown shape {name!r}; choose one of {', '.join(SHAPES)}"
        raise ValueError(msg)
    n_users, n_movies, n_ratings = SHAPES[name]
    return synthetic_ratings(n_users, n_movies, n_ratings, seed=seed)
