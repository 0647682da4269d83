"""Build a movie recommender from ratings with truncated SVDs, and evaluate it.

`build_model` returns an immutable `Model`; `recommend`, `predict` and
`score_matrix` answer from it (`labsupport.recommender.model`, which explains
the design). `recommend_from_ratings` answers for a user who rated after
the build, by folding their ratings into the model (`fold_in`,
`holds_ratings`: `labsupport.recommender.foldin`). `precision_recall_at_k`
and `rmse` measure it on held-out ratings
(`labsupport.recommender.evaluation`), and `seed_build_model` is the
lesson's original dense design (`labsupport.recommender.seed`). The
factorisations themselves are in `labsupport.recommender.svd`. Every name is
re-exported here.
"""

from __future__ import annotations

from labsupport.recommender.evaluation import precision_recall_at_k, rmse
from labsupport.recommender.foldin import fold_in, holds_ratings, recommend_from_ratings
from labsupport.recommender.model import (
    METHODS,
    Model,
    build_model,
    predict,
    recommend,
    recommend_for_user,
    score_matrix,
)
from labsupport.recommender.seed import seed_build_model

__all__ = [
    "METHODS",
    "Model",
    "build_model",
    "fold_in",
    "holds_ratings",
    "precision_recall_at_k",
    "predict",
    "recommend",
    "recommend_for_user",
    "recommend_from_ratings",
    "rmse",
    "score_matrix",
    "seed_build_model",
]
