import pytest

from app import repository


@pytest.fixture(autouse=True)
def empty_repository() -> None:
    """Every test starts with no movies and no ratings."""
    repository.reset()
