"""The movie API: movies, ratings and recommendations.

Run it from this folder with `uvicorn app.main:app --reload`, then open
http://127.0.0.1:8000/docs.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

from app import recommender, repository

app = FastAPI(title="Movie API")


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
