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

The modules: `labsupport.data.catalogue` (the films and the demo ratings),
`labsupport.data.synthetic` (the planted model and its ratings),
`labsupport.data.movielens` (the loaders) and `labsupport.data.split`
(`split_per_user`). Every name is re-exported here.
"""

from __future__ import annotations

from labsupport.data.catalogue import CATALOGUE, catalogue_movies, demo_ratings
from labsupport.data.movielens import (
    MovieLens,
    MovieLensNotFoundError,
    find_movielens,
    load_movielens,
    load_movielens_fold,
)
from labsupport.data.split import split_per_user
from labsupport.data.synthetic import (
    SHAPES,
    PlantedModel,
    planted_model,
    synthetic_ratings,
    synthetic_shape,
)

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
