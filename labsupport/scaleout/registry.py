"""Rebuild tasks, idempotency keys and the serving model in Redis, shared by processes.

`RebuildService` keeps its tasks and its model in one
process. Start two API servers and each has its own: a task made through one
is unknown to the other, and each must build its own model. This module keeps
all of that in one Redis server instead; `RedisTaskRegistry` is the
storage, `RedisRebuildService` the service the
API uses, and `labsupport.scaleout.rq` the RQ worker that can do the builds.

Keys (`prefix` defaults to `"labsupport"`; the model keys are the ones
`labsupport.scaleout.cache` reads, so its `load_model()` sees the same model):

=================================  ===================================================
`<prefix>:rebuild:<task_id>`     one task, a hash; expires `task_ttl` after it ends
`<prefix>:rebuilds`              every task id, scored by when it was queued
`<prefix>:queued`                the id of the one task waiting to run, if any
`<prefix>:building`              the id of the one task running, if any
`<prefix>:lease:<task_id>`       who is working on the task; expires without heartbeats
`<prefix>:idem:<sha256 of key>`  the task an `Idempotency-Key` made (`idempotency_ttl`)
`<prefix>:model:<version>`       one model's bytes (`rediscache.model_to_bytes`: no pickle)
`<prefix>:model:current`         the serving version; moved in the same step that completes
`<prefix>:model:ratings`         the ratings counter the serving model was built from
`<prefix>:model:last`            the highest version ever published
=================================  ===================================================

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
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from labsupport.errors import LabError
from labsupport.recommender import Model
from labsupport.scaleout.cache import (
    RedisUnavailableError,
    _check_ttls,
    _ms,
    _where,
    model_from_bytes,
    model_to_bytes,
)
from labsupport.store import Store
from labsupport.tasks import Builder, Task, TaskStatus

if TYPE_CHECKING:
    import redis

__all__ = [
    "Heartbeat",
    "LeaseLostError",
    "MissingRedisError",
    "RedisTaskRegistry",
    "RedisUnavailableError",
    "connect_redis",
    "run_build",
]

logger = logging.getLogger("labsupport.scaleout.registry")


class MissingRedisError(LabError, ImportError):
    """The `redis` package (the `labsupport[redis]` extra) is not installed."""


class LeaseLostError(RuntimeError):
    """Raised inside a build whose task is no longer this builder's to finish."""


def connect_redis(url: str, *, timeout: float | None = 5.0) -> redis.Redis:
    """Return a client for the Redis at `url`, after checking it answers a PING.

    Args:
        url: A `redis://host:port/db` URL.
        timeout: Seconds to wait for the connection and for each command;
            `None` waits for ever (an RQ worker's blocking dequeue needs that).

    Raises:
        MissingRedisError: the `redis` package is not installed.
        RedisUnavailableError: nothing answered at `url`.
    """
    try:
        import redis
    except ImportError:
        msg = "the redis package is missing: install it with pip install 'labsupport[redis]'"
        raise MissingRedisError(msg) from None
    try:
        client = redis.Redis.from_url(
            url, socket_connect_timeout=2.0, socket_timeout=timeout, decode_responses=False
        )
        client.ping()
    except (redis.RedisError, OSError, ValueError) as exc:
        msg = (
            f"no Redis answered at {_where(url)[0]} ({type(exc).__name__}); "
            "start redis-server or fix the --redis URL"
        )
        raise RedisUnavailableError(msg) from None
    return client


# -------------------------------------------------------------- the Lua scripts
# Each runs atomically in Redis. ARGV values arrive as strings; `false` is
# what redis.call returns for a missing key or field.

