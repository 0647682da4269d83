from fastapi.testclient import TestClient

from app.main import app

client = TestClient(app)


def test_a_movie_can_be_added_and_listed() -> None:
    movie = client.post("/movies", json={"title": "Heat", "year": 1995, "genre": "Crime"})
    assert movie.status_code == 201
    assert client.get("/movies").json() == [movie.json()]


def test_a_rating_needs_a_known_movie() -> None:
    answer = client.post("/ratings", json={"movie_id": 99, "user_id": 1, "score": 5})
    assert answer.status_code == 404


def test_recommendations_leave_out_what_the_user_rated() -> None:
    for title in ("Heat", "Alien"):
        client.post("/movies", json={"title": title, "year": 1990, "genre": "Drama"})
    client.post("/ratings", json={"movie_id": 1, "user_id": 1, "score": 5})
    client.post("/ratings", json={"movie_id": 2, "user_id": 2, "score": 4})
    assert client.get("/recommendations/1").json() == [2]
