"""Session 09's movie API, whose recommendations rebuild in the background.

This package is the service a student reads; each module has one job:

- `data`: the built-in catalogue, synthetic ratings with a known truth, MovieLens loaders.
- `store`: where movies, ratings and task records live (`MemoryStore`, `SQLiteStore`,
  `PostgresStore`).
- `recommender`: the truncated-SVD model, its top-k lists and evaluation metrics.
- `tasks`: rebuild tasks (`queued -> running -> complete`) and the service that runs them.
- `api`: the FastAPI app (`create_app`), one router per resource.
- `retry`: `with_backoff` and `poll_task`, the retrying client.
- `server`: `serve_in_thread`, uvicorn in a background thread for notebooks.

Two subpackages build on it and are never imported by it: `labsupport.scaleout`
(the `redis` extra: several API processes sharing Redis, rebuilds on RQ) and
`labsupport.classroom` (the notebooks' checks, plots, demos and widgets).

The names notebooks use are re-exported here. Importing the package does
nothing else (no seeding, no server, no network) and loads each module only
when one of its names is first used, so `import labsupport` stays quick.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

__all__ = [
    "MemoryStore",
    "Model",
    "RatingArrays",
    "RebuildService",
    "SQLiteStore",
    "TaskFailedError",
    "build_model",
    "catalogue_movies",
    "counter_ids",
    "create_app",
    "demo_ratings",
    "demo_store",
    "poll_task",
    "predict",
    "recommend",
    "recommend_for_user",
    "running_servers",
    "score_matrix",
    "serve_in_thread",
    "stop_all",
    "synthetic_ratings",
    "with_backoff",
]

__version__ = "0.9.0"

# A library stays quiet unless the application configures logging (the
# `python -m labsupport serve` command does); without this, Python's
# last-resort handler would print warnings into whatever notebook cell runs.
logging.getLogger("labsupport").addHandler(logging.NullHandler())

_HOME = {
    "MemoryStore": "store",
    "Model": "recommender",
    "RatingArrays": "_types",
    "RebuildService": "tasks",
    "SQLiteStore": "store",
    "TaskFailedError": "retry",
    "build_model": "recommender",
    "catalogue_movies": "data",
    "counter_ids": "tasks",
    "create_app": "api",
    "demo_ratings": "data",
    "demo_store": "store",
    "poll_task": "retry",
    "predict": "recommender",
    "recommend": "recommender",
    "recommend_for_user": "recommender",
    "running_servers": "server",
    "score_matrix": "recommender",
    "serve_in_thread": "server",
    "stop_all": "server",
    "synthetic_ratings": "data",
    "with_backoff": "retry",
}

if TYPE_CHECKING:
    from labsupport._types import RatingArrays
    from labsupport.api import create_app
    from labsupport.data import catalogue_movies, demo_ratings, synthetic_ratings
    from labsupport.recommender import (
        Model,
        build_model,
        predict,
        recommend,
        recommend_for_user,
        score_matrix,
    )
    from labsupport.retry import TaskFailedError, poll_task, with_backoff
    from labsupport.server import running_servers, serve_in_thread, stop_all
    from labsupport.store import MemoryStore, SQLiteStore, demo_store
    from labsupport.tasks import RebuildService, counter_ids


def __getattr__(name: str) -> Any:
    if name in _HOME:
        value = getattr(importlib.import_module(f"labsupport.{_HOME[name]}"), name)
        globals()[name] = value
        return value
    msg = f"module 'labsupport' has no attribute {name!r}"
    raise AttributeError(msg)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
