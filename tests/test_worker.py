"""Beyond one process: real API servers and RQ workers on one Redis and one SQLite file.

Server A builds fast; server B adds a 6 s build delay to the rebuilds queued
through it (a job carries the settings of the server that created its task),
so the worker is surely mid-build when the test kills it.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import eventually, free_port, serve_command, stop_process, wait_healthy

from labsupport.scaleout.registry import connect_redis

LEASE_TTL = 2.0  # seconds: how long a dead worker's task may still read "running"
B_BUILD_DELAY = 6.0  # seconds added to each build queued through server B


class Process:
    """A subprocess running `command`, its output in a file."""

    def __init__(self, log: Path, command: list[str]) -> None:
        self.log = log
        self.out = log.open("w")
        self.proc = subprocess.Popen(command, stdout=self.out, stderr=subprocess.STDOUT)

    def output(self) -> str:
        self.out.flush()
        return self.log.read_text()

    def stop(self) -> None:
        stop_process(self.proc)
        self.out.close()


class Server(Process):
    def __init__(self, log: Path, db: Path, redis_url: str, *extra: str, queue: str = "rq") -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        options = ("--redis", redis_url, "--queue", queue, "--lease-ttl", str(LEASE_TTL))
        super().__init__(log, serve_command(port, db, *options, *extra))

    def wait_healthy(self) -> None:
        wait_healthy(self.url, self.proc, self.output)


def start_worker(log: Path, db: Path, redis_url: str) -> Process:
    command = ["worker", "--redis", redis_url, "--db", str(db), "--log-level", "info"]
    return Process(log, [sys.executable, "-m", "labsupport", *command])


def version(server: Server) -> str:
    """The model version `server` answers recommendations with."""
    return httpx.get(f"{server.url}/recommendations/1", timeout=5).headers["X-Model-Version"]


def status(server: Server, task_id: str) -> dict[str, Any]:
    """A task as `server` reports it."""
    answer = httpx.get(f"{server.url}/recommender/rebuild/{task_id}", timeout=5)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def current_version(cluster: Cluster) -> str:
    """The model version Redis names current (what every server serves once it has polled)."""
    return str(int(cluster.redis.get("labsupport:model:current")))


def post_rebuild(server: Server) -> str:
    answer = httpx.post(f"{server.url}/recommender/rebuild", timeout=5)
    assert answer.status_code == 202, answer.text
    return str(answer.json()["task_id"])


class Cluster:
    def __init__(self, tmp: Path, redis_url: str) -> None:
        self.tmp, self.db, self.redis_url = tmp, tmp / "shared.db", redis_url
        self.redis = connect_redis(redis_url)
        self.processes: list[Process] = []
        self.a = self.add(Server(tmp / "a.log", self.db, redis_url, "--demo"))
        self.a.wait_healthy()  # A creates the database; B and the worker then open it
        self.b = self.add(
            Server(tmp / "b.log", self.db, redis_url, "--build-delay", str(B_BUILD_DELAY))
        )
        self.worker = self.add(start_worker(tmp / "worker-1.log", self.db, redis_url))
        self.b.wait_healthy()

    def add(self, process: Any) -> Any:
        self.processes.append(process)
        return process

    def rq_jobs(self) -> set[bytes]:
        return {key for key in self.redis.keys("rq:job:*") if key.count(b":") == 2}

    def logs(self) -> str:
        return "\n".join(f"--- {p.log.name}\n{p.output()}" for p in self.processes)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, module_redis_url: str) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("cluster"), module_redis_url)
    try:
        # A found ratings and no model at start-up: it queued a build for the worker
        eventually(lambda: version(cluster.a) == "1", "the first model, built by the worker")
        yield cluster
    finally:
        for process in cluster.processes:
            process.stop()
        cluster.redis.close()


def test_a_task_made_through_one_server_is_seen_through_the_other_and_one_build_serves_both(
    cluster: Cluster,
) -> None:
    before = int(version(cluster.a))
    task_id = post_rebuild(cluster.a)
    assert status(cluster.b, task_id)["task_id"] == task_id  # visible through B at once
    done = eventually(
        lambda: (s := status(cluster.b, task_id))["status"] == "complete" and s,
        f"task {task_id} complete\n{cluster.logs()}",
    )
    assert done["model_version"] == before + 1
    # reading "complete" through B means B serves that model; A picks it up by itself
    assert version(cluster.b) == str(before + 1)
    eventually(lambda: version(cluster.a) == str(before + 1), "A serves the new model")


def test_fifty_posts_with_one_key_across_both_servers_make_one_task_one_job_one_build(
    cluster: Cluster,
) -> None:
    before, jobs_before = int(version(cluster.a)), cluster.rq_jobs()
    servers = [cluster.a.url, cluster.b.url]
    barrier = threading.Barrier(50, timeout=10)

    def post(i: int) -> httpx.Response:
        with httpx.Client(base_url=servers[i % 2], timeout=10) as http:
            barrier.wait()
            return http.post("/recommender/rebuild", headers={"Idempotency-Key": "fifty"})

    with ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(post, range(50)))
    assert {a.status_code for a in answers} == {202}, {a.text for a in answers}
    task_ids = {a.json()["task_id"] for a in answers}
    assert len(task_ids) == 1
    (task_id,) = task_ids
    assert cluster.rq_jobs() - jobs_before == {f"rq:job:{task_id}".encode()}
    eventually(  # B may have created it: then it carries B's delay
        lambda: status(cluster.a, task_id)["status"] == "complete",
        f"task {task_id} complete\n{cluster.logs()}",
        timeout=B_BUILD_DELAY + 20,
    )
    assert status(cluster.a, task_id)["model_version"] == before + 1  # one build


def test_killing_the_worker_mid_build_fails_the_task_and_a_new_worker_carries_on(
    cluster: Cluster, tmp_path: Path
) -> None:
    before = version(cluster.a)
    task_id = post_rebuild(cluster.b)
    eventually(lambda: status(cluster.a, task_id)["status"] == "running", "running")
    cluster.worker.proc.kill()  # SIGKILL: no shutdown code runs in the worker
    cluster.worker.proc.wait(5)
    killed_at = time.monotonic()
    seen = []

    def failed() -> bool:
        seen.append(status(cluster.a, task_id)["status"])
        return seen[-1] != "running"

    eventually(failed, "the killed worker's task leaves 'running'", timeout=LEASE_TTL + 10)
    assert time.monotonic() - killed_at < LEASE_TTL + 10
    assert set(seen) <= {"running", "failed"} and seen[-1] == "failed"
    for server in (cluster.a, cluster.b):
        answer = status(server, task_id)
        assert answer["status"] == "failed"
        assert "the worker building this rebuild stopped" in answer["error"]
        assert version(server) == before  # the previous model keeps serving
    # the work horse (the forked build) did not carry on as an orphan
    eventually(lambda: not _processes_using(cluster.db, "worker"), "the orphaned build stops")

    cluster.worker = cluster.add(
        start_worker(tmp_path / "worker-2.log", cluster.db, cluster.redis_url)
    )
    new_id = post_rebuild(cluster.a)
    assert new_id != task_id
    done = eventually(
        lambda: (s := status(cluster.b, new_id))["status"] == "complete" and s,
        f"a new worker completes a new rebuild\n{cluster.logs()}",
    )
    assert done["model_version"] == int(before) + 1
    assert status(cluster.a, task_id)["status"] == "failed"  # and it stays failed


def test_delete_through_one_server_stops_the_workers_build_and_keeps_the_model(
    cluster: Cluster,
) -> None:
    task_id = post_rebuild(cluster.b)  # B_BUILD_DELAY seconds of work on the worker
    eventually(lambda: status(cluster.a, task_id)["status"] == "running", "running")
    # One build runs at a time: any build an earlier test left has published by now.
    before = current_version(cluster)
    horses = set(_processes_using(cluster.db, "worker")) - {cluster.worker.proc.pid}
    assert horses, "a running RQ job runs in a work horse forked from the worker"
    answer = httpx.delete(f"{cluster.a.url}/recommender/rebuild/{task_id}", timeout=5)
    assert answer.status_code == 200 and answer.json()["status"] == "canceled"
    assert status(cluster.b, task_id)["status"] == "canceled"
    eventually(
        lambda: not (set(_processes_using(cluster.db, "worker")) & horses),
        "the work horse of the canceled job ends",
        timeout=5,
    )
    assert status(cluster.a, task_id)["status"] == "canceled"
    assert current_version(cluster) == before  # nothing was published
    eventually(lambda: version(cluster.a) == before == version(cluster.b), "both serve it")
    again = httpx.delete(f"{cluster.b.url}/recommender/rebuild/{task_id}", timeout=5)
    assert again.status_code == 409
    # the worker carries on with the next rebuild
    new_id = post_rebuild(cluster.a)
    eventually(
        lambda: status(cluster.a, new_id)["status"] == "complete",
        f"the next rebuild completes\n{cluster.logs()}",
    )


def test_delete_of_a_job_waiting_in_the_queue_takes_it_out(cluster: Cluster) -> None:
    running = post_rebuild(cluster.b)
    eventually(lambda: status(cluster.a, running)["status"] == "running", "running")
    queued = post_rebuild(cluster.a)
    assert status(cluster.a, queued)["status"] == "queued"
    answer = httpx.delete(f"{cluster.b.url}/recommender/rebuild/{queued}", timeout=5)
    assert answer.status_code == 200 and answer.json()["status"] == "canceled"
    httpx.delete(f"{cluster.a.url}/recommender/rebuild/{running}", timeout=5)
    job = cluster.redis.hget(f"rq:job:{queued}", "status")
    assert job in (b"canceled", None)
    assert status(cluster.a, queued)["status"] == "canceled"


def test_without_a_queue_servers_share_state_and_a_killed_builder_reads_interrupted(
    tmp_path: Path, fresh_redis_url: str
) -> None:
    db = tmp_path / "api.db"
    a = Server(tmp_path / "a.log", db, fresh_redis_url, "--demo", queue="none")
    servers = [a]
    try:
        a.wait_healthy()  # A found no model: it built one in its own thread at start-up
        b = Server(
            tmp_path / "b.log",
            db,
            fresh_redis_url,
            "--build-delay",
            str(B_BUILD_DELAY),
            queue="none",
        )
        servers.append(b)
        b.wait_healthy()
        assert version(a) == version(b) == "1"  # B loaded A's model: no build of its own

        task_id = post_rebuild(a)
        assert status(b, task_id)["task_id"] == task_id
        eventually(lambda: status(b, task_id)["status"] == "complete", "A's rebuild completes")
        assert version(b) == "2"
        eventually(lambda: version(a) == "2", "A serves its new model")

        task_id = post_rebuild(b)  # built by B, slowly
        eventually(lambda: status(a, task_id)["status"] == "running", "B's build runs")
        b.proc.kill()  # SIGKILL: B's build dies with it
        b.proc.wait(5)
        answer = eventually(
            lambda: (s := status(a, task_id))["status"] != "running" and s,
            "the dead server's task leaves 'running'",
            timeout=LEASE_TTL + 10,
        )
        assert answer["status"] == "interrupted", answer
        assert "stopped before it finished" in answer["error"]
        assert version(a) == "2"  # nothing half-built was published

        new_id = post_rebuild(a)
        eventually(lambda: status(a, new_id)["status"] == "complete", "a new rebuild completes")
        assert version(a) == "3"
    finally:
        for server in servers:
            server.stop()


def _processes_using(db: Path, command: str) -> list[int]:
    """Return the pids of live `python -m labsupport <command>` processes on `db` (Linux)."""
    proc = Path("/proc")
    if not proc.is_dir():
        pytest.skip("needs /proc to look for orphaned processes")
    found = []
    for entry in proc.iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # not a process, or it ended meanwhile
            continue
        if b"labsupport" in argv and command.encode() in argv and str(db).encode() in argv:
            found.append(int(entry.name))
    return found


# ---------------------------------------------------------------- the queue, in process


def test_rq_job_states_tell_whether_a_queued_task_can_still_run(fresh_redis_url: str) -> None:
    from rq.job import JobStatus

    from labsupport.scaleout.rq import RQJobQueue, run_rebuild

    client = connect_redis(fresh_redis_url)
    try:
        queue = RQJobQueue(client)
        assert queue.job_state("never-queued", 2.0) == "its job is not in the queue"
        queue.enqueue("t-1", {"prefix": "p"})
        assert queue.job_state("t-1", 2.0) is None  # waiting in the queue
        job = queue.queue.fetch_job("t-1")
        assert job is not None and job.kwargs["task_id"] == "t-1"
        # the worker imports the job's function by this path: it must be the real one
        assert job.func_name == "labsupport.scaleout.rq.run_rebuild"
        assert job.func is run_rebuild
        job.set_status(JobStatus.STARTED)
        client.hset(job.key, "started_at", _rq_time(datetime.now(timezone.utc)))
        assert queue.job_state("t-1", 2.0) is None  # just started: its lease is coming
        client.hset(
            job.key, "started_at", _rq_time(datetime.now(timezone.utc) - timedelta(seconds=10))
        )
        assert queue.job_state("t-1", 2.0) == "its worker stopped before the build began"
        job.set_status(JobStatus.FAILED)
        assert queue.job_state("t-1", 2.0) == "its job is failed"
    finally:
        client.close()


def _rq_time(moment: datetime) -> str:
    from rq.utils import utcformat

    return utcformat(moment)


# ---------------------------------------------------------------- the command line


def test_worker_refuses_a_missing_database(tmp_path: Path, fresh_redis_url: str) -> None:
    missing = tmp_path / "nope.db"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "labsupport",
            "worker",
            "--redis",
            fresh_redis_url,
            "--db",
            str(missing),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert f"error: no database at {missing}; pass the --db file" in done.stderr
    assert not missing.exists()


def test_serve_queue_rq_needs_redis() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "labsupport", "serve", "--queue", "rq"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--queue rq needs --redis URL" in done.stderr
