"""Tests for labsupport.server: a real uvicorn server in a thread, on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from conftest import free_port
from fastapi import FastAPI

from labsupport.server import (
    ServerHandle,
    ServerStartError,
    running_servers,
    serve_in_thread,
    stop_all,
)

HOST = "127.0.0.1"


def make_app(events: list[str] | None = None, release: threading.Event | None = None) -> FastAPI:
    """Build a tiny app whose lifespan appends "startup" and "shutdown" to ``events``."""
    recorded = [] if events is None else events
    gate = threading.Event() if release is None else release

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        recorded.append("startup")
        yield
        recorded.append("shutdown")

    app = FastAPI(lifespan=lifespan)

    @app.get("/health")
    async def health() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/slow")
    def slow() -> dict[str, bool]:
        # A blocking 30 s sleep in the threadpool, which asyncio cannot interrupt;
        # the test sets ``release`` at the end so the worker thread does not linger.
        gate.wait(30)
        return {"ok": True}

    return app


def server_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("labsupport-server-")]


def get_health(url: str) -> Any:
    response = httpx.get(f"{url}/health", timeout=5)
    response.raise_for_status()
    return response.json()


def assert_port_free(port: int) -> None:
    """Nobody listens on ``port`` and we can listen on it ourselves."""
    with pytest.raises(ConnectionRefusedError), socket.create_connection((HOST, port), 1):
        pass
    with socket.socket() as sock:
        # SO_REUSEADDR ignores connections in TIME_WAIT but still fails on a live listener.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, port))
        sock.listen()


@pytest.fixture(autouse=True)
def _no_leftover_servers() -> Iterator[None]:
    yield
    stop_all(timeout=5)
    assert running_servers() == []
    assert server_threads() == []


def test_server_answers_on_its_url() -> None:
    srv = serve_in_thread(make_app())
    try:
        assert srv.url == f"http://{HOST}:{srv.port}"
        assert srv.host == HOST
        assert srv.is_running
        assert srv.thread.daemon
        assert get_health(srv.url) == {"ok": True}
        assert running_servers() == [srv]
        assert repr(srv) == f"<ServerHandle {srv.url} running>"
    finally:
        srv.stop()
    assert repr(srv) == f"<ServerHandle {srv.url} stopped>"


def test_port_none_gives_distinct_free_ports() -> None:
    app = make_app()
    with serve_in_thread(app) as first, serve_in_thread(app) as second:
        assert first.port != second.port
        assert get_health(first.url) == get_health(second.url) == {"ok": True}
        assert {h.port for h in running_servers()} == {first.port, second.port}


def test_context_manager_stops_and_frees_the_port() -> None:
    with serve_in_thread(make_app()) as srv:
        assert get_health(srv.url) == {"ok": True}
    assert not srv.is_running
    assert not srv.thread.is_alive()
    assert running_servers() == []
    assert_port_free(srv.port)


def test_lifespan_runs_on_start_and_on_stop() -> None:
    events: list[str] = []
    srv = serve_in_thread(make_app(events))
    assert events == ["startup"]
    srv.stop()
    assert events == ["startup", "shutdown"]


def test_stop_is_idempotent() -> None:
    events: list[str] = []
    srv = serve_in_thread(make_app(events))
    srv.stop()
    srv.stop()
    srv.stop(timeout=0)
    assert events == ["startup", "shutdown"]
    assert not srv.is_running


def test_starting_again_on_the_same_port_replaces_the_old_server() -> None:
    events: list[str] = []
    app = make_app(events)
    old = serve_in_thread(app)
    new = serve_in_thread(app, port=old.port)
    assert not old.is_running
    assert not old.thread.is_alive()
    assert new.is_running
    assert new.port == old.port
    assert get_health(new.url) == {"ok": True}
    assert running_servers() == [new]
    assert events == ["startup", "shutdown", "startup"]
    new.stop()
    assert server_threads() == []
    assert_port_free(new.port)


@pytest.mark.slow
def test_twenty_restarts_leave_one_server_and_no_leaked_threads() -> None:
    app = make_app()
    port = free_port()
    handles = [serve_in_thread(app, port=port) for _ in range(20)]
    assert running_servers() == [handles[-1]]
    assert [h.is_running for h in handles] == [False] * 19 + [True]
    assert server_threads() == [handles[-1].thread]
    assert get_health(handles[-1].url) == {"ok": True}
    stop_all()
    assert server_threads() == []
    assert_port_free(port)


def test_port_held_by_a_plain_socket_is_reported() -> None:
    with socket.socket() as holder:
        holder.bind((HOST, 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(ServerStartError, match=rf"Port {port} .*port=None"):
            serve_in_thread(make_app(), port=port)
    assert running_servers() == []


def test_same_port_under_another_host_name_is_reported_as_ours() -> None:
    with serve_in_thread(make_app()) as srv:
        with pytest.raises(ServerStartError, match=rf"already served by this process at {srv.url}"):
            serve_in_thread(make_app(), host="localhost", port=srv.port)
        assert running_servers() == [srv]
        assert get_health(srv.url) == {"ok": True}


def test_servers_still_running_at_exit_are_stopped() -> None:
    script = textwrap.dedent(
        """
        import contextlib
        from fastapi import FastAPI
        from labsupport.server import serve_in_thread

        @contextlib.asynccontextmanager
        async def lifespan(app):
            yield
            print("lifespan shutdown ran", flush=True)

        serve_in_thread(FastAPI(lifespan=lifespan))
        print("started", flush=True)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True
    )
    assert done.stdout.split("\n")[:2] == ["started", "lifespan shutdown ran"]


