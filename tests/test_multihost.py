"""Beyond one machine: API processes and a worker that share nothing but two URLs.

PostgreSQL holds the movies and ratings, Redis the tasks, the queue and the
models. Two `serve` processes and one RQ `worker` each run in an empty working
directory of their own, as on three hosts; the seed's demo flow runs through
both API processes, and afterwards every directory is still empty: nothing
reached a file that the others would have had to share.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import eventually, free_port, serve_command, stop_process, wait_healthy

from benchmarks._postgres import ThrowawayPostgres


class Host:
    """One process in its own empty working directory, its output in a log beside it."""

    def __init__(self, home: Path, command: list[str]) -> None:
        self.cwd = home / "cwd"
        self.cwd.mkdir(parents=True)
        self.log = home / "output.log"
        with self.log.open("w") as out:
            env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
            self.proc = subprocess.Popen(
                command, cwd=self.cwd, stdout=out, stderr=subprocess.STDOUT, env=env
            )

    def output(self) -> str:
        return self.log.read_text()


class ThreeHosts:
    def __init__(self, root: Path, db_url: str, redis_url: str) -> None:
        shared = ("--redis", redis_url, "--queue", "rq", "--lease-ttl", "2")
        self.hosts: list[Host] = []
        self.urls: list[str] = []
        for name, extra in (("api-a", ("--demo",)), ("api-b", ())):
            port = free_port()
            self.hosts.append(Host(root / name, serve_command(port, db_url, *shared, *extra)))
            self.urls.append(f"http://127.0.0.1:{port}")
            # A loads the demo catalogue first; B then opens the same, already filled, database
            wait_healthy(self.urls[-1], self.hosts[-1].proc, self.hosts[-1].output)
        worker = ["worker", "--redis", redis_url, "--db", db_url, "--log-level", "info"]
        self.hosts.append(Host(root / "worker", [sys.executable, "-m", "labsupport", *worker]))

    def logs(self) -> str:
        return "\n".join(f"--- {h.cwd.parent.name}\n{h.output()}" for h in self.hosts)


@pytest.fixture
def hosts(
    tmp_path: Path, postgres_server: ThrowawayPostgres, fresh_redis_url: str
) -> Iterator[ThreeHosts]:
    three = ThreeHosts(tmp_path, postgres_server.create_database(), fresh_redis_url)
    try:
        yield three
    finally:
        for host in three.hosts:
            stop_process(host.proc)


def model_version(http: httpx.Client) -> str:
    return http.get("/recommendations/1", params={"limit": 1}).headers.get("X-Model-Version", "")


def run_the_demo_flow(api: httpx.Client, other: httpx.Client, user: int, hosts: ThreeHosts) -> None:
    """Rate and rebuild through `api`, poll through `other`; both then serve the new model."""
    # 2. record a rating through one API process ...
    answer = api.post("/ratings", json={"movie_id": 5, "user_id": user, "score": 5})
    assert answer.status_code == 201, answer.text
    # 3. ... kick off a rebuild through it ...
    answer = api.post("/recommender/rebuild")
    assert answer.status_code == 202, answer.text
    task_id = answer.json()["task_id"]

    def complete() -> dict[str, Any] | None:
        status = dict(other.get(f"/recommender/rebuild/{task_id}").json())
        return status if status["status"] == "complete" else None

    # 4. ... poll it through the other one until complete ...
    done = eventually(complete, f"task {task_id} complete\n{hosts.logs()}", 30)
    # 5. ... and fetch recommendations from the model the worker built, through both
    version = str(done["model_version"])
    eventually(lambda: model_version(api) == version, "both serve the new model", 30)
    assert model_version(other) == version
    assert other.get("/recommender").json()["ratings_since_build"] == 0


def test_two_api_hosts_and_a_worker_sharing_only_urls_run_the_rebuild_flow(
    hosts: ThreeHosts,
) -> None:
    a, b = (httpx.Client(base_url=url, timeout=10) for url in hosts.urls)
    with a, b:
        # A found ratings and no model at start-up: the worker builds the first one
        eventually(lambda: model_version(b) == "1", f"the first model\n{hosts.logs()}", 30)
        for api, other, user in ((a, b, 7001), (b, a, 7002)):  # the seed's steps, each way
            run_the_demo_flow(api, other, user, hosts)
            for http in (a, b):  # both answer from the worker's model, which saw the rating
                top = http.get(f"/recommendations/{user}", params={"limit": 3}).json()
                assert top[0] == 5
    assert "rebuild" in hosts.hosts[2].output().lower(), hosts.logs()  # the worker built them
    for host in hosts.hosts:  # no file anywhere that the others would have had to see
        assert list(host.cwd.iterdir()) == [], (host.cwd, hosts.logs())