_REQUEST = """
-- Return the task an idempotency key made, join the queued task, or queue a new one.
-- KEYS: task hash prefix, queued pointer, idempotency key, index, lease prefix
-- ARGV: new id, now, owner, runner, has key ('1' or ''), key ttl ms, lease ttl ms
local tasks, has_key = KEYS[1], ARGV[5] == '1'
if has_key then
  local known = redis.call('GET', KEYS[3])
  if known and redis.call('EXISTS', tasks .. known) == 1 then return {known, 0} end
end
local waiting = redis.call('GET', KEYS[2])
if waiting and redis.call('HGET', tasks .. waiting, 'status') == 'queued' then
  if has_key then redis.call('SET', KEYS[3], waiting, 'PX', ARGV[6]) end
  return {waiting, 0}
end
redis.call('HSET', tasks .. ARGV[1], 'task_id', ARGV[1], 'status', 'queued',
           'queued_at', ARGV[2], 'progress', '0', 'owner', ARGV[3], 'runner', ARGV[4])
redis.call('ZADD', KEYS[4], ARGV[2], ARGV[1])
redis.call('SET', KEYS[2], ARGV[1])
-- whoever queued it holds it until a builder claims it
redis.call('SET', KEYS[5] .. ARGV[1], ARGV[3], 'PX', ARGV[7])
if has_key then redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[6]) end
return {ARGV[1], 1}
"""

_CLAIM = """
-- A builder takes over a queued task's lease (it heartbeats from now on).
-- KEYS: task hash, lease   ARGV: owner, lease ttl ms
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then return 0 end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return 1
"""

_START = """
-- Move a queued task to running, unless another task is running.
-- KEYS: task hash, lease, building pointer, queued pointer, last version, task hash prefix
-- ARGV: task id, now, owner, lease ttl ms
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'queued' then return {'gone', status or 'missing'} end
local other = redis.call('GET', KEYS[3])
if other and other ~= ARGV[1] and redis.call('HGET', KEYS[6] .. other, 'status') == 'running' then
  return {'wait', other}
end
redis.call('SET', KEYS[3], ARGV[1])
redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[2], 'owner', ARGV[3])
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
if redis.call('GET', KEYS[4]) == ARGV[1] then redis.call('DEL', KEYS[4]) end
return {'start', tostring(tonumber(redis.call('GET', KEYS[5]) or '0') + 1)}
"""

_HEARTBEAT = """
-- Extend a lease this owner still holds; 0 means it is lost.
-- KEYS: lease   ARGV: owner, lease ttl ms
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""

_PROGRESS = """
-- Record progress of a running task this owner holds; 0 means stop building.
-- KEYS: task hash, lease   ARGV: owner, fraction
if redis.call('HGET', KEYS[1], 'status') ~= 'running' or redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return 0
end
if tonumber(ARGV[2]) > tonumber(redis.call('HGET', KEYS[1], 'progress') or '0') then
  redis.call('HSET', KEYS[1], 'progress', ARGV[2])
end
return 1
"""

_PUBLISH = """
-- Complete a running task this owner holds: its model becomes the current one.
-- KEYS: task hash, lease, building, pending bytes, model:<version>, model:current,
--       model:last, model:ratings, model key prefix
-- ARGV: task id, owner, now, version, ratings version, old model ttl ms, task ttl ms
if redis.call('HGET', KEYS[1], 'status') ~= 'running' or redis.call('GET', KEYS[2]) ~= ARGV[2]
   or redis.call('EXISTS', KEYS[4]) == 0
   or tonumber(ARGV[4]) <= tonumber(redis.call('GET', KEYS[7]) or '0') then
  redis.call('DEL', KEYS[4])
  return 0
end
local previous = redis.call('GET', KEYS[6])
redis.call('RENAME', KEYS[4], KEYS[5])
redis.call('PERSIST', KEYS[5])
redis.call('SET', KEYS[6], ARGV[4])
redis.call('SET', KEYS[7], ARGV[4])
redis.call('SET', KEYS[8], ARGV[5])
if previous and previous ~= ARGV[4] then redis.call('PEXPIRE', KEYS[9] .. previous, ARGV[6]) end
redis.call('HSET', KEYS[1], 'status', 'complete', 'finished_at', ARGV[3], 'progress', '1',
           'model_version', ARGV[4])