def test_port_held_by_another_process_is_reported() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", HOST, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection((HOST, port), 0.5).close()
                break
            except OSError:
                assert proc.poll() is None, "http.server exited early"
                assert time.monotonic() < deadline, "http.server did not start"
                time.sleep(0.05)
        with pytest.raises(ServerStartError) as info:
            serve_in_thread(make_app(), port=port)
        message = str(info.value)
        assert f"Port {port}" in message
        assert "port=None" in message
        assert "stop the other program" in message
    finally:
        proc.kill()
        proc.wait(5)
    assert running_servers() == []


def test_failing_lifespan_startup_raises_quickly() -> None:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        raise ValueError("the model file is missing")
        yield

    started = time.monotonic()
    with pytest.raises(ServerStartError, match="lifespan startup raised ValueError") as info:
        serve_in_thread(FastAPI(lifespan=lifespan), timeout=10)
    assert time.monotonic() - started < 2
    assert "the model file is missing" in str(info.value)
    assert isinstance(info.value.__cause__, ValueError)
    assert isinstance(info.value, RuntimeError)


def test_slow_lifespan_startup_hits_the_timeout() -> None:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.sleep(30)
        yield

    started = time.monotonic()
    with pytest.raises(ServerStartError, match=r"did not start within 0.3 s"):
        serve_in_thread(FastAPI(lifespan=lifespan), timeout=0.3)
    assert time.monotonic() - started < 2
    assert server_threads() == []


def test_hanging_lifespan_shutdown_does_not_hang_stop() -> None:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await asyncio.sleep(30)

    srv = serve_in_thread(FastAPI(lifespan=lifespan))
    started = time.monotonic()
    srv.stop(timeout=1)
    assert time.monotonic() - started < 3
    assert not srv.thread.is_alive()
    assert_port_free(srv.port)


def test_stop_during_a_slow_request_returns_within_the_timeout() -> None:
    release = threading.Event()
    srv = serve_in_thread(make_app(release=release))
    outcome: list[object] = []

    def call_slow() -> None:
        try:
            outcome.append(httpx.get(f"{srv.url}/slow", timeout=10).status_code)
        except httpx.HTTPError as exc:
            outcome.append(exc)

    caller = threading.Thread(target=call_slow, daemon=True)
    caller.start()
    time.sleep(0.3)  # let the request reach the endpoint
    try:
        started = time.monotonic()
        srv.stop(timeout=2)
        assert time.monotonic() - started < 4
        assert not srv.is_running
        assert_port_free(srv.port)
        caller.join(5)
        assert not caller.is_alive()
        assert len(outcome) == 1
    finally:
        release.set()


def test_works_inside_a_running_event_loop() -> None:
    async def main() -> Any:
        asyncio.get_running_loop()  # like a notebook cell in a Jupyter kernel
        with serve_in_thread(make_app()) as srv:
            return get_health(srv.url)

    assert asyncio.run(main()) == {"ok": True}


@pytest.mark.slow
def test_works_in_a_jupyter_kernel() -> None:
    from jupyter_client.manager import start_new_kernel

    code = textwrap.dedent(
        """
        import asyncio, json, threading, urllib.request
        from fastapi import FastAPI
        from labsupport.server import serve_in_thread

        asyncio.get_running_loop()  # the kernel's loop runs this cell
        app = FastAPI()

        @app.get("/health")
        async def health():
            return {"ok": True}

        with serve_in_thread(app) as srv:
            body = json.loads(urllib.request.urlopen(srv.url + "/health").read())
        leftover = [t for t in threading.enumerate() if t.name.startswith("labsupport-server")]
        print("result", body, srv.is_running, leftover)
        """
    )
    km, kc = start_new_kernel(kernel_name="python3")
    try:
        streams: list[str] = []

        def keep_output(msg: dict[str, Any]) -> None:
            if msg["msg_type"] == "stream":
                streams.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                streams.append("\n".join(msg["content"]["traceback"]))

        reply = kc.execute_interactive(code, timeout=30, output_hook=keep_output)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    assert reply["content"]["status"] == "ok", "".join(streams)
    assert "".join(streams).strip() == "result {'ok': True} False []"


def test_handle_type_is_exported() -> None:
    with serve_in_thread(make_app()) as srv:
        assert isinstance(srv, ServerHandle)


def test_listening_socket_is_tcp_so_accepted_sockets_get_nodelay() -> None:
    """asyncio only sets TCP_NODELAY on accepted sockets of an IPPROTO_TCP listener.

    Without it every keep-alive request waits for a delayed ACK (about 40 ms).
    """
    import socket as socket_module

    from fastapi import FastAPI

    with serve_in_thread(FastAPI()) as srv:
        assert srv._sock.proto == socket_module.IPPROTO_TCP
