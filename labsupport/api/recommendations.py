"""`GET /recommendations/{user_id}`: a user's top movie ids from the serving model.

The endpoint never builds anything: it reads the service's current model once
and ranks from it, so a rebuild running in the background never slows it
down. Before the first build it answers with the catalogue in id order and
says so with `X-Model-Version: none`.

A model never changes, so its answers are cached as ready JSON bytes in an
`AnswerCache` (one per app, in `app.state.answers`); a new model starts a new,
empty cache.

With fold-in on (`create_app(fold_in=True)`, `serve --fold-in`), a user who
rated after the serving model was built is answered from their current
ratings: the store's `user_ratings` are projected onto the model's movie side
(`labsupport.recommender.foldin`), with no rebuild, so `X-Model-Version`
stays the same and `X-Fold-In: yes` says what happened. Such an answer
depends on the ratings, not only on the model, so it is computed each time
(a fraction of a millisecond) and never cached; users whose ratings the model
already holds still get the cached answer. The store is read on a worker
thread, never on the event loop.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from labsupport.api.schemas import MAX_ID, error_responses
from labsupport.api.state import service_of, store_of
from labsupport.recommender import Model, holds_ratings, recommend, recommend_from_ratings
from labsupport.store import Store

__all__ = ["AnswerCache", "router"]

router = APIRouter(tags=["recommendations"])


def _json(ids: list[int]) -> bytes:
    return json.dumps(ids, separators=(",", ":")).encode()


class AnswerCache:
    """Recent recommendation answers of the serving model, as ready JSON bytes.

    A model never changes, so its answer for (user, limit, exclude_rated)
    never does either; a new model gets a new, empty cache, and the old one
    (with the old model it references) is dropped at once. With `fold_in`,
    `fresh` answers a user from their current ratings instead.

    Args:
        maxsize: Answers kept per model.
        fold_in: Whether users who rated after the build are folded in.
    """

    def __init__(self, maxsize: int = 65_536, *, fold_in: bool = False) -> None:
        self.maxsize = maxsize
        self.fold_in = fold_in
        # (model, its answer function), swapped as one value: safe from any thread
        self._current: tuple[Model | None, Callable[[int, int, bool], bytes]] = (
            None,
            lambda *_: b"[]",
        )

    def get(self, model: Model) -> Callable[[int, int, bool], bytes]:
        """The cached answer function for `model`: `(user_id, limit, exclude_rated) -> bytes`."""
        current = self._current
        if model is not current[0]:

            @functools.lru_cache(maxsize=self.maxsize)
            def answer(user_id: int, limit: int, exclude_rated: bool) -> bytes:
                return _json(recommend(model, user_id, limit, exclude_rated))

            current = self._current = (model, answer)
        return current[1]

    def fresh(
        self, model: Model, store: Store, pending: int, user_id: int, limit: int, exclude: bool
    ) -> tuple[bytes, bool]:
        """Answer from the user's current ratings; return the body and whether it folded in.

        While no rating was written since the build (`pending == 0`), or the
        model holds exactly the user's ratings, this is the cached answer;
        otherwise the ratings are read from `store` and folded in. Call it on
        a worker thread: it reads the store.
        """
        if pending:
            mine = store.user_ratings(user_id)
            if not holds_ratings(model, user_id, mine.movie_ids, mine.scores):
                ids = recommend_from_ratings(model, mine.movie_ids, mine.scores, limit, exclude)
                return _json(ids), True
        return self.get(model)(user_id, limit, exclude), False


@router.get(
    "/recommendations/{user_id}", response_model=list[int], responses=error_responses(422, 503)
)
async def recommendations(
    user_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    request: Request,
    limit: Annotated[int, Query(ge=1, le=100)] = 5,
    exclude_rated: bool = False,
) -> Response:
    """Return the user's top movie ids from the serving model.

    Never builds anything: before the first rebuild it returns the
    catalogue in id order and says so with `X-Model-Version: none`.
    The model's version is in the `X-Model-Version` header. With fold-in
    on, a user who rated since the build is ranked from their current
    ratings by the same model (`X-Fold-In: yes`).
    """
    # `async def` and a ready-made JSON body: the work is a top-k over one
    # user's scores (tens of microseconds), cheaper than a trip through the
    # thread pool and a response-model validation of a list of ints.
    model = service_of(request).model  # read the reference once: one model per request
    answers: AnswerCache = request.app.state.answers
    folded = False
    if model is None:
        movies = await run_in_threadpool(store_of(request).list_movies, limit=limit)
        body, version = _json([m.id for m in movies]), "none"
    elif answers.fold_in:  # reads the store: on a worker thread
        version = str(model.version)
        body, folded = await run_in_threadpool(
            _fresh, request, model, user_id, limit, exclude_rated
        )
    else:
        body, version = answers.get(model)(user_id, limit, exclude_rated), str(model.version)
    headers = {"X-Model-Version": version, **({"X-Fold-In": "yes"} if folded else {})}
    return Response(body, media_type="application/json", headers=headers)


def _fresh(
    request: Request, model: Model, user_id: int, limit: int, exclude_rated: bool
) -> tuple[bytes, bool]:
    """`AnswerCache.fresh` for this request's app (run on a worker thread)."""
    answers: AnswerCache = request.app.state.answers
    pending = service_of(request).ratings_since_build()
    return answers.fresh(model, store_of(request), pending, user_id, limit, exclude_rated)
