import time
from fastapi.testclient import TestClient

from app.main import app

client = TestClient(app)


def test_rebuild_flow():
    # seed a custom rating
    movie = client.post(
        "/movies",
        json={"title": "Async Demo", "year": 2024, "genre": "Sci-Fi"},
    ).json()
    client.post(
        "/ratings",
        json={"movie_id": movie["id"], "user_id": 88, "score": 5},
    )
    task_id = client.post("/recommender/rebuild").json()["task_id"]

    deadline = time.time() + 5
    while time.time() < deadline:
        status = client.get(f"/recommender/rebuild/{task_id}").json()["status"]
        if status == "complete":
            break
        time.sleep(0.2)

    assert client.get(f"/recommender/rebuild/{task_id}").json()["status"] == "complete"
    recs = client.get("/recommendations/88?limit=1").json()
    assert movie["id"] in recs
