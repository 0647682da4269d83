"""What only a database server can do to `PostgresStore`: many processes, and outages.

The `Store` contract itself runs on PostgreSQL in test_store.py, and the seed's
demo flow, a restart and a SIGKILL mid-rebuild in test_cli.py. Here: the schema
migration when processes start at once, writers in parallel, the incremental
read under concurrent commits, and a server that is down or goes away, in
process and under a real `serve` process. Every test skips, with the reason,
when no throwaway PostgreSQL can be started (see conftest).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import free_port, serve_command, stop_process, wait_healthy
from fastapi.testclient import TestClient

from benchmarks._postgres import ThrowawayPostgres, why_unavailable
from labsupport._types import RatingArrays
from labsupport.api import create_app
from labsupport.store import MissingPostgresError, StoreUnavailableError, open_store
from labsupport.store.postgres import PostgresStore


def pairs(columns: RatingArrays) -> dict[tuple[int, int], float]:
    return {
        (u, m): s
        for u, m, s in zip(
            columns.user_ids.tolist(),
            columns.movie_ids.tolist(),
            columns.scores.tolist(),
            strict=True,
        )
    }


# ---------------------------------------------------------------- many processes, one schema


def test_stores_opening_at_once_migrate_the_schema_once(postgres_url: str) -> None:
    # eight pools, so eight sessions contend for the advisory lock, as eight processes would
    barrier = threading.Barrier(8, timeout=10)

    def start(_: int) -> int:
        barrier.wait()
        with PostgresStore(postgres_url) as store:
            return store.count_movies()

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(start, range(8))) == [0] * 8
    import psycopg

    with psycopg.connect(postgres_url) as con:
        assert con.execute("SELECT version FROM labsupport_schema").fetchall() == [(1,)]
        assert con.execute("SELECT count(*) FROM counters").fetchone() == (1,)


def test_a_schema_newer_than_the_code_is_refused(postgres_url: str) -> None:
    PostgresStore(postgres_url).close()
    import psycopg

    with psycopg.connect(postgres_url) as con:
        con.execute("INSERT INTO labsupport_schema VALUES (99)")
    with pytest.raises(RuntimeError, match=r"schema version 99.*upgrade labsupport"):
        PostgresStore(postgres_url)


# ---------------------------------------------------------------- writers in parallel


def test_writers_in_parallel_through_separate_pools_lose_nothing(postgres_url: str) -> None:
    with PostgresStore(postgres_url) as setup:
        setup.add_movies((f"Movie {i}", 2000, "Drama") for i in range(50))
    stores = [PostgresStore(postgres_url) for _ in range(4)]  # as four API processes would
    try:

        def write(writer: int) -> None:
            store = stores[writer]
            for i in range(100):
                store.add_rating(writer, 1 + i % 50, 1 + i % 5)  # upserts: 50 pairs each
            store.add_ratings(  # and a batch over the other writers' pairs
                RatingArrays.from_columns([10 + writer] * 50, range(1, 51), [3] * 50)
            )

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(write, range(4)))
        reader = stores[0]
        assert reader.count_ratings() == 4 * 50 + 4 * 50
        assert reader.ratings_version() == 4 * (100 + 50)  # every row written counts
        assert pairs(reader.rating_arrays()) == {
            (int(r["user_id"]), int(r["movie_id"])): float(r["score"])
            for r in reader.list_ratings()
        }
    finally:
        for store in stores:
            store.close()


def test_the_incremental_read_misses_no_write_committed_while_it_reads(postgres_url: str) -> None:
    """A reader merging only new rows must never skip one a slower writer commits later."""
    with PostgresStore(postgres_url) as setup:
        setup.add_movies((f"Movie {i}", 2000, "Drama") for i in range(20))
        setup.add_ratings(RatingArrays.from_columns(range(2000), [1] * 2000, [3] * 2000))
    reader, writers = PostgresStore(postgres_url), [PostgresStore(postgres_url) for _ in range(3)]
    stop = threading.Event()
    snapshots: list[RatingArrays] = []
    try:

        def write(writer: int) -> None:
            rng = np.random.default_rng(writer)
            for _ in range(60):
                n = int(rng.integers(1, 20))
                writers[writer].add_ratings(
                    RatingArrays.from_columns(
                        rng.integers(0, 3000, n), rng.integers(1, 21, n), rng.integers(1, 6, n)
                    )
                )

        def read() -> None:
            while not stop.is_set():
                snapshots.append(reader.rating_arrays())

        watcher = threading.Thread(target=read)
        watcher.start()
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(write, range(3)))
        stop.set()
        watcher.join(30)
        merged = reader.rating_arrays()  # the last merge, after every commit
        with PostgresStore(postgres_url) as fresh:
            full = fresh.rating_arrays()  # one full read
        assert pairs(merged) == pairs(full)
        assert len(snapshots) > 5  # the reader really merged while the writers committed
        for columns in snapshots:  # each snapshot is sorted by (user, movie), no repeats
            key = columns.user_ids * 100 + columns.movie_ids
            assert (np.diff(key) > 0).all()
    finally:
        for store in (reader, *writers):
            store.close()


def test_extreme_ids_and_fractional_scores_round_trip(postgres_url: str) -> None:
    big = np.iinfo(np.int64).max
    with PostgresStore(postgres_url) as store:
        store.add_ratings(RatingArrays.from_columns([-5, big, 0], [big, -1, 7], [0.5, 4.25, 1e-3]))
        assert pairs(store.rating_arrays()) == {
            (-5, big): 0.5,
            (big, -1): 4.25,
            (0, 7): pytest.approx(1e-3),
        }
        assert pairs(store.user_ratings(big)) == {(big, -1): 4.25}


def test_a_read_in_many_chunks_equals_the_rows(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import labsupport.store.postgres as postgres

    monkeypatch.setattr(postgres, "_CHUNK_ROWS", 3)  # 11 rows: chunks of 3, 3, 3 and 2
    low = int(np.iinfo(np.int64).min)
    users = [low, low, 5, 5, 5, 6, 7, 7, 8, 9, 9]
    movies = [low, 1, 3, 1, 2, 1, 9, 8, 1, 2, 1]
    with PostgresStore(postgres_url) as store:
        store.add_ratings(RatingArrays.from_columns(users, movies, range(11)))
        columns = store.rating_arrays()
    written = list(zip(users, movies, strict=True))
    assert list(zip(columns.user_ids.tolist(), columns.movie_ids.tolist(), strict=True)) == sorted(
        written
    )
    assert pairs(columns) == {pair: float(i) for i, pair in enumerate(written)}


# ---------------------------------------------------------------- a server that is not there


def test_no_server_at_the_url_is_one_sentence_without_the_password() -> None:
    url = f"postgresql://movies:s3cret@127.0.0.1:{free_port()}/movies"
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError) as raised:
        open_store(url)
    message = str(raised.value)
    assert "127.0.0.1" in message and "--db" in message
    assert "s3cret" not in message and "\n" not in message
    assert time.monotonic() - started < 10  # it gives up; it does not hang


def test_serve_with_no_server_at_the_url_stops_with_a_one_line_error(tmp_path: Path) -> None:
    url = f"postgresql://movies@127.0.0.1:{free_port()}/movies"
    done = subprocess.run(
        serve_command(free_port(), url), capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("error: could not connect to PostgreSQL")
    assert "Traceback" not in done.stderr and list(tmp_path.iterdir()) == []


def test_a_database_that_does_not_exist_is_named(postgres_server: ThrowawayPostgres) -> None:
    with pytest.raises(StoreUnavailableError, match='database "no_such_db" does not exist'):
        open_store(postgres_server.url_of("no_such_db"))


def test_a_url_without_the_postgres_extra_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg now fails
    monkeypatch.delitem(sys.modules, "labsupport.store.postgres", raising=False)
    with pytest.raises(MissingPostgresError, match=r"labsupport\[postgres\]"):
        open_store("postgresql://postgres@127.0.0.1:5432/movies")


@pytest.fixture
def own_server() -> Iterator[ThrowawayPostgres]:
    """A cluster of this test's own, since the test stops it."""
    reason = why_unavailable()
    if reason is not None:
        pytest.skip(f"no throwaway PostgreSQL: {reason}")
    with ThrowawayPostgres() as server:
        yield server


