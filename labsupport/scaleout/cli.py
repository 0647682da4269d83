"""The scale-out stack's part of the command line: a `labsupport.cli` plugin.

`pyproject.toml` registers `plugin` as the entry point `scaleout` of the
group `labsupport.cli`; `python -m labsupport` loads it and asks it to add

- `--redis`, `--queue` and `--lease-ttl` to `serve`, and to build the
  `RedisRebuildService` they ask for, shared with the other API processes;
- the `worker` command, an RQ worker that builds the rebuilds queued with
  `--queue rq`.

Redis and RQ are imported only when an option needs them, so `--help`
works without the `redis` extra.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from labsupport.errors import LabError

if TYPE_CHECKING:
    from labsupport.store import Store
    from labsupport.tasks import RebuildServiceProtocol

__all__ = ["plugin"]


class _ScaleOutPlugin:
    """The hooks `labsupport.__main__` calls on every `labsupport.cli` plugin."""

    def add_serve_options(self, serve: argparse.ArgumentParser) -> None:
        """Add `--redis`, `--queue` and `--lease-ttl` to `serve`."""
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

    def add_commands(self, commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
        """Add the `worker` command."""
        worker = commands.add_parser("worker", help="run an RQ worker that builds queued rebuilds")
        worker.add_argument(
            "--redis",
            default="redis://127.0.0.1:6379/0",
            metavar="URL",
            help="the Redis the API servers use (default redis://127.0.0.1:6379/0)",
        )
        worker.add_argument(
            "--db",
            default="labsupport.db",
            help="the API servers' SQLite file, or their postgresql:// URL (default labsupport.db)",
        )
        worker.add_argument(
            "--burst", action="store_true", help="stop when the queue is empty instead of waiting"
        )
        worker.add_argument("--log-level", default="info", help="RQ log level (default info)")
        worker.set_defaults(func=_worker)

    def check_serve(self, parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
        """Refuse `--queue rq` without `--redis` (a usage error, exit 2)."""
        if args.queue == "rq" and not args.redis:
            parser.error("--queue rq needs --redis URL: the queue lives in Redis")

    def rebuild_service(
        self, args: argparse.Namespace, store: Store
    ) -> tuple[RebuildServiceProtocol, bool] | None:
        """With `--redis`: the shared service, and whether an RQ worker builds (`--queue rq`).

        Raises:
            SystemExit: with `error: ...` when Redis cannot be reached or used.
        """
        if not args.redis:
            return None
        from labsupport.scaleout.service import RedisRebuildService

        try:
            service = RedisRebuildService.from_url(
                args.redis,
                store,
                queue=args.queue,
                lease_ttl=args.lease_ttl,
                executor=args.executor,
                build_delay=args.build_delay,
            )
        except LabError as exc:
            raise SystemExit(f"error: {exc}") from None
        return service, args.queue == "rq"


def _worker(args: argparse.Namespace) -> int:
    from labsupport.scaleout.rq import work

    try:
        return work(args.redis, db=args.db, burst=args.burst, log_level=args.log_level)
    except LabError as exc:
        raise SystemExit(f"error: {exc}") from None


plugin = _ScaleOutPlugin()
"""The `labsupport.cli` entry point `scaleout` (see `labsupport.__main__`)."""
