r"""Command line: `python -m labsupport serve` runs the movie API on its own.

Examples:

    python -m labsupport serve                      # empty SQLite store in ./labsupport.db
    python -m labsupport serve --demo --port 8000   # built-in catalogue and ratings
    python -m labsupport lab-app my-app             # the lab's starter app, to build on
    python -m labsupport lab-app --solution done    # the same app at the end of the session

    # two API processes sharing state in Redis, rebuilds on an RQ worker
    python -m labsupport serve --redis redis://127.0.0.1:6379/0 --queue rq --port 8001
    python -m labsupport serve --redis redis://127.0.0.1:6379/0 --queue rq --port 8002
    python -m labsupport worker --redis redis://127.0.0.1:6379/0 --db labsupport.db

    # on several machines: movies and ratings in PostgreSQL, tasks and models in Redis
    python -m labsupport serve --db postgresql://movies@db-host:5432/movies \
        --redis redis://redis-host:6379/0 --queue rq --host 0.0.0.0
    python -m labsupport worker --db postgresql://movies@db-host:5432/movies \
        --redis redis://redis-host:6379/0

The Redis options and the `worker` command come from a plugin: every entry
point of the group `labsupport.cli` (this package's `pyproject.toml`
registers `labsupport.scaleout.cli:plugin`) may add options to `serve`, add
commands, and build the rebuild service that `serve` shares with other
processes. The service itself never imports the scale-out stack.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import ipaddress
import logging
import sys
import threading
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol

import uvicorn

from labsupport.ratelimit import REBUILD_RATE, RateLimiter
from labsupport.tasks import EXECUTORS, PROCESS_MIN_RATINGS, RebuildServiceProtocol

if TYPE_CHECKING:
    from labsupport.store import Store

__all__ = ["PLUGIN_GROUP", "main"]

PLUGIN_GROUP = "labsupport.cli"
"""The entry-point group whose plugins extend the command line."""


class _CliPlugin(Protocol):
    """What a `labsupport.cli` entry point loads to (see `labsupport.scaleout.cli`)."""

    def add_serve_options(self, serve: argparse.ArgumentParser) -> None:
        """Add options to `serve`."""

    def add_commands(self, commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
        """Add commands; each sets `func`, called with the parsed arguments."""

    def check_serve(self, parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
        """Call `parser.error` for `serve` options that do not go together."""

    def rebuild_service(
        self, args: argparse.Namespace, store: Store
    ) -> tuple[RebuildServiceProtocol, bool] | None:
        """The shared service `args` ask for and whether a worker builds; `None` if none."""


def _load_plugins() -> tuple[list[_CliPlugin], list[str]]:
    """Load the plugins; return them, and a description of each that failed to load."""
    plugins: list[_CliPlugin] = []
    broken: list[str] = []
    found = {(ep.name, ep.value): ep for ep in entry_points(group=PLUGIN_GROUP)}
    for _, ep in sorted(found.items()):
        try:
            plugins.append(ep.load())
        except Exception as exc:  # a broken install: said when `--redis` is used
            broken.append(f"{ep.name} = {ep.value} failed to load ({type(exc).__name__}: {exc})")
    return plugins, broken


def _serve(args: argparse.Namespace, *, plugins: Sequence[_CliPlugin]) -> int:
    from labsupport.api import create_app
    from labsupport.errors import LabError
    from labsupport.store import demo_store, is_database_url, open_store

    _warn_if_exposed(args.host)
    try:
        store = open_store(args.db)
    except LabError as exc:  # no server at the URL, or the postgres extra is missing
        raise SystemExit(f"error: {exc}") from None
    where = args.db
    if is_database_url(args.db):
        from labsupport.store.postgres import describe_url

        where = describe_url(args.db)  # never the password
    if args.demo and store.count_movies() == 0:
        demo_store(store, seed=args.seed)
    shared, queued = _shared_service(args, store, plugins)
    app = create_app(
        store,
        service=shared,
        shutdown_grace=args.grace,
        executor=args.executor,
        build_delay=args.build_delay,
        rebuild_rate=args.rebuild_rate,
        refresh_after=args.refresh_after,
        refresh_every=args.refresh_every,
        fold_in=args.fold_in,
    )
    service: RebuildServiceProtocol = app.state.service
    if store.count_ratings() and service.model is None:
        if queued:  # a worker builds it: never wait for one at start-up
            task, created = service.request()
            if created:
                service.start(task.task_id)
        else:
            service.rebuild_now()  # start serving with a model, built before the first request
    print(
        f"Movie API on http://{args.host}:{args.port}  (docs: /docs, store: {where}, "
        f"{store.count_movies()} movies, {store.count_ratings()} ratings)",
        flush=True,
    )
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        timeout_graceful_shutdown=max(1, int(args.grace)),
    )
    _DrainingServer(config, service=service, grace=args.grace).run()
    store.close()
    return 0


def _shared_service(
    args: argparse.Namespace, store: Store, plugins: Sequence[_CliPlugin]
) -> tuple[RebuildServiceProtocol | None, bool]:
    """The first service a plugin builds for `args`, and whether a worker builds its models."""
    for plugin in plugins:
        found = plugin.rebuild_service(args, store)
        if found is not None:
            return found
    return None, False  # the app makes its own RebuildService, for this process only


def _warn_if_exposed(host: str) -> None:
    """Log a warning (on stderr) when `host` lets other machines reach the API.

    A warning, not an error: binding elsewhere is allowed, just never by default.
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:  # a host name
        if host == "localhost":
            return
        where = f"{host} (a host name: whatever interfaces it resolves to)"
    else:
        if address.is_loopback:
            return
        where = f"{host} (all interfaces)" if address.is_unspecified else host
    logging.getLogger("labsupport").warning(
        "binding to %s: other machines on your network can reach this API, which has "
        "no login; use --host 127.0.0.1 unless you mean it",
        where,
    )


