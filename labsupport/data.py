"""Ratings to practise on: a small catalogue, synthetic data at any size, and MovieLens.

Three sources, one shape: every function returns `RatingArrays` with
1-based `int64` ids and `float32` scores.

- `CATALOGUE` and `demo_ratings`: 72 real films and a few hundred
  ratings for notebooks and the `--demo` server.
- `synthetic_ratings` and `synthetic_shape`: ratings drawn from a
  planted low-rank taste model (`planted_model`), from toy size up to the
  shape of MovieLens 25M, so benchmarks can grow without a download.
- `load_movielens`, `load_movielens_fold` and `find_movielens`:
  the real thing, which you download yourself (it may not be redistributed).

Nothing here touches the disk or draws a random number at import time; every
random function takes a `seed`.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from labsupport._types import Movie, RatingArrays
from labsupport.errors import LabError

__all__ = [
    "CATALOGUE",
    "SHAPES",
    "MovieLens",
    "MovieLensNotFoundError",
    "PlantedModel",
    "catalogue_movies",
    "demo_ratings",
    "find_movielens",
    "load_movielens",
    "load_movielens_fold",
    "planted_model",
    "split_per_user",
    "synthetic_ratings",
    "synthetic_shape",
]

Float32Array = npt.NDArray[np.float32]
Float64Array = npt.NDArray[np.float64]
Int64Array = npt.NDArray[np.int64]

#: Real films as `(title, year, primary genre)`, six per genre, grouped by
#: genre so a heatmap of the demo ratings shows the genre bands.
CATALOGUE: tuple[tuple[str, int, str], ...] = (
    ("The Matrix", 1999, "Sci-Fi"),
    ("Blade Runner", 1982, "Sci-Fi"),
    ("2001: A Space Odyssey", 1968, "Sci-Fi"),
    ("Inception", 2010, "Sci-Fi"),
    ("Interstellar", 2014, "Sci-Fi"),
    ("Arrival", 2016, "Sci-Fi"),
    ("The Shawshank Redemption", 1994, "Drama"),
    ("Forrest Gump", 1994, "Drama"),
    ("12 Angry Men", 1957, "Drama"),
    ("Good Will Hunting", 1997, "Drama"),
    ("Whiplash", 2014, "Drama"),
    ("Moonlight", 2016, "Drama"),
    ("Groundhog Day", 1993, "Comedy"),
    ("The Big Lebowski", 1998, "Comedy"),
    ("Airplane!", 1980, "Comedy"),
    ("Monty Python and the Holy Grail", 1975, "Comedy"),
    ("Some Like It Hot", 1959, "Comedy"),
    ("The Grand Budapest Hotel", 2014, "Comedy"),
    ("Die Hard", 1988, "Action"),
    ("Mad Max: Fury Road", 2015, "Action"),
    ("The Dark Knight", 2008, "Action"),
    ("Gladiator", 2000, "Action"),
    ("Terminator 2: Judgment Day", 1991, "Action"),
    ("John Wick", 2014, "Action"),
    ("Toy Story", 1995, "Animation"),
    ("Spirited Away", 2001, "Animation"),
    ("The Lion King", 1994, "Animation"),
    ("Finding Nemo", 2003, "Animation"),
    ("WALL-E", 2008, "Animation"),
    ("My Neighbor Totoro", 1988, "Animation"),
    ("The Silence of the Lambs", 1991, "Thriller"),
    ("Se7en", 1995, "Thriller"),
    ("Rear Window", 1954, "Thriller"),
    ("Vertigo", 1958, "Thriller"),
    ("Memento", 2000, "Thriller"),
    ("Gone Girl", 2014, "Thriller"),
    ("Casablanca", 1942, "Romance"),
    ("Titanic", 1997, "Romance"),
    ("Notting Hill", 1999, "Romance"),
    ("When Harry Met Sally...", 1989, "Romance"),
    ("Before Sunrise", 1995, "Romance"),
    ("Roman Holiday", 1953, "Romance"),
    ("The Shining", 1980, "Horror"),
    ("Psycho", 1960, "Horror"),
    ("The Exorcist", 1973, "Horror"),
    ("Halloween", 1978, "Horror"),
    ("Get Out", 2017, "Horror"),
    ("A Nightmare on Elm Street", 1984, "Horror"),
    ("Hoop Dreams", 1994, "Documentary"),
    ("Bowling for Columbine", 2002, "Documentary"),
    ("March of the Penguins", 2005, "Documentary"),
    ("An Inconvenient Truth", 2006, "Documentary"),
    ("Man on Wire", 2008, "Documentary"),
    ("Free Solo", 2018, "Documentary"),
    ("The Lord of the Rings: The Fellowship of the Ring", 2001, "Fantasy"),
    ("Pan's Labyrinth", 2006, "Fantasy"),
    ("The Princess Bride", 1987, "Fantasy"),
    ("The Wizard of Oz", 1939, "Fantasy"),
    ("Edward Scissorhands", 1990, "Fantasy"),
    ("Big Fish", 2003, "Fantasy"),
    ("The Godfather", 1972, "Crime"),
    ("Pulp Fiction", 1994, "Crime"),
    ("Goodfellas", 1990, "Crime"),
    ("The Usual Suspects", 1995, "Crime"),
    ("Fargo", 1996, "Crime"),
    ("The Departed", 2006, "Crime"),
    ("Raiders of the Lost Ark", 1981, "Adventure"),
    ("Jurassic Park", 1993, "Adventure"),
    ("The Goonies", 1985, "Adventure"),
    ("Lawrence of Arabia", 1962, "Adventure"),
    ("Cast Away", 2000, "Adventure"),
    ("Life of Pi", 2012, "Adventure"),
)

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
_DEMO_DENSITY = 0.2
_DEMO_POPULARITY_EXPONENT = 0.5
_DEMO_RANK = 4

_ML100K_FILES = ("u.data", "u.item")
_LATEST_FILES = ("ratings.csv", "movies.csv")
_ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
_ENV_VAR = "LABSUPPORT_MOVIELENS"
_DOWNLOAD_HINT = (
    "download MovieLens from https://grouplens.org/datasets/movielens/ (it may not be "
    "redistributed, so this workbook does not ship it), unzip it and pass the unzipped "
    f"folder, or set {_ENV_VAR} to the folder that holds it."
)


class MovieLensNotFoundError(LabError, FileNotFoundError):
    """No MovieLens files where a loader looked; the message says what to download."""


def catalogue_movies() -> list[Movie]:
    """Return `CATALOGUE` as `Movie` objects with ids 1 to n, in order.

    Returns:
        A new list on every call, so callers may change it freely.
    """
    return [
        Movie(id=i, title=title, year=year, genre=genre)
        for i, (title, year, genre) in enumerate(CATALOGUE, start=1)
    ]


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
    user_factors: Float32Array
    item_factors: Float32Array
    user_bias: Float32Array
    item_bias: Float32Array
    user_activity: Float64Array
    item_popularity: Float64Array

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

    def predict(self, user_ids: npt.ArrayLike, movie_ids: npt.ArrayLike) -> Float32Array:
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


def _sample_pairs(model: PlantedModel, n_ratings: int, rng: np.random.Generator) -> Int64Array:
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


def _draw(p: Float64Array, size: int, rng: np.random.Generator) -> Int64Array:
    """Draw `size` 0-based indices with probabilities `p`, in random order.

    Counting the draws per index first and shuffling afterwards is several
    times faster than looking each draw up in the cumulative sum.
    """
    index = np.repeat(np.arange(p.size, dtype=np.int64), rng.multinomial(size, p))
    rng.shuffle(index)
    return index


def _new_keys(keys: Int64Array, candidates: Int64Array) -> Int64Array:
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


def _merge(keys: Int64Array, fresh: Int64Array) -> Int64Array:
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


def demo_ratings(*, n_users: int = 40, seed: int = 0) -> RatingArrays:
    """Return a few hundred ratings of the `CATALOGUE` films.

    About 20 % of the user x movie cells are rated; tastes follow genres, and
    popularity is only mildly skewed so nearly every film gets ratings. The
    truth behind them is `planted_model(n_users, len(CATALOGUE), rank=4,
    seed=seed, popularity_exponent=0.5, genres=[g for _, _, g in CATALOGUE])`.

    Args:
        n_users: Number of users (ids 1 to `n_users`).
        seed: Seed; the same seed gives the same ratings.

    Returns:
        Ratings with movie ids 1 to `len(CATALOGUE)`, sorted by user.

    Raises:
        ValueError: if `n_users` is not positive.
    """
    n_movies = len(CATALOGUE)
    _check_positive(n_users=n_users)
    return synthetic_ratings(
        n_users,
        n_movies,
        max(n_users, round(_DEMO_DENSITY * n_users * n_movies)),
        rank=_DEMO_RANK,
        seed=seed,
        popularity_exponent=_DEMO_POPULARITY_EXPONENT,
        genres=[genre for _, _, genre in CATALOGUE],
    )


@dataclass(frozen=True, eq=False)
class MovieLens:
    """One MovieLens release loaded by `load_movielens`.

    Attributes:
        name: The folder's name, such as `"ml-100k"`.
        ratings: All ratings, in file order; `ml-latest-small` has half stars.
        movies: One row per movie with columns `id`, `title` (without the
            trailing year), `year` (nullable `Int64`) and `genre` (the
            first listed genre, `"unknown"` when none is).
    """

    name: str
    ratings: RatingArrays
    movies: pd.DataFrame

    def __repr__(self) -> str:
        return (
            f"MovieLens(name={self.name!r}, ratings={len(self.ratings)}, "
            f"users={np.unique(self.ratings.user_ids).size}, movies={len(self.movies)})"
        )


def find_movielens(name: str) -> Path | None:
    """Look for an unzipped MovieLens release called `name`, such as `"ml-100k"`.

    Checks `$LABSUPPORT_MOVIELENS/<name>` first, then
    `../shared/data/movielens/<name>` next to this repository.

    Args:
        name: The release's folder name.

    Returns:
        The folder, or `None` when neither place holds that release's files.
    """
    candidates = []
    if env := os.environ.get(_ENV_VAR):
        candidates.append(Path(env).expanduser() / name)
    repo_root = Path(__file__).resolve().parent.parent
    candidates.append(repo_root.parent / "shared" / "data" / "movielens" / name)
    for folder in candidates:
        if _layout(folder) is not None:
            return folder
    return None


def load_movielens(path: str | os.PathLike[str]) -> MovieLens:
    """Load an unzipped `ml-100k` or `ml-latest-small` folder.

    The format is detected from the files present: `u.data` and `u.item`
    (with `u.genre` for genre names), or `ratings.csv` and `movies.csv`.

    Args:
        path: The folder holding the files.

    Returns:
        The ratings and the movie table.

    Raises:
        MovieLensNotFoundError: if the folder or the expected files are
            missing (a `FileNotFoundError`); the message says what to download.
    """
    folder = Path(path)
    layout = _layout(folder)
    if layout == "ml-100k":
        ratings = _read_ml100k_ratings(folder / "u.data")
        movies = _read_ml100k_movies(folder)
    elif layout == "latest":
        ratings = _read_csv_ratings(folder / "ratings.csv")
        movies = _read_csv_movies(folder / "movies.csv")
    else:
        raise MovieLensNotFoundError(_missing_message(folder))
    return MovieLens(name=folder.resolve().name, ratings=ratings, movies=movies)


def load_movielens_fold(
    path: str | os.PathLike[str], fold: int | str
) -> tuple[RatingArrays, RatingArrays]:
    """Load one of ml-100k's ready-made train/test splits.

    Folds 1 to 5 (`u1.base`/`u1.test` ...) are a 5-fold cross-validation
    with 80,000 training ratings each; folds `"a"` and `"b"` hold out
    exactly 10 ratings per user.

    Args:
        path: The unzipped `ml-100k` folder.
        fold: 1 to 5, `"a"` or `"b"`.

    Returns:
        `(train, test)`.

    Raises:
        ValueError: if `fold` is not one of those.
        MovieLensNotFoundError: if the fold's files are missing.
    """
    if str(fold) not in {"1", "2", "3", "4", "5", "a", "b"}:
        msg = f"fold must be 1 to 5, 'a' or 'b', got {fold!r}"
        raise ValueError(msg)
    folder = Path(path)
    base, test = folder / f"u{fold}.base", folder / f"u{fold}.test"
    if not (base.is_file() and test.is_file()):
        msg = (
            f"No ml-100k fold {fold} in {folder} (it needs {base.name} and {test.name}); "
            f"{_DOWNLOAD_HINT}"
        )
        raise MovieLensNotFoundError(msg)
    return _read_ml100k_ratings(base), _read_ml100k_ratings(test)


def _layout(folder: Path) -> str | None:
    if all((folder / f).is_file() for f in _ML100K_FILES):
        return "ml-100k"
    if all((folder / f).is_file() for f in _LATEST_FILES):
        return "latest"
    return None


def _missing_message(folder: Path) -> str:
    """One sentence: what is wrong with `folder`, what a release holds, how to get one."""
    if not folder.exists():
        problem = f"{folder} does not exist"
    elif not folder.is_dir():
        problem = f"{folder} is a file, not a folder"
    else:
        inner = [d for d in sorted(folder.iterdir()) if d.is_dir() and _layout(d)]
        if inner:  # the parent of a release: the fix is one folder down
            return f"{folder} holds no MovieLens files; did you mean {inner[0]}, the release in it?"
        problem = f"{folder} holds no MovieLens files"
    expected = (
        f"{' and '.join(_ML100K_FILES)} for ml-100k, or "
        f"{' and '.join(_LATEST_FILES)} for ml-latest-small"
    )
    return f"{problem} (a MovieLens folder holds {expected}); {_DOWNLOAD_HINT}"


def _read_ml100k_ratings(file: Path) -> RatingArrays:
    frame = pd.read_csv(
        file,
        sep="\t",
        header=None,
        names=["user_id", "movie_id", "score", "timestamp"],
        usecols=["user_id", "movie_id", "score"],
        dtype={"user_id": np.int64, "movie_id": np.int64, "score": np.float32},
    )
    return RatingArrays.from_columns(frame["user_id"], frame["movie_id"], frame["score"])


def _read_csv_ratings(file: Path) -> RatingArrays:
    frame = pd.read_csv(
        file,
        usecols=["userId", "movieId", "rating"],
        dtype={"userId": np.int64, "movieId": np.int64, "rating": np.float32},
    )
    return RatingArrays.from_columns(frame["userId"], frame["movieId"], frame["rating"])


def _read_ml100k_movies(folder: Path) -> pd.DataFrame:
    genre_file = folder / "u.genre"
    genres: tuple[str, ...] = _ML100K_GENRES
    if genre_file.is_file():
        lines = genre_file.read_text(encoding="latin-1").splitlines()
        genres = tuple(line.rsplit("|", 1)[0] for line in lines if line.strip())
    frame = pd.read_csv(
        folder / "u.item",
        sep="|",
        header=None,
        encoding="latin-1",
        names=["id", "title", "date", "video_date", "url", *genres],
        usecols=["id", "title", "date", *genres],
        dtype={"id": np.int64, "title": str, "date": str, **dict.fromkeys(genres, np.int8)},
        keep_default_na=False,
    )
    flags = frame[list(genres)].to_numpy()
    first = np.where(flags.any(axis=1), flags.argmax(axis=1), 0)
    genre = pd.Series(np.asarray(genres, dtype=object)[first], index=frame.index)
    date_year = frame["date"].str.extract(r"(\d{4})\s*$", expand=False)
    return _movie_table(frame["id"], frame["title"], genre, date_year)


def _read_csv_movies(file: Path) -> pd.DataFrame:
    frame = pd.read_csv(
        file,
        dtype={"movieId": np.int64, "title": str, "genres": str},
        keep_default_na=False,
    )
    genre = frame["genres"].str.split("|").str[0].replace("(no genres listed)", "unknown")
    return _movie_table(frame["movieId"], frame["title"], genre, None)


_YEAR_SUFFIX = re.compile(r"\s*\((\d{4})\)\s*$")


def _movie_table(
    ids: pd.Series, titles: pd.Series, genres: pd.Series, fallback_year: pd.Series | None
) -> pd.DataFrame:
    """Build the `id, title, year, genre` table, taking the year off the title."""
    year = titles.str.extract(_YEAR_SUFFIX, expand=False)
    if fallback_year is not None:
        year = year.fillna(fallback_year)
    return pd.DataFrame(
        {
            "id": ids.astype(np.int64),
            "title": titles.str.replace(_YEAR_SUFFIX, "", regex=True).str.strip(),
            "year": pd.to_numeric(year).astype("Int64"),
            "genre": genres.astype(str),
        }
    )


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