redis.call('DEL', KEYS[2])
if redis.call('GET', KEYS[3]) == ARGV[1] then redis.call('DEL', KEYS[3]) end
redis.call('PEXPIRE', KEYS[1], ARGV[7])
return 1
"""

_SETTLE = """
-- Give an unfinished task a final state: when `owner` holds its lease, or
-- (owner '') when nobody does any more.
-- KEYS: task hash, lease, building, queued
-- ARGV: task id, final status, error, now, task ttl ms, owner
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'queued' and status ~= 'running' then return 0 end
local holder = redis.call('GET', KEYS[2])
if (ARGV[6] == '' and holder) or (ARGV[6] ~= '' and holder ~= ARGV[6]) then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'finished_at', ARGV[4], 'error', ARGV[3])
redis.call('DEL', KEYS[2])
if redis.call('GET', KEYS[3]) == ARGV[1] then redis.call('DEL', KEYS[3]) end
if redis.call('GET', KEYS[4]) == ARGV[1] then redis.call('DEL', KEYS[4]) end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


JobState = Callable[[str, float], "str | None"]
"""Asks a job queue about a queued task: `None` while its job may still run, else why not."""


class RedisTaskRegistry:
    """The rebuild tasks, idempotency keys and models of one `prefix` in Redis.

    Every method takes a few Redis round trips at most and is safe to call
    from any number of threads and processes at once. The service
    (`RedisRebuildService`) and the RQ worker
    (`labsupport.scaleout.rq`) are both written on top of it.

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
        _check_ttls(
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
        self._scripts = {
            name: client.register_script(source)
            for name, source in (
                ("request", _REQUEST),
                ("claim", _CLAIM),
                ("start", _START),
                ("heartbeat", _HEARTBEAT),
                ("progress", _PROGRESS),
                ("publish", _PUBLISH),
                ("settle", _SETTLE),
            )
        }

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
    ) -> tuple[str, bool]:
        """Queue task `task_id`, unless the key's task or a queued task answers instead.

        Args:
            task_id: The id to give a new task.
            owner: Who holds the new task's lease until a builder claims it.
            runner: `"api"` or `"rq"`: what will build it.
            idempotency_key: The client's key; stored only as a SHA-256 hash.

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
                _ms(self.idempotency_ttl),
                _ms(self.lease_ttl),
            ],
        )
        return found.decode(), bool(created)

    def claim(self, task_id: str, owner: str) -> bool:
        """Take over a queued task's lease; `False` when it is no longer queued."""
        keys = [self._task_key(task_id), self._lease_key(task_id)]
        return bool(self._run("claim", keys, [owner, _ms(self.lease_ttl)]))

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
            [task_id, repr(self._clock()), owner, _ms(self.lease_ttl)],
        )
        return verdict.decode(), detail.decode()

    def heartbeat(self, task_id: str, owner: str) -> bool:
        """Extend `owner`'s lease on a task; `False` when the lease is lost."""
        return bool(
            self._run("heartbeat", [self._lease_key(task_id)], [owner, _ms(self.lease_ttl)])
        )

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
        self.client.set(pending, model_to_bytes(model), px=_ms(600.0))  # expires if we die here
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
            _ms(self.old_model_ttl),
            _ms(self.task_ttl),
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
        args = [task_id, status.value, error, repr(self._clock()), _ms(self.task_ttl), owner]
        return bool(self._run("settle", keys, args))

    def reap(self, task_id: str, *, job_state: JobState | None = None) -> bool:
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
    )


# -------------------------------------------------------------- one build


