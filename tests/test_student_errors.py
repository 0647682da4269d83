"""Errors a student can cause: each is a LabError with one sentence saying what to do.

(a) a server started twice on one port, (b) a port held by another program,
(c) a cell run before the cells it needs, (d) no Redis at the URL, (e) a wrong
MovieLens path; plus failed rebuild tasks and exercise checks. The last test
runs a real kernel to show IPython prints the sentence, not a traceback.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import free_port
from fastapi import FastAPI

from labsupport.classroom.checks import CheckFailed, require
from labsupport.classroom.need import NotDefinedYetError, need
from labsupport.data import MovieLensNotFoundError, load_movielens, load_movielens_fold
from labsupport.errors import LabError
from labsupport.retry import TaskFailedError, poll_task
from labsupport.scaleout.cache import MemoryCache, RedisCache, RedisUnavailableError, connect
from labsupport.server import ServerStartError, running_servers, serve_in_thread, stop_all

HOST = "127.0.0.1"


def one_sentence(message: str) -> bool:
    """No line break, and no full stop followed by a new sentence inside it."""
    return "\n" not in message and not re.search(r"[.!?] [A-Z]", message)


@pytest.fixture
def no_servers_left() -> Iterator[None]:
    yield
    stop_all()
    assert running_servers() == []


def health_app() -> FastAPI:
    app = FastAPI()

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


# --- (a) the same port twice in one kernel ------------------------------------------


def test_starting_twice_on_one_port_replaces_the_server_with_a_note(
    capsys: pytest.CaptureFixture[str], no_servers_left: None
) -> None:
    port = free_port()
    first = serve_in_thread(health_app(), port=port)
    assert capsys.readouterr().out == ""
    second = serve_in_thread(health_app(), port=port)
    note = capsys.readouterr().out.strip()
    assert note == (
        f"Note: a server started earlier in this process was serving {HOST}:{port}; "
        "it is stopped, and the new one takes its place."
    )
    assert not first.is_running and second.is_running
    assert running_servers() == [second]
    assert httpx.get(f"{second.url}/health").json() == {"status": "ok"}


def test_the_same_port_under_another_host_name_says_how_to_stop_it(
    no_servers_left: None,
) -> None:
    srv = serve_in_thread(health_app())
    with pytest.raises(ServerStartError) as info:
        serve_in_thread(health_app(), host="localhost", port=srv.port)
    message = str(info.value)
    assert isinstance(info.value, LabError) and isinstance(info.value, RuntimeError)
    assert f"Port {srv.port} is already served by this process at {srv.url}" in message
    assert "handle.stop()" in message and "labsupport.server.stop_all()" in message
    assert one_sentence(message)
    assert srv.is_running


# --- (b) a port another program holds -------------------------------------------------


def test_a_port_held_by_another_program_names_the_port_and_the_way_out(
    no_servers_left: None,
) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import socket, time; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen();"
            "print(s.getsockname()[1], flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        port = int(holder.stdout.readline())
        with pytest.raises(ServerStartError) as info:
            serve_in_thread(health_app(), port=port)
    finally:
        holder.kill()
        holder.wait(5)
        if holder.stdout is not None:
            holder.stdout.close()
    message = str(info.value)
    assert message == (
        f"Port {port} on {HOST} is already in use by another program; "
        "pass port=None to pick a free port, or stop the other program."
    )
    assert isinstance(info.value, LabError) and isinstance(info.value, RuntimeError)


# --- (c) a cell run before the cells it needs -------------------------------------------


def test_need_names_what_is_missing_and_where_to_start() -> None:
    with pytest.raises(NotDefinedYetError) as info:
        need("http", namespace={})
    assert str(info.value) == (
        "Run the cells above first (from 'Setup' down): `http` is not defined yet."
    )
    assert isinstance(info.value, NameError) and info.value.name == "http"

    with pytest.raises(NameError, match=r"`server` and `model` are not defined yet\.$"):
        need("http", "server", "model", namespace={"http": object()})


def test_need_looks_at_the_callers_variables() -> None:
    need("pytest", "need")  # both are globals of this module
    with pytest.raises(NotDefinedYetError, match="`no_such_client`"):
        need("no_such_client")


def test_the_notebooks_guard_the_cells_students_jump_to() -> None:
    import nbformat

    guarded = {}
    for path in sorted((Path(__file__).parents[1] / "notebooks").glob("0[3-6]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        guarded[path.stem] = sum(
            c.source.startswith("need(") for c in nb.cells if c.cell_type == "code"
        )
    assert all(count >= 1 for count in guarded.values()), guarded


# --- (d) no Redis at the URL -------------------------------------------------------------


def test_no_redis_falls_back_to_memory_and_says_how_to_start_one() -> None:
    pytest.importorskip("redis", reason="the redis package is not installed")
    port = free_port()
    cache = connect(f"redis://{HOST}:{port}/0")
    assert isinstance(cache, MemoryCache)
    assert cache.reason.startswith(f"no Redis answered at {HOST}:{port} db 0 (")
    assert "so the cache is in memory" in cache.reason
    assert f"redis-server --port {port}" in cache.reason
    assert one_sentence(cache.reason)


def test_a_required_redis_raises_one_sentence() -> None:
    pytest.importorskip("redis", reason="the redis package is not installed")
    port = free_port()
    with pytest.raises(RedisUnavailableError) as info:
        connect(f"redis://{HOST}:{port}/0", required=True)
    message = str(info.value)
    assert isinstance(info.value, LabError) and isinstance(info.value, ConnectionError)
    assert f"redis-server --port {port}" in message and "required=True" in message
    assert one_sentence(message)


def test_a_cache_whose_redis_is_gone_says_so() -> None:
    redis = pytest.importorskip("redis", reason="the redis package is not installed")
    port = free_port()
    client = redis.Redis(host=HOST, port=port, socket_connect_timeout=0.2, socket_timeout=0.2)
    cache = RedisCache(client)
    try:
        with pytest.raises(RedisUnavailableError) as info:
            cache.save_task({"task_id": "task-1", "status": "queued"})
    finally:
        cache.close()
    message = str(info.value)
    assert message.startswith(f"Redis at {HOST}:{port} db 0 does not answer (")
    assert "rediscache.connect()" in message and "in-memory" in message
    assert one_sentence(message)
    assert isinstance(info.value.__cause__, redis.ConnectionError)


# --- (e) a wrong MovieLens path -------------------------------------------------------------


def test_a_wrong_movielens_path_says_what_to_download(tmp_path: Path) -> None:
    with pytest.raises(MovieLensNotFoundError) as info:
        load_movielens(tmp_path / "ml-100k")
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, LabError)
    assert message.startswith(f"{tmp_path / 'ml-100k'} does not exist (")
    assert "u.data" in message and "grouplens.org" in message and "LABSUPPORT_MOVIELENS" in message
    assert one_sentence(message)


def test_a_missing_fold_says_which_files(tmp_path: Path) -> None:
    with pytest.raises(MovieLensNotFoundError, match=r"u3\.base and u3\.test") as info:
        load_movielens_fold(tmp_path, 3)
    assert one_sentence(str(info.value))


# --- rebuilds that end badly, and exercise checks -------------------------------------------


def ends_as(status: str, **extra: Any) -> TaskFailedError:
    answers = iter([httpx.Response(200, json={"task_id": "task-9", "status": status, **extra})])
    with pytest.raises(TaskFailedError) as info:
        poll_task(lambda: next(answers), interval=0.001)
    return info.value


@pytest.mark.parametrize(
    ("status", "extra", "start", "advice"),
    [
        ("failed", {"error": "ValueError: no ratings"}, "Task task-9 failed (ValueError", "fix"),
        ("interrupted", {"error": "shut down"}, "Task task-9 was interrupted", "Idempotency-Key"),
        ("unknown", {}, "The server does not know task task-9", "check the task id"),
    ],
)
def test_a_task_that_will_never_complete_says_what_to_do(
    status: str, extra: dict[str, Any], start: str, advice: str
) -> None:
    error = ends_as(status, **extra)
    message = str(error)
    assert isinstance(error, LabError) and isinstance(error, RuntimeError)
    assert error.status == status and error.task_id == "task-9"
    assert message.startswith(start) and advice in message
    assert "POST /recommender/rebuild again" in message
    assert one_sentence(message)


def test_a_failed_check_is_a_lab_error_and_still_an_assertion() -> None:
    with pytest.raises(CheckFailed) as info:
        require(False, "expected 3 polls, got 1: poll until the status is final")
    assert isinstance(info.value, LabError) and isinstance(info.value, AssertionError)


# --- what IPython shows --------------------------------------------------------------------

KERNEL_CELLS = {
    "NotDefinedYetError": "from labsupport.classroom import need\nneed('http')",
    "MovieLensNotFoundError": "from labsupport.data import load_movielens\n"
    "load_movielens('no-such-folder')",
    "CheckFailed": "from labsupport.classroom.checks import require\n"
    "require(False, 'look at the status')",
    "TaskFailedError": "import httpx\nfrom labsupport.retry import poll_task\n"
    "poll_task(lambda: httpx.Response(200, json={'task_id': 't', 'status': 'failed'}))",
    "ServerStartError": "import socket\nfrom fastapi import FastAPI\n"
    "from labsupport.server import serve_in_thread\n"
    "held = socket.socket(); held.bind(('127.0.0.1', 0)); held.listen()\n"
    "serve_in_thread(FastAPI(), port=held.getsockname()[1])",
}


@pytest.mark.slow
def test_ipython_shows_the_sentence_without_a_library_traceback() -> None:
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3", stderr=subprocess.DEVNULL)
    try:
        for name, code in KERNEL_CELLS.items():
            errors: list[dict[str, Any]] = []

            def keep(msg: dict[str, Any], into: list[dict[str, Any]] = errors) -> None:
                if msg["msg_type"] == "error":
                    into.append(msg["content"])

            reply = kc.execute_interactive(code, timeout=60, output_hook=keep)
            assert reply["content"]["status"] == "error", name
            (error,) = errors
            assert error["ename"] == name
            (line,) = error["traceback"]  # one line: no frames from uvicorn, numpy, httpx...
            assert line == f"\x1b[1;31m{name}\x1b[0m: {error['evalue']}"
            assert one_sentence(error["evalue"]), error["evalue"]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
