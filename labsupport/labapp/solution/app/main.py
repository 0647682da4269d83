"""The movie API: movies, ratings, and recommendations rebuilt in the background.

Run it from this folder with `uvicorn app.main:app --reload`, then open
http://127.0.0.1:8000/docs.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import BackgroundTasks, FastAPI, Header, HTTPException, Response
from pydantic import BaseModel, Field

from app import recommender, repository

logger = logging.getLogger("app")

TASK_STATUS: dict[str, str] = {}  # task id -> queued | running | complete | failed | interrupted
TASK_BY_KEY: dict[str, str] = {}  # Idempotency-Key -> the task it started
UNFINISHED = ("queued", "running")
REBUILD_DELAY = 0.5  # seconds: slow enough to watch "running" in class


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield  # the app serves requests while suspended here
    # Shutting down: a rebuild that has not finished will not finish now.
    unfinished = [task_id for task_id, status in TASK_STATUS.items() if status in UNFINISHED]
    for task_id in unfinished:
        TASK_STATUS[task_id] = "interrupted"
    if unfinished:
        logger.warning("shutting down: rebuild(s) %s interrupted", ", ".join(unfinished))


app = FastAPI(title="Movie API", lifespan=lifespan)


class MovieIn(BaseModel):
    title: str = Field(min_length=1)
    year: int = Field(ge=1870, le=2100)
    genre: str


class RatingIn(BaseModel):
    movie_id: int
    user_id: int = Field(ge=1)
    score: int = Field(ge=1, le=5)


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/movies")
async def list_movies() -> list[dict[str, Any]]:
    return repository.list_movies()


@app.post("/movies", status_code=201)
async def add_movie(movie: MovieIn) -> dict[str, Any]:
    return repository.add_movie(movie.title, movie.year, movie.genre)


@app.post("/ratings", status_code=201)
async def add_rating(rating: RatingIn) -> dict[str, int]:
    if repository.get_movie(rating.movie_id) is None:
        raise HTTPException(status_code=404, detail=f"no movie with id {rating.movie_id}")
    return repository.add_rating(rating.user_id, rating.movie_id, rating.score)


@app.get("/recommendations/{user_id}")
async def recommendations(user_id: int, limit: int = 5) -> list[int]:
    return recommender.recommend_for_user(repository.list_ratings(), user_id, k=limit)


def run_rebuild_task(task_id: str) -> None:
    """Build a new model; runs after the response, in a worker thread (a plain `def`)."""
    TASK_STATUS[task_id] = "running"
    try:
        time.sleep(REBUILD_DELAY)
        recommender.build_model(repository.list_ratings())
    except Exception:
        logger.exception("rebuild %s failed", task_id)
        TASK_STATUS[task_id] = "failed"
    else:
        TASK_STATUS[task_id] = "complete"


@app.post("/recommender/rebuild", status_code=202)
async def rebuild_recommendations(
    background: BackgroundTasks,
    response: Response,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> dict[str, str]:
    if idempotency_key in TASK_BY_KEY:  # a retry of a request we already accepted
        task_id = TASK_BY_KEY[idempotency_key]
    else:
        task_id = str(uuid.uuid4())
        TASK_STATUS[task_id] = "queued"
        if idempotency_key:
            TASK_BY_KEY[idempotency_key] = task_id
        background.add_task(run_rebuild_task, task_id)  # the function, not a call
    response.headers["Location"] = f"/recommender/rebuild/{task_id}"
    response.headers["X-Task-Id"] = task_id
    return {"task_id": task_id, "status": TASK_STATUS[task_id]}


@app.get("/recommender/rebuild/{task_id}")
async def rebuild_status(task_id: str, response: Response) -> dict[str, str]:
    status = TASK_STATUS.get(task_id)
    if status is None:
        raise HTTPException(status_code=404, detail=f"no rebuild task {task_id}")
    if status in UNFINISHED:
        response.headers["Retry-After"] = "1"  # seconds until it is worth asking again
    return {"task_id": task_id, "status": status}
