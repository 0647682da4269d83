"""Rebuilds on a real job queue: RQ (Redis Queue) workers.

`python -m labsupport serve --redis URL --queue rq` makes the API enqueue each
new rebuild instead of building it; `python -m labsupport worker --redis URL
--db PATH_OR_URL` runs a worker that builds them. Start as many workers as you
like: on this machine with the API's SQLite file, or on any machine with a
`postgresql://` URL, where the worker needs nothing but the two URLs.

Why RQ: it needs nothing but the Redis the API already shares; it runs each
job in a freshly forked process (the "work horse"), so a build that leaks
memory or crashes takes nothing else down; and its job states map onto the
task states: `queued -> started -> finished | failed`. A task's id is its
job's id, so `rq info` and the status endpoint name the same things. Jobs
are stored as JSON (RQ's `JSONSerializer`), not pickle: nothing read from
Redis is ever unpickled, as in `labsupport.scaleout.cache`. A job names its
function by dotted path, `labsupport.scaleout.rq.run_rebuild`, which the
worker imports: moving that function breaks the jobs already queued.

The task state stays in `labsupport.scaleout.registry`: the job claims its
task's lease, refreshes it every quarter of `lease_ttl` from a thread, and
publishes its model with the same atomic step an API process uses. When a
worker dies mid-build:

* **RQ alone is slow to notice.** RQ marks an abandoned job `failed` only once
  its execution's heartbeat has expired, at least 60 s later, and only when a
  worker next cleans its registries.
* **Killing the worker does not kill its build.** The work horse runs in its own
  process group, so after a SIGKILL of the worker it carries on as an orphan
  (seen with RQ 3.0.0: it finished the job and RQ recorded `finished`).
  Here the job's heartbeat thread checks that its worker is alive and ends
  the horse when it is not, as the loss of the machine would.
* **The task reads `failed` about `lease_ttl` seconds later** (10 by
  default; `serve --lease-ttl`): with no heartbeat the lease lapses, and the
  next reader of the task settles it. It never reads `running` for ever,
  and a new rebuild can start at once.

A worker stopped with SIGTERM or Ctrl-C finishes its current build first (RQ's
warm shutdown); a second signal kills the build, and its task reads `failed`.

All times are in seconds.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import uuid
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labsupport.errors import LabError
from labsupport.recommender import build_model
from labsupport.scaleout._redis import connect_redis
from labsupport.scaleout.builder import Heartbeat, run_build
from labsupport.scaleout.registry import RedisTaskRegistry
from labsupport.store import is_database_url, open_store
from labsupport.tasks.states import TaskStatus

if TYPE_CHECKING:
    import redis

__all__ = ["MissingDatabaseError", "RQJobQueue", "run_rebuild", "work"]

logger = logging.getLogger("labsupport.scaleout.rq")

_QUEUE_NAME = "labsupport-rebuilds"
"""The RQ queue rebuilds go to."""
_DB_ENV = "LABSUPPORT_DB"
"""The environment variable that tells a job which SQLite file to read ratings from."""
_JOB = "labsupport.scaleout.rq.run_rebuild"  # what the worker imports: see run_rebuild
_WAITING = frozenset({"created", "queued", "deferred", "scheduled", "rate_limited"})


class MissingDatabaseError(LabError, FileNotFoundError):
    """The worker was given a database file that does not exist."""


class RQJobQueue:
    """Hand rebuilds to RQ, and tell whether a queued one can still run.

    Args:
        connection: The Redis client (`decode_responses=False`).
        name: The RQ queue name.
        job_timeout: Longest a job may take, waiting for another build
            included; RQ stops it after that and its task reads `failed`.
    """

    def __init__(
        self, connection: redis.Redis, *, name: str = _QUEUE_NAME, job_timeout: float = 3600.0
    ) -> None:
        from rq import Queue
        from rq.serializers import JSONSerializer

        self.queue = Queue(name, connection=connection, serializer=JSONSerializer)
        self.job_timeout = job_timeout

    def __repr__(self) -> str:
        return f"<RQJobQueue {self.queue.name!r}>"

    def enqueue(self, task_id: str, settings: Mapping[str, Any]) -> None:
        """Queue `run_rebuild` for `task_id`; the job's id is the task's id."""
        self.queue.enqueue_call(
            _JOB,
            kwargs={"task_id": task_id, "max_wait": self.job_timeout / 2, **settings},
            job_id=task_id,
            timeout=int(self.job_timeout),
            result_ttl=3600,
            failure_ttl=7 * 24 * 3600,
            description=f"rebuild {task_id}",
        )

    def stop(self, task_id: str) -> None:
        """Stop the task's job: a waiting job leaves the queue, a running one its worker ends."""
        from rq.command import send_stop_job_command
        from rq.exceptions import InvalidJobOperation, NoSuchJobError
        from rq.job import Job

        connection, serializer = self.queue.connection, self.queue.serializer
        try:
            send_stop_job_command(connection, task_id, serializer=serializer)
        except InvalidJobOperation:  # not executing: still waiting in the queue
            with contextlib.suppress(NoSuchJobError, InvalidJobOperation):
                Job.fetch(task_id, connection=connection, serializer=serializer).cancel()
        except NoSuchJobError:
            pass  # the job is gone already

    def job_state(self, task_id: str, grace: float) -> str | None:
        """Return `None` while the task's job may still run, else why it never will.

        A job waiting in the queue may run; so may one that RQ started less
        than `grace` seconds ago (its lease comes a moment after the start).
        """
        from rq.exceptions import NoSuchJobError
        from rq.job import Job

        try:
            job = Job.fetch(
                task_id, connection=self.queue.connection, serializer=self.queue.serializer
            )
        except NoSuchJobError:
            return "its job is not in the queue"
        status = job.get_status(refresh=False).value
        if status in _WAITING:
            return None
        if status == "started":
            started = job.started_at
            if started is None or (datetime.now(timezone.utc) - started).total_seconds() < grace:
                return None
            return "its worker stopped before the build began"
        return f"its job is {status}"


