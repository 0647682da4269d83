"""The real multi-process backend: rebuild tasks, idempotency keys and models in Redis.

`RebuildService` keeps its tasks and its model in one process. Start two API
servers and each has its own: a task made through one is unknown to the
other, and each must build its own model. This module keeps all of that in
one Redis server instead. `RedisTaskRegistry` is the storage,
`labsupport.scaleout.service.RedisRebuildService` the service the API uses,
`labsupport.scaleout.builder` the steps of one build and
`labsupport.scaleout.rq` the RQ worker that can do the builds.

This is not notebook 05's cache (`labsupport.scaleout.cache`), and it keeps
tasks differently on purpose. The cache writes each task whole, as the JSON
the API serves, under `<prefix>:task:<task_id>`: simple to show in class,
but two writers can overwrite each other. Here several processes change the
same tasks at once, so each task is a hash under `<prefix>:rebuild:<task_id>`
that only atomic Lua scripts change (`labsupport.scaleout._lua`), next to
its lease and its idempotency keys. The model keys are the cache's, in the
same encoding, so the cache's `load_model()` sees the model published here.

Keys (`prefix` defaults to `"labsupport"`):

| key | what it holds |
| --- | --- |
| `<prefix>:rebuild:<task_id>` | one task, a hash; expires `task_ttl` after it ends |
| `<prefix>:rebuilds` | every task id, scored by when it was queued |
| `<prefix>:queued` | the id of the one task waiting to run, if any |
| `<prefix>:building` | the id of the one task running, if any |
| `<prefix>:lease:<task_id>` | who is working on the task; expires without heartbeats |
| `<prefix>:idem:<sha256 of key>` | the task an `Idempotency-Key` made (`idempotency_ttl`) |
| `<prefix>:model:<version>` | one model's bytes (`model_to_bytes`: no pickle) |
| `<prefix>:model:current` | the serving version; moved in the same step that completes |
| `<prefix>:model:ratings` | the ratings counter the serving model was built from |
| `<prefix>:model:last` | the highest version ever published |

Why it is safe with many processes:

* **Every change of state is one Lua script**, which Redis runs with nothing
  else in between. Each script checks the state it expects first (a
  compare-and-set), so a task only moves forward (`queued -> running ->
  complete | failed | interrupted`) and a final state never changes. The
  idempotency key is looked up and bound in the same script that creates the
  task, which is `SET NX` done right: 50 concurrent requests with one key
  make one task.
* **At most one build runs, and one waits.** `<prefix>:queued` names the one
  waiting task (new requests join it); a task may start only when no other
  task is `running`.
* **Publishing is one step.** A finished build first writes its model bytes to
  a temporary key; one script then checks the task is still running and
  still held by this builder, renames the bytes to `model:<version>`, moves
  `model:current`, gives the previous version `old_model_ttl` seconds to
  live (a reader may have just read the old pointer) and marks the task
  `complete`. A build that failed, or lost its lease, publishes nothing: the
  previous model keeps serving.
* **Nothing stays running without a build behind it.** Whoever works on an
  unfinished task holds its *lease*, a key that expires `lease_ttl` seconds
  after its last heartbeat. When the holder dies (an API process or an RQ
  worker killed with SIGKILL), the lease lapses and the next reader of the task
  settles it: `interrupted` if an API process owned it (as with SQLite after
  a crash), `failed` if an RQ worker did (RQ's own verdict for an abandoned
  job). A task waiting in RQ's queue needs no lease: the queue keeps it, and
  the reader asks RQ whether its job still exists.

The scripts build key names from the prefix, so this needs one Redis server,
not a Redis Cluster. All times are in seconds; timestamps are `time.time()`.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from labsupport.recommender import Model
from labsupport.scaleout._lua import SCRIPTS
from labsupport.scaleout._redis import (
    MissingRedisError,
    RedisUnavailableError,
    check_ttls,
    connect_redis,
    model_from_bytes,
    model_to_bytes,
    ms,
)
from labsupport.tasks.states import Task, TaskStatus

if TYPE_CHECKING:
    import redis

__all__ = [
    "MissingRedisError",
    "RedisTaskRegistry",
    "RedisUnavailableError",
    "connect_redis",
]

logger = logging.getLogger("labsupport.scaleout.registry")


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


_JobState = Callable[[str, float], "str | None"]
"""Asks a job queue about a queued task: `None` while its job may still run, else why not."""


class RedisTaskRegistry:
    """The rebuild tasks, idempotency keys and models of one `prefix` in Redis.

    Every method takes a few Redis round trips at most and is safe to call
    from any number of threads and processes at once. The service
    (`RedisRebuildService`), the steps of one build
    (`labsupport.scaleout.builder`) and the RQ job (`labsupport.scaleout.rq`)
    are written on top of it.

    Args:
        client: A `redis.Redis` client made with `decode_responses=False`
            (`connect_redis` makes one).
        prefix: First part of every key.
        lease_ttl: Seconds a lease lives without a heartbeat: how long a dead
            builder's task can still read `running`. Heartbeats come every
            quarter of it.
        idempotency_ttl: How long an `Idempotency-Key` keeps its task.
        task_ttl: How long a task is kept after it ends (at least
            `idempotency_ttl`, so a key never outlives its task).
        old_model_ttl: How long a replaced model stays readable.
        clock: The time source for timestamps (`time.time`).
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "labsupport",
        lease_ttl: float = 10.0,
        idempotency_ttl: float = 24 * 3600.0,
        task_ttl: float = 7 * 24 * 3600.0,
        old_model_ttl: float = 600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        check_ttls(
            lease_ttl=lease_ttl,
            idempotency_ttl=idempotency_ttl,
            task_ttl=task_ttl,
            old_model_ttl=old_model_ttl,
        )
        self.client = client
        self.prefix = prefix
        self.lease_ttl = lease_ttl
        self.idempotency_ttl = idempotency_ttl
        self.task_ttl = max(task_ttl, idempotency_ttl)
        self.old_model_ttl = old_model_ttl
        self._clock = clock
        self._scripts = {name: client.register_script(source) for name, source in SCRIPTS.items()}

    def __repr__(self) -> str:
        return f"<RedisTaskRegistry prefix={self.prefix!r}>"

    # -- key names ---------------------------------------------------------

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def _task_key(self, task_id: str) -> str:
        return self._key("rebuild", task_id)

    def _lease_key(self, task_id: str) -> str:
        return self._key("lease", task_id)

    def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return self._scripts[name](keys=keys, args=args)

    # -- reading -----------------------------------------------------------

    def get(self, task_id: str) -> Task | None:
        """Return the stored task, or `None` if it is unknown or expired."""
        return _task_from_hash(self.client.hgetall(self._task_key(task_id)))

    def tasks(self) -> list[Task]:
        """Return every stored task, oldest first (expired ids are dropped from the index)."""
        ids = [cast(bytes, i).decode() for i in self.client.zrange(self._key("rebuilds"), 0, -1)]
        with self.client.pipeline(transaction=False) as pipe:
            for task_id in ids:
                pipe.hgetall(self._task_key(task_id))
            found = pipe.execute()
        gone = [task_id for task_id, data in zip(ids, found, strict=True) if not data]
        if gone:
            self.client.zrem(self._key("rebuilds"), *gone)
        return [task for task in map(_task_from_hash, found) if task is not None]

    def holder(self, task_id: str) -> str | None:
        """Return who holds the task's lease (`None`: nobody is working on it)."""
        return _text(cast("bytes | None", self.client.get(self._lease_key(task_id))))

    def pointer(self, name: str) -> str | None:
        """Return the task id in `<prefix>:queued` or `<prefix>:building`."""
        return _text(cast("bytes | None", self.client.get(self._key(name))))

    def task_for_key(self, idempotency_key: str) -> str | None:
        """Return the id of the task an `Idempotency-Key` made (`None`: none, or expired)."""
        digest = hashlib.sha256(idempotency_key.encode()).hexdigest()
        task_id = _text(cast("bytes | None", self.client.get(self._key("idem", digest))))
        if task_id is None or not self.client.exists(self._task_key(task_id)):
            return None
        return task_id

    # -- the state machine ---------------------------------------------------

    def request(
        self,
        task_id: str,
        *,
        owner: str,
        runner: str,
        idempotency_key: str | None = None,
        trigger: str = "manual",
    ) -> tuple[str, bool]:
        """Queue task `task_id`, unless the key's task or a queued task answers instead.

        A key whose task was canceled makes a new task.

        Args:
            task_id: The id to give a new task.
            owner: Who holds the new task's lease until a builder claims it.
            runner: `"api"` or `"rq"`: what will build it.
            idempotency_key: The client's key; stored only as a SHA-256 hash.
            trigger: `"manual"` or `"auto"`: what asked for the rebuild.

        Returns:
            The task's id and whether it is new (only a new task needs a build).
        """
        digest = hashlib.sha256((idempotency_key or "").encode()).hexdigest()
        found, created = self._run(
            "request",
            [
                self._key("rebuild", ""),
                self._key("queued"),
                self._key("idem", digest),
                self._key("rebuilds"),
                self._key("lease", ""),
            ],
            [
                task_id,
                repr(self._clock()),
                owner,
                runner,
                "1" if idempotency_key else "",
                ms(self.idempotency_ttl),
                ms(self.lease_ttl),
                trigger,
            ],
        )
        return found.decode(), bool(created)

    def claim(self, task_id: str, owner: str) -> bool:
        """Take over a queued task's lease; `False` when it is no longer queued."""
        keys = [self._task_key(task_id), self._lease_key(task_id)]
        return bool(self._run("claim", keys, [owner, ms(self.lease_ttl)]))

    def try_start(self, task_id: str, owner: str) -> tuple[str, str]:
        """Try to move a queued task to `running`.

        Returns:
            `("start", version)`: it runs, and its model gets this version;
            `("wait", other_id)`: task `other_id` is running; try again later;
            `("gone", status)`: the task is no longer queued, so do not build.
        """
        verdict, detail = self._run(
            "start",
            [
                self._task_key(task_id),
                self._lease_key(task_id),
                self._key("building"),
                self._key("queued"),
                self._key("model", "last"),
                self._key("rebuild", ""),
            ],
            [task_id, repr(self._clock()), owner, ms(self.lease_ttl)],
        )
        return verdict.decode(), detail.decode()

    def heartbeat(self, task_id: str, owner: str) -> bool:
        """Extend `owner`'s lease on a task; `False` when the lease is lost."""
        return bool(self._run("heartbeat", [self._lease_key(task_id)], [owner, ms(self.lease_ttl)]))

    def progress(self, task_id: str, owner: str, fraction: float) -> bool:
        """Record how far a running build got; `False` means stop: the task is not ours."""
        keys = [self._task_key(task_id), self._lease_key(task_id)]
        return bool(self._run("progress", keys, [owner, repr(min(max(fraction, 0.0), 1.0))]))

    def publish(self, task_id: str, owner: str, model: Model, ratings_version: int) -> bool:
        """Complete a running task and make its model the current one, in one step.

        Returns:
            `False` (and nothing changes) when the task is not running any
            more or `owner` no longer holds it.
        """
        pending = self._key("model", "pending", task_id)
        self.client.set(pending, model_to_bytes(model), px=ms(600.0))  # expires if we die here
        keys = [
            self._task_key(task_id),
            self._lease_key(task_id),
            self._key("building"),
            pending,
            self._key("model", str(model.version)),
            self._key("model", "current"),
            self._key("model", "last"),
            self._key("model", "ratings"),
            self._key("model", ""),
        ]
        args = [
            task_id,
            owner,
            repr(self._clock()),
            model.version,
            ratings_version,
            ms(self.old_model_ttl),
            ms(self.task_ttl),
        ]
        return bool(self._run("publish", keys, args))

    def settle(self, task_id: str, status: TaskStatus, error: str, *, owner: str = "") -> bool:
        """Give an unfinished task a final state; return whether it changed.

        With `owner`, only while that owner holds the lease (a build that
        failed, a service interrupting its own tasks at shutdown); without,
        only when nobody holds it any more (see `reap`).
        """
        keys = [
            self._task_key(task_id),
            self._lease_key(task_id),
            self._key("building"),
            self._key("queued"),
        ]
        args = [task_id, status.value, error, repr(self._clock()), ms(self.task_ttl), owner]
        return bool(self._run("settle", keys, args))

    def cancel(self, task_id: str) -> str:
        """Cancel a queued or running task, whoever builds it; return its status before.

        The builder notices at its next progress report or heartbeat (its
        lease is gone) and publishes nothing.

        Returns:
            `"queued"` or `"running"` when the task is now `canceled`; its
            final status when it had one already; `"missing"` for no such task.
        """
        keys = [
            self._task_key(task_id),
            self._lease_key(task_id),
            self._key("building"),
            self._key("queued"),
        ]
        before = self._run("cancel", keys, [task_id, repr(self._clock()), ms(self.task_ttl)])
        return str(_text(before))

    def reap(self, task_id: str, *, job_state: _JobState | None = None) -> bool:
        """Settle an unfinished task that nobody is working on any more.

        A task with a live lease is left alone, and so is an RQ task whose job
        is still waiting in the queue (`job_state` returns `None`). Any
        other unfinished task has lost whoever was to finish it: an API
        process's task becomes `interrupted`, an RQ worker's `failed`.

        Returns:
            Whether the task was settled now.
        """
        status, runner = self.client.hmget(self._task_key(task_id), ["status", "runner"])
        if status not in (b"queued", b"running") or self.holder(task_id) is not None:
            return False
        if runner != b"rq":
            verdict = TaskStatus.INTERRUPTED
            error = "the API process that owned this rebuild stopped before it finished"
        elif status == b"running":
            verdict = TaskStatus.FAILED
            error = (
                "the worker building this rebuild stopped (no heartbeat for "
                f"{self.lease_ttl:g} s); ask for a new rebuild"
            )
        else:
            reason = None if job_state is None else job_state(task_id, self.lease_ttl)
            if reason is None:
                return False  # still waiting in the queue: the queue holds it
            verdict = TaskStatus.FAILED
            error = f"the job queue lost this rebuild ({reason}); ask for a new rebuild"
        settled = self.settle(task_id, verdict, error)
        if settled:
            logger.warning("rebuild %s had nobody working on it: now %s", task_id, verdict.value)
        return settled

    # -- models --------------------------------------------------------------

    def current(self) -> tuple[int | None, int]:
        """Return the current model version (`None` if none) and its ratings counter."""
        version, ratings = self.client.mget(
            [self._key("model", "current"), self._key("model", "ratings")]
        )
        return (None if version is None else int(version)), int(ratings or 0)

    def load_model(self, version: int) -> Model | None:
        """Return model `version`, or `None` if its bytes have expired."""
        data = cast("bytes | None", self.client.get(self._key("model", str(version))))
        return None if data is None else model_from_bytes(data)


def _task_from_hash(data: dict[Any, Any]) -> Task | None:
    if not data:
        return None
    fields = {k.decode(): v.decode() for k, v in data.items()}

    def number(name: str) -> float | None:
        return float(fields[name]) if fields.get(name) else None

    return Task(
        task_id=fields["task_id"],
        status=TaskStatus(fields["status"]),
        queued_at=float(fields["queued_at"]),
        started_at=number("started_at"),
        finished_at=number("finished_at"),
        progress=float(fields.get("progress") or 0.0),
        error=fields.get("error") or None,
        model_version=int(fields["model_version"]) if fields.get("model_version") else None,
        trigger=fields.get("trigger") or "manual",
    )
