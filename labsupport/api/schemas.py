"""The API's request and response bodies, as pydantic models.

FastAPI validates every request body against these models and writes
`/openapi.json` from them. The input models are strict: `"5"` is not a
score and an unknown field is an error, so a bad request is refused with 422
before it reaches the store. `5.0` still counts as the integer 5, as JSON
Schema's `integer` says it should.

`error_responses` documents the error answers an endpoint can give (each a
`Detail`), and `exact_openapi` keeps the 64-bit id bounds exact in the
published schema.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import FastAPI
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, StrictStr

from labsupport.tasks import TaskStatus

__all__ = [
    "MAX_ID",
    "Detail",
    "ModelInfo",
    "MovieIn",
    "MovieOut",
    "Queued",
    "RatingIn",
    "TaskOut",
    "error_responses",
    "exact_openapi",
]

MAX_ID = 2**63 - 1
"""Largest accepted user or movie id (SQLite's INTEGER range)."""


def _integral(value: object) -> object:
    """JSON Schema's `integer` includes `5.0`: read an integral float as that int."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


_Integral = BeforeValidator(_integral)  # after Field(...): the JSON schema keeps minimum/maximum
_Id = Annotated[StrictInt, Field(ge=1, le=MAX_ID), _Integral]


class MovieIn(BaseModel):
    """A movie to add."""

    model_config = ConfigDict(extra="forbid")
    title: Annotated[StrictStr, Field(min_length=1, max_length=200)]
    year: Annotated[StrictInt, Field(ge=1878, le=2100), _Integral]
    genre: Annotated[StrictStr, Field(min_length=1, max_length=50)]


class MovieOut(MovieIn):
    """A stored movie."""

    id: int


class RatingIn(BaseModel):
    """A user's score for a movie: an integer from 1 to 5."""

    model_config = ConfigDict(extra="forbid")
    movie_id: _Id
    user_id: _Id
    score: Annotated[StrictInt, Field(ge=1, le=5), _Integral]


class TaskOut(BaseModel):
    """A rebuild task as the status endpoint reports it."""

    task_id: str
    status: TaskStatus
    sample: list[int] = Field(description="user 1's top 3 once the task is complete")
    progress: float
    queued_at: float
    started_at: float | None
    finished_at: float | None
    error: str | None
    model_version: int | None
    trigger: Literal["manual", "auto"] = Field(
        description="what started it: a client's POST (manual) or the automatic refresh (auto)"
    )


class Queued(BaseModel):
    """The answer to `POST /recommender/rebuild`."""

    task_id: str
    status: TaskStatus


class TaskRef(BaseModel):
    """The most recent rebuild task, in short (its status URL has the rest)."""

    task_id: str
    status: TaskStatus
    trigger: Literal["manual", "auto"]


class ModelInfo(BaseModel):
    """The serving model (all null before the first build)."""

    version: int | None
    built_at: float | None
    n_users: int
    n_movies: int
    n_ratings: int
    rank: int | None
    method: str | None
    build_seconds: float | None
    ratings_since_build: int
    staleness_seconds: float | None = Field(
        description="age of the oldest rating this model has not seen; null when it saw them all"
    )
    last_task: TaskRef | None = Field(
        description="the most recent rebuild task, manual or automatic (null before any)"
    )


class Detail(BaseModel):
    """An error."""

    detail: str


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """Document error answers for a route's `responses=`.

    Args:
        codes: the status codes the route can answer with an error.

    Returns:
        Each code mapped to the `Detail` model, as FastAPI's `responses` expects.
    """
    return {code: {"model": Detail} for code in codes}


def exact_openapi(app: FastAPI) -> dict[str, Any]:
    """Make (once) and return the app's OpenAPI schema, with exact integer bounds.

    FastAPI's OpenAPI model types bounds as floats, so `MAX_ID` would come out
    as `9.223372036854776e+18` (2**63); this puts pydantic's exact schemas of
    the input models back. Install it with
    `app.openapi = functools.partial(exact_openapi, app)`.

    Args:
        app: the app whose schema to make.

    Returns:
        The cached, corrected schema.
    """
    if app.openapi_schema is None:
        schema = FastAPI.openapi(app)  # builds and caches app.openapi_schema
        for model in (MovieIn, RatingIn):
            schema["components"]["schemas"][model.__name__] = model.model_json_schema()
    return FastAPI.openapi(app)  # the cached, corrected schema