def run_rebuild(
    task_id: str,
    *,
    prefix: str,
    lease_ttl: float,
    idempotency_ttl: float,
    task_ttl: float,
    old_model_ttl: float,
    build_delay: float = 0.0,
    build_options: Mapping[str, Any] | None = None,
    max_wait: float = 1800.0,
) -> dict[str, Any]:
    """Build and publish the model for one task: the RQ job, run in a work horse.

    The arguments come from the API (`RedisRebuildService.job_settings`); the ratings
    come from the SQLite file or PostgreSQL URL in the `LABSUPPORT_DB`
    environment variable, which `python -m labsupport worker --db` sets.

    Returns:
        `{"task_id", "status", "model_version"}` (RQ keeps it as the result).

    Raises:
        RuntimeError: the task did not complete (RQ then marks the job failed,
            in agreement with the task), or this runs outside an RQ worker.
    """
    from rq import get_current_job

    job = get_current_job()
    db = os.environ.get(_DB_ENV)
    if job is None or not db:
        msg = (
            f"run_rebuild runs in an RQ worker with {_DB_ENV} set: use python -m labsupport worker"
        )
        raise RuntimeError(msg)
    registry = RedisTaskRegistry(
        job.connection,
        prefix=prefix,
        lease_ttl=lease_ttl,
        idempotency_ttl=idempotency_ttl,
        task_ttl=task_ttl,
        old_model_ttl=old_model_ttl,
    )
    owner = f"rq:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    worker_pid = os.getppid()

    def stop_if_orphaned() -> None:
        if os.getppid() != worker_pid:  # our worker died: stop, as the loss of the machine would
            logger.error("the worker of rebuild %s died; this build stops too", task_id)
            os._exit(1)

    build = functools.partial(build_model, **dict(build_options or {}))
    with (
        open_store(db) as store,
        Heartbeat(registry, owner, lambda: [task_id], on_beat=stop_if_orphaned) as beat,
    ):
        run_build(
            registry,
            task_id,
            owner,
            store=store,
            build=build,
            build_delay=build_delay,
            should_stop=beat.lost.is_set,
            max_wait=max_wait,
        )
    task = registry.get(task_id)
    if task is None:
        msg = f"rebuild {task_id} ended unknown: the task has expired"
        raise RuntimeError(msg)
    if task.status is not TaskStatus.COMPLETE:
        msg = f"rebuild {task_id} ended {task.status.value}: {task.error}"
        raise RuntimeError(msg)
    return {"task_id": task_id, "status": task.status.value, "model_version": task.model_version}


def work(
    redis_url: str,
    *,
    db: str | os.PathLike[str],
    queue: str = _QUEUE_NAME,
    burst: bool = False,
    log_level: str = "INFO",
) -> int:
    """Run an RQ worker that builds the rebuilds queued by the API; return 0 when it stops.

    Args:
        redis_url: The Redis the API servers use.
        db: The SQLite file the API servers use (it must exist), or the
            `postgresql://` URL of their database.
        queue: The RQ queue to take jobs from.
        burst: Stop once the queue is empty, instead of waiting for jobs.
        log_level: RQ's log level.

    Raises:
        MissingDatabaseError: `db` is a file that does not exist.
        StoreUnavailableError: no PostgreSQL server answers at the `db` URL.
        RedisUnavailableError: nothing answered at `redis_url`.
    """
    from rq import Queue, Worker
    from rq.serializers import JSONSerializer

    if is_database_url(db):
        open_store(db).close()  # fail now, in one sentence, rather than in every job
        target = os.fspath(db)
    else:
        path = Path(db)
        if not path.is_file():
            msg = f"no database at {path}; pass the --db file the API servers use"
            raise MissingDatabaseError(msg)
        target = str(path.resolve())
    connection = connect_redis(redis_url, timeout=None)  # the dequeue blocks for minutes
    os.environ[_DB_ENV] = target  # read by each job, in its forked work horse
    rq_queue = Queue(queue, connection=connection, serializer=JSONSerializer)
    worker = Worker([rq_queue], connection=connection, serializer=JSONSerializer)
    worker.work(burst=burst, logging_level=log_level.upper())
    connection.close()
    return 0
