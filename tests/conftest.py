"""Shared fixtures: small stores and apps, and the MovieLens location."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from labsupport.api import create_app
from labsupport.store import MemoryStore
from labsupport.tasks import counter_ids

MOVIES = [
    ("The Matrix", 1999, "Sci-Fi"),
    ("Alien", 1979, "Sci-Fi"),
    ("Toy Story", 1995, "Animation"),
    ("Up", 2009, "Animation"),
    ("Heat", 1995, "Crime"),
    ("Fargo", 1996, "Crime"),
]


@pytest.fixture
def store() -> MemoryStore:
    """A memory store with six movies and a few ratings from three users."""
    s = MemoryStore()
    for title, year, genre in MOVIES:
        s.add_movie(title, year, genre)
    for user, movie, score in [
        (1, 1, 5),
        (1, 2, 4),
        (1, 3, 1),
        (2, 1, 4),
        (2, 2, 5),
        (2, 5, 4),
        (3, 3, 5),
        (3, 4, 4),
        (3, 6, 2),
    ]:
        s.add_rating(user, movie, score)
    return s


@pytest.fixture
def app(store: MemoryStore) -> FastAPI:
    return create_app(store, task_id_factory=counter_ids())


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as c:  # runs the lifespan
        yield c


def movielens_dir(name: str) -> Path:
    """Return the shared MovieLens copy or skip the test with a clear reason."""
    from labsupport.data import find_movielens

    path = find_movielens(name)
    if path is None:
        pytest.skip(f"MovieLens {name} not found (../shared/data/movielens/{name}); skipping")
    return path