def test_in_process_a_server_that_goes_away_answers_503_and_comes_back(
    own_server: ThrowawayPostgres,
) -> None:
    store = PostgresStore(own_server.create_database("movies"), timeout=1.0)
    store.add_movie("Heat", 1995, "Crime")
    app = create_app(store=store)
    with TestClient(app) as client:
        assert client.get("/movies").status_code == 200
        own_server.stop()
        for method, path, body in [
            ("GET", "/movies", None),
            ("POST", "/ratings", {"user_id": 1, "movie_id": 1, "score": 4}),
            ("POST", "/recommender/rebuild", None),
        ]:
            answer = client.request(method, path, json=body)
            assert answer.status_code == 503, (path, answer.text)
            assert answer.headers["Retry-After"] == "1"
            assert "out of reach" in answer.json()["detail"]
        assert client.get("/health").status_code == 200
        own_server.start()
        assert client.post("/ratings", json={"user_id": 1, "movie_id": 1, "score": 4}).is_success
        answer = client.post("/recommender/rebuild")  # the 503 left no half-made task to join
        assert answer.status_code == 202
        done = app.state.service.wait(answer.json()["task_id"], timeout=20)
        assert done.status.value == "complete"
    store.close()


def test_a_running_service_answers_503_while_postgres_is_down_and_recovers(
    own_server: ThrowawayPostgres, tmp_path: Path
) -> None:
    url = own_server.create_database("movies")
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            serve_command(port, url, "--demo"), stdout=out, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, proc, log.read_text)
        with httpx.Client(base_url=base, timeout=10) as http:
            assert http.get("/movies").status_code == 200
            own_server.stop()
            probes = [
                ("GET", "/movies", None),
                ("GET", "/movies/1", None),
                ("POST", "/ratings", {"user_id": 7, "movie_id": 1, "score": 5}),
                ("POST", "/recommender/rebuild", None),
                ("GET", "/recommender", None),
            ]
            with ThreadPoolExecutor(len(probes)) as pool:  # each waits out the pool's timeout
                answers = list(pool.map(lambda p: http.request(p[0], p[1], json=p[2]), probes))
            for (_, path, _), answer in zip(probes, answers, strict=True):
                assert answer.status_code == 503, (path, answer.text)
                assert answer.headers["Retry-After"] == "1"
                detail = answer.json()["detail"]
                assert "out of reach" in detail and "\n" not in detail
                assert "Traceback" not in answer.text
            # what needs no database keeps answering: the model is in memory
            assert http.get("/health").status_code == 200
            assert http.get("/recommendations/1", params={"limit": 3}).status_code == 200
            own_server.start()
            back = time.monotonic()
            while http.get("/movies").status_code != 200:
                assert time.monotonic() - back < 10, "not serving 10 s after PostgreSQL came back"
                time.sleep(0.1)
            assert http.post("/ratings", json={"user_id": 7, "movie_id": 1, "score": 5}).is_success
            task_id = http.post("/recommender/rebuild").json()["task_id"]
            deadline = time.monotonic() + 20
            while http.get(f"/recommender/rebuild/{task_id}").json()["status"] != "complete":
                assert time.monotonic() < deadline
                time.sleep(0.1)
    finally:
        stop_process(proc)
    assert proc.returncode in (0, -15)
    output = log.read_text()
    assert "Traceback" not in output, output