def _rebuild_rate(text: str) -> tuple[int, float] | None:
    """Parse `--rebuild-rate`: `BURST,PER_MINUTE` such as `10,30`, or `off`."""
    if text.strip().lower() == "off":
        return None
    burst, _, per_minute = text.partition(",")
    try:
        rate = (int(burst), float(per_minute))
        RateLimiter(*rate)  # the limiter's own checks: burst >= 1, a finite positive rate
    except ValueError:
        msg = f"expected BURST,PER_MINUTE such as 10,30 (or off), got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    return rate


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type: `kind(text)`, which must be above zero."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not value > 0:
            msg = f"expected a number above zero, got {text!r}"
            raise argparse.ArgumentTypeError(msg)
        return value

    return parse


class _DrainingServer(uvicorn.Server):
    """A uvicorn server that drains before it stops.

    On the first SIGTERM or Ctrl-C it keeps answering while the rebuild
    service refuses new rebuilds (503 with `Retry-After`) and a running
    build gets up to `grace` seconds; then it shuts down as usual. (Plain
    uvicorn closes its socket first, so clients would only see refused
    connections.) A second signal stops at once.
    """

    def __init__(
        self, config: uvicorn.Config, *, service: RebuildServiceProtocol, grace: float
    ) -> None:
        super().__init__(config)
        self.service = service
        self.grace = grace
        self.draining = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.draining:
            super().handle_exit(sig, frame)
            return
        self.draining = True
        self._captured_signals.append(sig)
        self.service.close()
        threading.Thread(target=self._drain, name="labsupport-drain", daemon=True).start()

    def _drain(self) -> None:
        self.service.wait_idle(self.grace)
        self.should_exit = True


