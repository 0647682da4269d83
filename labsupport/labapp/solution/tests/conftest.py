import pytest

from app import recommender, repository


@pytest.fixture(autouse=True)
def empty_repository() -> None:
    """Every test starts with no movies, no ratings and no model."""
    repository.reset()
    recommender.MODEL_CACHE = {}
