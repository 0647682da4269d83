"""The catalogue: `POST /movies`, `GET /movies` and `GET /movies/{movie_id}`.

The endpoints are plain `def`: FastAPI runs them in its thread pool, so a
store call that waits (SQLite) never blocks the event loop.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request

from labsupport.api.schemas import MAX_ID, MovieIn, MovieOut, error_responses
from labsupport.api.state import store_of

__all__ = ["router"]

router = APIRouter(tags=["movies"])


@router.post("/movies", status_code=201, responses=error_responses(400, 413, 422, 503))
def add_movie(movie: MovieIn, request: Request) -> MovieOut:
    """Add a movie to the catalogue."""
    added = store_of(request).add_movie(movie.title, movie.year, movie.genre)
    return MovieOut(**added.to_dict())


@router.get("/movies", responses=error_responses(422, 503))
def list_movies(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> list[MovieOut]:
    """List movies by id."""
    movies = store_of(request).list_movies(limit=limit, offset=offset)
    return [MovieOut(**m.to_dict()) for m in movies]


@router.get("/movies/{movie_id}", responses=error_responses(404, 422, 503))
def get_movie(movie_id: Annotated[int, Path(ge=1, le=MAX_ID)], request: Request) -> MovieOut:
    """Fetch one movie."""
    movie = store_of(request).get_movie(movie_id)
    if movie is None:
        raise HTTPException(404, f"movie {movie_id} does not exist")
    return MovieOut(**movie.to_dict())
