"""Session 09 workbook support: a movie API whose recommendations rebuild in the background.

The most used names are re-exported here; each lives in a small module named
for its job (`data`, `store`, `recommender`, `tasks`, `api`, `retry`,
`server`, `plots`, `checks`). Importing this package does nothing else:
no seeding, no server, no network, no plot settings. The re-exports load their
module on first use, so `import labsupport` stays quick.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

__all__ = [
    "Model",
    "RatingArrays",
    "build_model",
    "create_app",
    "predict",
    "recommend",
    "recommend_for_user",
    "serve_in_thread",
    "with_backoff",
]

__version__ = "0.9.0"

# A library stays quiet unless the application configures logging (the
# `python -m labsupport serve` command does); without this, Python's
# last-resort handler would print warnings into whatever notebook cell runs.
logging.getLogger("labsupport").addHandler(logging.NullHandler())

_HOME = {
    "Model": "recommender",
    "RatingArrays": "_types",
    "build_model": "recommender",
    "create_app": "api",
    "predict": "recommender",
    "recommend": "recommender",
    "recommend_for_user": "recommender",
    "serve_in_thread": "server",
    "with_backoff": "retry",
}

if TYPE_CHECKING:
    from labsupport._types import RatingArrays
    from labsupport.api import create_app
    from labsupport.recommender import (
        Model,
        build_model,
        predict,
        recommend,
        recommend_for_user,
    )
    from labsupport.retry import with_backoff
    from labsupport.server import serve_in_thread


def __getattr__(name: str) -> Any:
    if name in _HOME:
        value = getattr(importlib.import_module(f"labsupport.{_HOME[name]}"), name)
        globals()[name] = value
        return value
    msg = f"module 'labsupport' has no attribute {name!r}"
    raise AttributeError(msg)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
