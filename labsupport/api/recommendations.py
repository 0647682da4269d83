"""`GET /recommendations/{user_id}`: a user's top movie ids from the serving model.

The endpoint never builds anything: it reads the service's current model once
and ranks from it, so a rebuild running in the background never slows it
down. Before the first build it answers with the catalogue in id order and
says so with `X-Model-Version: none`.

A model never changes, so its answers are cached as ready JSON bytes in an
`AnswerCache` (one per app, in `app.state.answers`); a new model starts a new,
empty cache.
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
from labsupport.recommender import Model, recommend

__all__ = ["AnswerCache", "router"]

router = APIRouter(tags=["recommendations"])


def _json(ids: list[int]) -> bytes:
    return json.dumps(ids, separators=(",", ":")).encode()


class AnswerCache:
    """Recent recommendation answers of the serving model, as ready JSON bytes.

    A model never changes, so its answer for (user, limit, exclude_rated)
    never does either; a new model gets a new, empty cache, and the old one
    (with the old model it references) is dropped at once.
    """

    def __init__(self, maxsize: int = 65_536) -> None:
        self.maxsize = maxsize
        self._model: Model | None = None
        self._answer: Callable[[int, int, bool], bytes] = lambda *_: b"[]"

    def get(self, model: Model) -> Callable[[int, int, bool], bytes]:
        """The cached answer function for `model`: `(user_id, limit, exclude_rated) -> bytes`."""
        if model is not self._model:

            @functools.lru_cache(maxsize=self.maxsize)
            def answer(user_id: int, limit: int, exclude_rated: bool) -> bytes:
                return _json(recommend(model, user_id, limit, exclude_rated))

            self._model, self._answer = model, answer
        return self._answer


@router.get("/recommendations/{user_id}", response_model=list[int], responses=error_responses(422))
async def recommendations(
    user_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    request: Request,
    limit: Annotated[int, Query(ge=1, le=100)] = 5,
    exclude_rated: bool = False,
) -> Response:
    """Return the user's top movie ids from the serving model.

    Never builds anything: before the first rebuild it returns the
    catalogue in id order and says so with `X-Model-Version: none`.
    The model's version is in the `X-Model-Version` header.
    """
    # `async def` and a ready-made JSON body: the work is a top-k over one
    # user's scores (tens of microseconds), cheaper than a trip through the
    # thread pool and a response-model validation of a list of ints.
    model = service_of(request).model  # read the reference once: one model per request
    if model is None:
        movies = await run_in_threadpool(store_of(request).list_movies, limit=limit)
        body, version = _json([m.id for m in movies]), "none"
    else:
        answers: AnswerCache = request.app.state.answers
        body, version = answers.get(model)(user_id, limit, exclude_rated), str(model.version)
    return Response(body, media_type="application/json", headers={"X-Model-Version": version})
