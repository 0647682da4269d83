"""Run an ASGI app (such as the course's FastAPI app) on a real port, in a thread.

The server follows httpx's test-server pattern: a `uvicorn.Server`
that installs no signal handlers runs in a daemon thread, the caller polls
until it accepts connections, and stopping sets its exit flag and joins the
thread.  A notebook cell can therefore start a server, call it with `httpx`
and stop it again, even though Jupyter's own asyncio loop is already running
in the main thread (uvicorn runs a separate loop in its thread, so no
`nest_asyncio` is needed).

All times are in seconds.

Exceptions:
    ServerStartError: the server could not start (port taken, lifespan
        startup failed, startup too slow); a
        `LabError`, so a notebook shows its one
        sentence instead of a traceback through uvicorn.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import errno
import socket
import sys
import threading
import time
from collections.abc import Generator
from types import TracebackType

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from labsupport.errors import LabError

__all__ = ["ServerHandle", "ServerStartError", "running_servers", "serve_in_thread", "stop_all"]

# How often the caller checks whether the server thread has started or ended.
_POLL_INTERVAL = 0.01
# Extra wait after setting `force_exit` when a graceful stop ran out of time.
_FORCE_EXIT_GRACE = 1.0

# Handles started by serve_in_thread and not stopped yet, keyed by (host, port).
_registry: dict[tuple[str, int], ServerHandle] = {}
_registry_lock = threading.Lock()
_atexit_registered = False


class ServerStartError(LabError, RuntimeError):
    """The embedded server could not start; the message says why and what to do."""


class _ThreadedServer(uvicorn.Server):
    """A uvicorn server that never touches signal handlers and can be cancelled.

    Signal handlers can only be installed from the main thread, and the main
    thread belongs to the notebook (or to pytest), so Ctrl+C must keep meaning
    "interrupt the kernel", not "stop this server".
    """

    _loop: asyncio.AbstractEventLoop | None = None
    _task: asyncio.Task[object] | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        """Serve like uvicorn does, remembering the loop and task for `cancel`."""
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        await super().serve(sockets=sockets)

    def cancel(self) -> None:
        """Cancel `serve` from another thread (for a startup or shutdown that hangs)."""
        loop, task = self._loop, self._task
        if loop is None or task is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop has already closed
            loop.call_soon_threadsafe(task.cancel)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """Install nothing (uvicorn >= 0.29 calls this around `serve`)."""
        yield

    def install_signal_handlers(self) -> None:
        """Install nothing (the hook older uvicorn versions call instead)."""


class ServerHandle:
    """A running embedded server: where it listens and how to stop it.

    Use it as a context manager to stop the server when the block ends:

        with serve_in_thread(app) as srv:
            httpx.get(f"{srv.url}/health")

    Attributes:
        app: The ASGI application being served.
        host: The address the server listens on.
        port: The port the server listens on.
        url: The base URL, for example `"http://127.0.0.1:8123"`.
        thread: The daemon thread running uvicorn.
    """

    def __init__(
        self,
        *,
        app: ASGIApp,
        host: str,
        port: int,
        server: _ThreadedServer,
        thread: threading.Thread,
        sock: socket.socket,
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.thread = thread
        self._server = server
        self._sock = sock
        self._stop_lock = threading.Lock()
        self._stopped = False

    @property
    def url(self) -> str:
        """The base URL of the server, without a trailing slash."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def is_running(self) -> bool:
        """Whether the server is up and has not been asked to stop."""
        return not self._stopped and self._server.started and self.thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server gracefully and free its port.

        The server stops accepting connections at once.  Open requests get
        about half of `timeout` to finish; then uvicorn cancels them and runs
        the app's lifespan shutdown.  If the thread has not ended after
        `timeout` (say the lifespan shutdown hangs), the server is cancelled
        and gets one more second at most; after that `stop` returns anyway,
        leaving the daemon thread to end on its own (blocking code in a
        request cannot be interrupted).  The listening socket is closed in
        every case, so the port is free afterwards.  Calling `stop` again
        does nothing.

        Args:
            timeout: How long to wait for a graceful stop.
        """
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        with _registry_lock:
            if _registry.get((self.host, self.port)) is self:
                del _registry[(self.host, self.port)]

        deadline = time.monotonic() + timeout
        # uvicorn annotates this as int, but only passes it to asyncio.wait_for,
        # which takes any float.
        self._server.config.timeout_graceful_shutdown = max(timeout / 2, 0.1)  # type: ignore[assignment]
        self._server.should_exit = True
        self.thread.join(max(deadline - time.monotonic(), 0.0))
        if self.thread.is_alive():
            self._server.force_exit = True
            self._server.cancel()
            self.thread.join(min(_FORCE_EXIT_GRACE, timeout))
        self._sock.close()

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"<ServerHandle {self.url} {state}>"


def serve_in_thread(
    app: ASGIApp,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    timeout: float = 10.0,
    log_level: str = "warning",
) -> ServerHandle:
    """Serve `app` with uvicorn in a daemon thread and return once it accepts connections.

    The listening socket is bound here, before the thread starts, so
    `port=None` picks a free port without a race and a port taken by another
    program fails at once.  The app's lifespan startup runs before this
    function returns and its shutdown runs on `ServerHandle.stop`.

    Starting again on a `(host, port)` this process already serves through
    `serve_in_thread` stops the old server first and prints a one-line
    note saying so, so re-running a notebook cell is harmless.  Servers
    still running when Python exits are stopped.

    Args:
        app: The ASGI application, for example a FastAPI instance.
        host: The address to listen on; keep `127.0.0.1` unless you want
            other machines to reach the server.
        port: The port to listen on, or `None` for any free port.
        timeout: How long to wait for the server to start.
        log_level: uvicorn's log level; `"warning"` keeps request logs out
            of notebook cells (access logs are always off).

    Returns:
        A handle with the server's `url` and a `stop()` method; it is also
        a context manager.

    Raises:
        ServerStartError: if the port is taken by another program, the app's
            lifespan startup fails, or the server does not start within
            `timeout`.
    """
    _register_atexit()
    if port is not None:
        _stop_previous(host, port, timeout)
    sock = _listen(host, port)
    handle = _start(app, host, sock, timeout=timeout, log_level=log_level)
    with _registry_lock:
        _registry[(host, handle.port)] = handle
    return handle


def _stop_previous(host: str, port: int, timeout: float) -> None:
    """Stop the server `serve_in_thread` started on `(host, port)`, if any, and say so."""
    with _registry_lock:
        previous = _registry.pop((host, port), None)
    if previous is not None:
        previous.stop(timeout=timeout)
        print(
            f"Note: a server started earlier in this process was serving {host}:{port}; "
            "it is stopped, and the new one takes its place."
        )


def _start(
    app: ASGIApp, host: str, sock: socket.socket, *, timeout: float, log_level: str
) -> ServerHandle:
    """Run uvicorn on the listening `sock` in a daemon thread; return once it accepts.

    On any failure the thread is stopped and `sock` closed before the error propagates.
    """
    actual_port: int = sock.getsockname()[1]
    lifespan_errors: list[BaseException] = []
    config = uvicorn.Config(
        _record_lifespan_errors(app, lifespan_errors),
        host=host,
        port=actual_port,
        log_level=log_level,
        access_log=False,
        lifespan="on",
        interface="asgi3",
    )
    server = _ThreadedServer(config)
    thread_errors: list[BaseException] = []

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # uvicorn reports startup failure with sys.exit
            thread_errors.append(exc)

    thread = threading.Thread(
        target=run, name=f"labsupport-server-{host}:{actual_port}", daemon=True
    )
    handle = ServerHandle(
        app=app, host=host, port=actual_port, server=server, thread=thread, sock=sock
    )
    try:
        config.load()  # import problems surface here, in the caller's cell
        thread.start()
        _wait_until_started(handle, server, timeout, lifespan_errors, thread_errors)
    except BaseException:
        server.should_exit = True
        server.cancel()
        if thread.ident is not None:
            thread.join(_FORCE_EXIT_GRACE)
        sock.close()
        raise
    return handle


def running_servers() -> list[ServerHandle]:
    """Return the servers started by `serve_in_thread` and not stopped yet.

    Returns:
        The handles, oldest first.
    """
    with _registry_lock:
        return list(_registry.values())


def stop_all(*, timeout: float = 10.0) -> None:
    """Stop every server started by `serve_in_thread`.

    Args:
        timeout: How long to wait for each server to stop gracefully.
    """
    for handle in running_servers():
        handle.stop(timeout=timeout)


def _register_atexit() -> None:
    global _atexit_registered
    with _registry_lock:
        if not _atexit_registered:
            atexit.register(stop_all)
            _atexit_registered = True


def _listen(host: str, port: int | None) -> socket.socket:
    """Bind and listen on `(host, port)`, turning failures into ServerStartError."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted sockets only when the
    # listener says TCP, and without it each keep-alive request waits ~40 ms (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        if sys.platform == "win32":
            # On Windows SO_REUSEADDR would let us steal a port another program uses.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)
        else:
            # Lets a restarted server reuse a port whose old connections are in TIME_WAIT.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port or 0))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        ours = [h for h in running_servers() if h.port == port]
        if ours:
            msg = (
                f"Port {port} is already served by this process at {ours[0].url}; stop that "
                "server first (handle.stop() on the handle serve_in_thread returned, or "
                f"labsupport.server.stop_all()), or start on host={ours[0].host!r} to replace it."
            )
        elif exc.errno in (errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", errno.EADDRINUSE)):
            msg = (
                f"Port {port} on {host} is already in use by another program; "
                "pass port=None to pick a free port, or stop the other program."
            )
        else:
            msg = (
                f"Cannot listen on {host}:{port} ({exc.strerror}); "
                'use host="127.0.0.1" and port=None unless you need something else.'
            )
        raise ServerStartError(msg) from exc
    return sock


def _record_lifespan_errors(app: ASGIApp, errors: list[BaseException]) -> ASGIApp:
    """Wrap `app` so an exception in its lifespan is kept for the error message."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await app(scope, receive, send)
        except Exception as exc:
            if scope["type"] == "lifespan":
                errors.append(exc)
            raise

    return wrapped


def _wait_until_started(
    handle: ServerHandle,
    server: _ThreadedServer,
    timeout: float,
    lifespan_errors: list[BaseException],
    thread_errors: list[BaseException],
) -> None:
    """Poll until `server` accepts connections; raise ServerStartError if it cannot."""
    deadline = time.monotonic() + timeout
    while not server.started:
        if not handle.thread.is_alive():
            if lifespan_errors:
                cause = lifespan_errors[0]
                msg = (
                    f"The app's lifespan startup raised {type(cause).__name__}: {cause}; "
                    "fix the startup code of the app (the traceback is above) and start again."
                )
                raise ServerStartError(msg) from cause
            error = thread_errors[0] if thread_errors else None
            detail = "" if error is None else f" ({type(error).__name__}: {error})"
            msg = (
                f"The server for {handle.url} stopped during startup{detail}; "
                "check the log lines above, fix the app and start again."
            )
            raise ServerStartError(msg) from error
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            msg = (
                f"The server for {handle.url} did not start within {timeout} s; "
                "check that the app's lifespan startup finishes, or pass a larger timeout."
            )
            raise ServerStartError(msg)
        handle.thread.join(min(_POLL_INTERVAL, remaining))
