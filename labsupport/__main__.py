"""Command line: `python -m labsupport serve` runs the movie API on its own.

Examples:

    python -m labsupport serve                      # empty SQLite store in ./labsupport.db
    python -m labsupport serve --demo --port 8000   # built-in catalogue and ratings

    # two API processes sharing state in Redis, rebuilds on an RQ worker
    python -m labsupport serve --redis redis://127.0.0.1:6379/0 --queue rq --port 8001
    python -m labsupport serve --redis redis://127.0.0.1:6379/0 --queue rq --port 8002
    python -m labsupport worker --redis redis://127.0.0.1:6379/0 --db labsupport.db
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING

import uvicorn

from labsupport.ratelimit import REBUILD_RATE, RateLimiter
from labsupport.tasks import EXECUTORS, PROCESS_MIN_RATINGS, RebuildService

if TYPE_CHECKING:
    from labsupport.scaleout.service import RedisRebuildService

__all__ = ["main"]


def _serve(args: argparse.Namespace) -> int:
    from labsupport.api import create_app
    from labsupport.store import SQLiteStore

    _warn_if_exposed(args.host)
    store = SQLiteStore(args.db)
    if args.demo and store.count_movies() == 0:
        from labsupport import data

        store.add_movies((m.title, m.year, m.genre) for m in data.catalogue_movies())
        store.add_ratings(data.demo_ratings(seed=args.seed))
    shared = None
    if args.redis:  # tasks, keys and the model in Redis, shared with other processes
        from labsupport.errors import LabError
        from labsupport.scaleout.service import RedisRebuildService

        try:
            shared = RedisRebuildService.from_url(
                args.redis,
                store,
                queue=args.queue,
                lease_ttl=args.lease_ttl,
                executor=args.executor,
                build_delay=args.build_delay,
            )
        except LabError as exc:
            raise SystemExit(f"error: {exc}") from None
    app = create_app(
        store,
        service=shared,
        shutdown_grace=args.grace,
        executor=args.executor,
        build_delay=args.build_delay,
        rebuild_rate=args.rebuild_rate,
    )
    service = app.state.service
    if store.count_ratings() and service.model is None:
        if args.queue == "rq":  # a worker builds it: never wait for one at start-up
            task, created = service.request()
            if created:
                service.start(task.task_id)
        else:
            service.rebuild_now()  # start serving with a model, built before the first request
    print(
        f"Movie API on http://{args.host}:{args.port}  (docs: /docs, store: {args.db}, "
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


class _DrainingServer(uvicorn.Server):
    """A uvicorn server that drains before it stops.

    On the first SIGTERM or Ctrl-C it keeps answering while the rebuild
    service refuses new rebuilds (503 with `Retry-After`) and a running
    build gets up to `grace` seconds; then it shuts down as usual. (Plain
    uvicorn closes its socket first, so clients would only see refused
    connections.) A second signal stops at once.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        *,
        service: RebuildService | RedisRebuildService,
        grace: float,
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


def _worker(args: argparse.Namespace) -> int:
    from labsupport.errors import LabError
    from labsupport.scaleout.rq import work

    try:
        return work(args.redis, db=args.db, burst=args.burst, log_level=args.log_level)
    except LabError as exc:
        raise SystemExit(f"error: {exc}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `labsupport` command line and return its exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m labsupport", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the movie API with uvicorn")
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--db", default="labsupport.db", help="SQLite file (default labsupport.db)")
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
        "--redis",
        metavar="URL",
        help="share tasks, idempotency keys and the model with other API processes "
        "through this Redis (redis://host:port/db); default: this process only",
    )
    serve.add_argument(
        "--queue",
        choices=("none", "rq"),
        default="none",
        help="with --redis: rq sends rebuilds to `python -m labsupport worker` "
        "instead of building here (default none)",
    )
    serve.add_argument(
        "--lease-ttl",
        type=float,
        default=10.0,
        help="with --redis: seconds after which a dead builder's task stops reading "
        "'running' (default 10)",
    )
    serve.add_argument("--log-level", default="info", help="uvicorn log level (default info)")
    serve.set_defaults(func=_serve)

    worker = sub.add_parser("worker", help="run an RQ worker that builds queued rebuilds")
    worker.add_argument(
        "--redis",
        default="redis://127.0.0.1:6379/0",
        metavar="URL",
        help="the Redis the API servers use (default redis://127.0.0.1:6379/0)",
    )
    worker.add_argument(
        "--db", default="labsupport.db", help="the API servers' SQLite file (default labsupport.db)"
    )
    worker.add_argument(
        "--burst", action="store_true", help="stop when the queue is empty instead of waiting"
    )
    worker.add_argument("--log-level", default="info", help="RQ log level (default info)")
    worker.set_defaults(func=_worker)

    args = parser.parse_args(argv)
    if args.command == "serve" and args.queue == "rq" and not args.redis:
        parser.error("--queue rq needs --redis URL: the queue lives in Redis")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(name)s: %(message)s")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
