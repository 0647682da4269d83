"""Shared fixtures: small stores and apps, a throwaway Redis and PostgreSQL, and MovieLens.

Also plain helpers for tests that run ``python -m labsupport`` as a real process
(``from conftest import free_port, serve_command, wait_healthy, stop_process``).
"""

from __future__ import annotations

import contextlib
import itertools
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from labsupport.api import create_app
from labsupport.store import MemoryStore
from labsupport.tasks import counter_ids

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # benchmarks/ sits next to the package but is not installed
    sys.path.insert(0, str(ROOT))

from benchmarks._postgres import ThrowawayPostgres, why_unavailable  # noqa: E402

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


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_command(port: int, db: Path | str, *extra: str) -> list[str]:
    """The command line of ``python -m labsupport serve`` on 127.0.0.1:``port``, quiet logs."""
    return [
        sys.executable,
        "-m",
        "labsupport",
        "serve",
        "--port",
        str(port),
        "--db",
        str(db),
        "--log-level",
        "warning",
        *extra,
    ]


def wait_healthy(
    url: str,
    proc: subprocess.Popen[Any],
    output: Callable[[], str],
    timeout: float = 30.0,
) -> None:
    """Poll ``url/health`` until it answers 200; fail with ``output()`` if ``proc`` ends first.

    When ``timeout`` seconds pass first, ``proc`` is killed before ``output()``
    is read, so ``output`` may read a pipe to its end.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited early with {proc.returncode}:\n{output()}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    proc.wait(5)
    pytest.fail(f"server did not answer /health within {timeout:g} s:\n{output()}")


def eventually(check: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """Return the first truthy ``check()``, polling; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.1)
    pytest.fail(f"not within {timeout:g} s: {what}")


def stop_process(proc: subprocess.Popen[Any], timeout: float = 15.0) -> int:
    """SIGTERM ``proc``, SIGKILL it after ``timeout`` seconds; return its exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """Start one throwaway redis-server on a free loopback port for the run, or skip.

    Yields ``redis://127.0.0.1:PORT`` (add ``/N`` for database N). Nothing is
    saved to disk. ``.ci/run`` installs Debian's redis-server when it is missing.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("no redis-server on PATH (apt-get install redis-server); Redis tests need one")
    redis = pytest.importorskip("redis", reason="the redis package is not installed")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with redis.Redis.from_url(url, socket_connect_timeout=0.5) as probe:
                    probe.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.skip(f"redis-server did not start on port {port}")
                time.sleep(0.05)
        yield url
    finally:
        stop_process(proc, timeout=5)


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """Database 0 of the throwaway Redis, shared: use a unique key prefix in it."""
    return f"{redis_server}/0"


_databases = itertools.cycle(range(1, 16))


def _emptied_database(redis_server: str) -> str:
    import redis

    url = f"{redis_server}/{next(_databases)}"
    with redis.Redis.from_url(url) as client:
        client.flushdb()
    return url


@pytest.fixture
def fresh_redis_url(redis_server: str) -> str:
    """An emptied database (1 to 15, in turn) of the throwaway Redis, for one test."""
    return _emptied_database(redis_server)


@pytest.fixture(scope="module")
def module_redis_url(redis_server: str) -> str:
    """An emptied database of the throwaway Redis, for the tests of one module."""
    return _emptied_database(redis_server)


@contextlib.contextmanager
def uvicorn_in(folder: Path, target: str = "app.main:app") -> Iterator[str]:
    """Run `uvicorn TARGET` from `folder` on a free 127.0.0.1 port, as a student would.

    Yields the server's URL once `/health` answers; stops the process after.
    """
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", target, "--host", "127.0.0.1", "--port", str(port)],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, lambda: proc.stdout.read() if proc.stdout else "")
        yield url
    finally:
        stop_process(proc)
        if proc.stdout:
            proc.stdout.close()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[ThrowawayPostgres]:
    """Start one throwaway PostgreSQL cluster on a free loopback port for the run, or skip.

    Debian's ``postgresql`` package provides the binaries (``.ci/run`` installs
    it when missing); as root the server runs as the ``postgres`` user.
    """
    reason = why_unavailable()
    if reason is not None:
        pytest.skip(f"no throwaway PostgreSQL: {reason}")
    with ThrowawayPostgres() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: ThrowawayPostgres) -> str:
    """The URL of a new, empty database in the throwaway cluster, for one test."""
    return postgres_server.create_database()
