"""`POST /ratings`: add a user's score for a movie, or replace it.

A rating for a movie the catalogue does not have is refused with 404, and the
message says how to add the movie first.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request

from labsupport.api.schemas import RatingIn, error_responses
from labsupport.api.state import store_of
from labsupport.store import UnknownMovieError

__all__ = ["router"]

router = APIRouter(tags=["ratings"])


@router.post("/ratings", status_code=201, responses=error_responses(400, 404, 413, 422, 503))
def add_rating(rating: RatingIn, request: Request) -> RatingIn:
    """Record a rating; rating the same movie again replaces the score."""
    try:
        store_of(request).add_rating(rating.user_id, rating.movie_id, rating.score)
    except UnknownMovieError:
        raise HTTPException(
            404, f"movie {rating.movie_id} does not exist; add it with POST /movies first"
        ) from None
    return rating
