"""Command line: ``python -m labsupport serve`` runs the movie API on its own.

Examples::

    python -m labsupport serve                      # empty SQLite store in ./labsupport.db
    python -m labsupport serve --demo --port 8000   # built-in catalogue and ratings
    python -m labsupport student-edition student/   # notebooks without solutions
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import warnings
from collections.abc import Sequence
from types import FrameType

import uvicorn

from labsupport.tasks import RebuildService

__all__ = ["main"]


def _serve(args: argparse.Namespace) -> int:
    from labsupport.api import create_app
    from labsupport.store import SQLiteStore

    if args.host not in ("127.0.0.1", "localhost", "::1"):
        warnings.warn(
            f"binding to {args.host} exposes the API to your network; "
            "use --host 127.0.0.1 unless you mean it",
            stacklevel=1,
        )
    store = SQLiteStore(args.db)
    if args.demo and store.count_movies() == 0:
        from labsupport import data

        store.add_movies((m.title, m.year, m.genre) for m in data.catalogue_movies())
        store.add_ratings(data.demo_ratings(seed=args.seed))
    app = create_app(
        store, shutdown_grace=args.grace, executor=args.executor, build_delay=args.build_delay
    )
    service = app.state.service
    if store.count_ratings() and service.model is None:
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


class _DrainingServer(uvicorn.Server):
    """A uvicorn server that drains before it stops.

    On the first SIGTERM or Ctrl-C it keeps answering while the rebuild
    service refuses new rebuilds (503 with ``Retry-After``) and a running
    build gets up to ``grace`` seconds; then it shuts down as usual. (Plain
    uvicorn closes its socket first, so clients would only see refused
    connections.) A second signal stops at once.
    """

    def __init__(self, config: uvicorn.Config, *, service: RebuildService, grace: float) -> None:
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


def _student_edition(args: argparse.Namespace) -> int:
    from labsupport.workbook import student_edition

    for path in student_edition(args.source, args.out):
        print(path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``labsupport`` command line and return its exit code."""
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
        choices=("thread", "process"),
        default="thread",
        help="where rebuilds run: a thread (default) or a low-priority child process",
    )
    serve.add_argument(
        "--build-delay",
        type=float,
        default=0.0,
        help="extra seconds per rebuild, to watch 'running' in class (default 0)",
    )
    serve.add_argument("--log-level", default="info", help="uvicorn log level (default info)")
    serve.set_defaults(func=_serve)

    student = sub.add_parser(
        "student-edition", help="write the notebooks with solution cells replaced by stubs"
    )
    student.add_argument("out", help="folder to write the student copies into")
    student.add_argument("--source", default="notebooks", help="the workbook (default notebooks)")
    student.set_defaults(func=_student_edition)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(name)s: %(message)s")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