def run_build(
    registry: RedisTaskRegistry,
    task_id: str,
    owner: str,
    *,
    store: Store,
    build: Builder,
    build_delay: float = 0.0,
    should_stop: Callable[[], bool] = lambda: False,
    max_wait: float = 3600.0,
    poll: float = 0.1,
) -> Model | None:
    """Build the model for one queued task, publish it, and return it.

    The same steps run in an API process's build thread and in an RQ worker's
    job: claim the task's lease, wait while another build runs (at most
    `max_wait` seconds, checking that build is still alive), move the task
    to `running`, read the ratings, build, publish. The caller keeps the
    lease alive with `RedisTaskRegistry.heartbeat` meanwhile.

    Failures are recorded, not raised: a build that raises marks its task
    `failed` and the previous model keeps serving. A build whose task was
    settled by someone else meanwhile (interrupted at shutdown, or its lease
    lapsed) stops at its next progress report and publishes nothing.

    Args:
        registry: Where the task lives.
        task_id: The queued task to build.
        owner: This builder's lease token.
        store: Where the ratings are read from.
        build: The model builder (`build_model`'s signature).
        build_delay: Extra seconds spent before building (a teaching knob).
        should_stop: Checked while waiting to start: `True` gives up, leaving
            the task for its owner to settle (a service shutting down).
        max_wait: Longest wait for another build to finish, then `failed`.
        poll: Seconds between tries while waiting.

    Returns:
        The published model, or `None` when nothing was published.
    """
    if not registry.claim(task_id, owner):
        return None  # no longer queued: settled by someone else
    deadline = time.monotonic() + max_wait
    while True:
        verdict, detail = registry.try_start(task_id, owner)
        if verdict == "start":
            version = int(detail)
            break
        if verdict == "gone" or should_stop():
            return None
        registry.reap(detail)  # the running build may have died: then it is settled
        if time.monotonic() > deadline:
            error = f"waited {max_wait:g} s for rebuild {detail} to finish; ask again later"
            registry.settle(task_id, TaskStatus.FAILED, error, owner=owner)
            return None
        time.sleep(poll)

    def report(fraction: float) -> None:
        if not registry.progress(task_id, owner, fraction):
            raise LeaseLostError(f"rebuild {task_id} is no longer this builder's to finish")

    try:
        ratings_version = store.ratings_version()
        ratings = store.rating_arrays()
        if build_delay > 0:  # the teaching delay, in 10 steps up to progress 0.5
            for step in range(1, 11):
                time.sleep(build_delay / 10)
                report(0.05 * step)
        model = build(ratings, version=version, progress=lambda f: report(0.5 + f / 2))
        if registry.publish(task_id, owner, model, ratings_version):
            return model
        logger.warning("rebuild %s finished but was no longer ours: not published", task_id)
    except LeaseLostError as exc:
        logger.warning("%s: build stopped", exc)
    except Exception as exc:  # any build failure is recorded, not raised
        logger.exception("rebuild %s failed", task_id)
        registry.settle(task_id, TaskStatus.FAILED, f"{type(exc).__name__}: {exc}", owner=owner)
    return None


class Heartbeat:
    """Keep leases alive from a daemon thread, every quarter of the lease TTL.

    Use as a context manager around the work. `lost` is set when a lease
    could not be extended (someone settled the task, or it lapsed).

    Args:
        registry: Where the leases live.
        owner: The lease token.
        task_ids: Returns the task ids to keep alive, read on every beat.
        on_beat: Called at each beat, before the leases are extended (an RQ
            job checks there that its worker is still alive).
    """

    def __init__(
        self,
        registry: RedisTaskRegistry,
        owner: str,
        task_ids: Callable[[], list[str]],
        *,
        on_beat: Callable[[], None] = lambda: None,
    ) -> None:
        self.registry = registry
        self.owner = owner
        self.task_ids = task_ids
        self.on_beat = on_beat
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="labsupport-lease", daemon=True)

    def __enter__(self) -> Heartbeat:
        self.start()
        return self

    def start(self) -> None:
        """Start beating (once)."""
        self._thread.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop beating and wait for the thread (at most a few seconds)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _run(self) -> None:
        import redis

        while not self._stop.wait(self.registry.lease_ttl / 4):
            self.on_beat()
            try:
                for task_id in self.task_ids():
                    if not self.registry.heartbeat(task_id, self.owner):
                        self.lost.set()
            except redis.RedisError as exc:  # the lease may lapse; the next beat tells
                logger.warning("lease heartbeat failed: %s", exc)
