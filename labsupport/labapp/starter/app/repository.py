"""Movies and ratings, kept in memory (the repository from Session 05).

Every function copies what it returns, so callers can never change the
stored rows by accident. A lock keeps writes from threads (background tasks
run in a thread pool) from interleaving.
"""

from __future__ import annotations

import threading
from typing import Any

_lock = threading.Lock()
_movies: dict[int, dict[str, Any]] = {}
_ratings: dict[tuple[int, int], dict[str, int]] = {}  # (user_id, movie_id) -> row

DEMO_MOVIES = [
    ("The Matrix", 1999, "Sci-Fi"),
    ("Spirited Away", 2001, "Animation"),
    ("Heat", 1995, "Crime"),
    ("Toy Story", 1995, "Animation"),
    ("Alien", 1979, "Sci-Fi"),
    ("Amélie", 2001, "Comedy"),
]
# (user_id, movie_id, score): two groups of taste, so recommendations differ.
# fmt: off
DEMO_RATINGS = [
    (1, 1, 5), (1, 5, 4), (1, 3, 4),
    (2, 1, 4), (2, 5, 5),
    (3, 2, 5), (3, 4, 4), (3, 6, 4),
    (4, 2, 4), (4, 6, 5),
]
# fmt: on


def add_movie(title: str, year: int, genre: str) -> dict[str, Any]:
    """Store a movie and return it with its new id."""
    with _lock:
        movie = {"id": len(_movies) + 1, "title": title, "year": year, "genre": genre}
        _movies[movie["id"]] = movie
        return dict(movie)


def get_movie(movie_id: int) -> dict[str, Any] | None:
    """The movie with this id, or None."""
    with _lock:
        movie = _movies.get(movie_id)
        return dict(movie) if movie else None


def list_movies() -> list[dict[str, Any]]:
    """Every movie, in id order."""
    with _lock:
        return [dict(movie) for movie in _movies.values()]


def add_rating(user_id: int, movie_id: int, score: int) -> dict[str, int]:
    """Store a rating; a user's new score for a movie replaces the old one."""
    with _lock:
        row = {"user_id": user_id, "movie_id": movie_id, "score": score}
        _ratings[(user_id, movie_id)] = row
        return dict(row)


def list_ratings() -> list[dict[str, int]]:
    """Every rating as a dict with `user_id`, `movie_id` and `score`."""
    with _lock:
        return [dict(row) for row in _ratings.values()]


def reset(demo: bool = False) -> None:
    """Forget everything (tests start from here); `demo=True` loads the demo data."""
    with _lock:
        _movies.clear()
        _ratings.clear()
    if demo:
        for title, year, genre in DEMO_MOVIES:
            add_movie(title, year, genre)
        for user_id, movie_id, score in DEMO_RATINGS:
            add_rating(user_id, movie_id, score)


reset(demo=True)