def _add_serve(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    plugins: Sequence[_CliPlugin],
) -> None:
    """Add the `serve` command, with the options of every plugin before `--log-level`."""
    serve = commands.add_parser("serve", help="run the movie API with uvicorn")
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument(
        "--db",
        default="labsupport.db",
        help="SQLite file, or a postgresql://user@host:port/db URL (the postgres extra) that "
        "API processes on other machines share (default labsupport.db)",
    )
    serve.add_argument(
        "--demo", action="store_true", help="load the built-in catalogue and ratings"
    )
    serve.add_argument("--seed", type=int, default=0, help="seed for the demo ratings")
    serve.add_argument(
        "--grace", type=float, default=5.0, help="seconds a rebuild gets at shutdown"
    )
    serve.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="auto",
        help="where rebuilds run: a thread, a low-priority child process, or auto (default: "
        f"the child process from {PROCESS_MIN_RATINGS:,} ratings)",
    )
    serve.add_argument(
        "--build-delay",
        type=float,
        default=0.0,
        help="extra seconds per rebuild, to watch 'running' in class (default 0)",
    )
    serve.add_argument(
        "--rebuild-rate",
        type=_rebuild_rate,
        default=REBUILD_RATE,
        metavar="BURST,PER_MINUTE",
        help="rebuilds one client may start at once, then per minute; more get 429 "
        f"(default {REBUILD_RATE[0]},{REBUILD_RATE[1]:g}; off to disable)",
    )
    serve.add_argument(
        "--refresh-after",
        type=_positive(int),
        metavar="N",
        help="rebuild by itself once N ratings arrived since the serving model (default: off)",
    )
    serve.add_argument(
        "--refresh-every",
        type=_positive(float),
        metavar="SECONDS",
        help="rebuild by itself once the oldest rating the model has not seen is this old "
        "(default: off)",
    )
    serve.add_argument(
        "--fold-in",
        action="store_true",
        help="answer a user who rated since the last build from their current ratings, "
        "folded into the serving model, with no rebuild (default: off)",
    )
    for plugin in plugins:
        plugin.add_serve_options(serve)
    # No plugin gave `--redis`: accept it anyway, to explain instead of "unrecognized".
    with contextlib.suppress(argparse.ArgumentError):  # (raised when a plugin did)
        serve.add_argument("--redis", dest="redis_without_plugin", help=argparse.SUPPRESS)
    serve.add_argument("--log-level", default="info", help="uvicorn log level (default info)")
    serve.set_defaults(func=functools.partial(_serve, plugins=plugins))


def _check_serve(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    plugins: Sequence[_CliPlugin],
    broken: Sequence[str],
) -> None:
    """Stop with a usage error (exit 2) for `serve` options that cannot work."""
    if getattr(args, "redis_without_plugin", None) is not None:
        why = " and ".join(broken) if broken else "none is installed"
        parser.error(
            f"--redis needs the scale-out plugin of the entry-point group {PLUGIN_GROUP!r}, "
            f"but {why}; reinstall labsupport with its redis extra: pip install -e '.[redis]'"
        )
    for plugin in plugins:
        plugin.check_serve(parser, args)


def _lab_app(args: argparse.Namespace) -> int:
    from labsupport.errors import LabError
    from labsupport.labapp import write_lab_app

    try:
        written = write_lab_app(args.dir, solution=args.solution)
    except LabError as exc:
        raise SystemExit(f"error: {exc}") from None
    which = "solution" if args.solution else "starter"
    print(f"wrote the lab's {which} app to {args.dir} ({len(written)} files)")
    print(f"next: cd {args.dir} && uvicorn app.main:app --reload   (tests: pytest -q)")
    return 0


def _add_lab_app(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `lab-app` command: write the student's app for the labs."""
    lab = commands.add_parser(
        "lab-app", help="write the labs' movie API (the starter, or the finished solution)"
    )
    lab.add_argument("dir", help="a new or empty folder to write the app into")
    lab.add_argument(
        "--solution",
        action="store_true",
        help="write the app as it stands at the end of the session",
    )
    lab.set_defaults(func=_lab_app)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `labsupport` command line and return its exit code."""
    plugins, broken = _load_plugins()
    parser = argparse.ArgumentParser(
        prog="python -m labsupport", description=__doc__.splitlines()[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    _add_serve(commands, plugins)
    _add_lab_app(commands)
    for plugin in plugins:
        plugin.add_commands(commands)
    args = parser.parse_args(argv)
    if args.command == "serve":
        _check_serve(parser, args, plugins, broken)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(name)s: %(message)s")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
