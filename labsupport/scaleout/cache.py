"""Notebook 05's preview: the serving model and task records in Redis, or in memory.

This is the teaching cache of Lab 2's "Redis-ready hooks", not the backend
several API processes run on (that is `labsupport.scaleout.registry`). It
shows the idea in a few plain commands: one process (or one that restarts)
saves the last model built and the state of its rebuild tasks, another reads
them back. `connect` returns a `RedisCache` when a Redis server answers and a
`MemoryCache` with the same methods when it does not, so code (and a
notebook) written against one runs unchanged on the other. Session 10 starts
a real Redis next to the API with Docker Compose.

Keys (`prefix` defaults to `"labsupport"`):

| key | what it holds |
| --- | --- |
| `<prefix>:model:<version>` | one model, as the bytes of `model_to_bytes` |
| `<prefix>:model:current` | the serving version number (moved with one SET) |
| `<prefix>:task:<task_id>` | one task record, `Task.to_dict()` as JSON, expiring after `task_ttl` |

Tasks and models are kept differently in the registry, for a different
audience. Here a task is one JSON string written whole by whoever saves it,
the shape the API serves, which a notebook can print; nothing stops two
writers from overwriting each other, which a preview can live with. The
registry keeps each task as a hash under `<prefix>:rebuild:<task_id>` that
only atomic Lua scripts change, with leases and idempotency keys beside it,
because several processes change tasks at once there. The model keys are the
same in both, in the same encoding: `load_model()` here reads the model the
registry published.

Models are stored as numpy arrays written by `numpy.savez` and read back
with `allow_pickle=False`: a cache must never unpickle bytes, because anyone
who can write to it could make the reader run arbitrary code.

When Redis is missing, `connect` says so in `cache.reason` and falls
back to memory (or, with `required=True`, raises
`RedisUnavailableError`); a `RedisCache` whose server stops
answering raises `RedisUnavailableError` too. Both messages are one
sentence saying how to start a Redis server.

All times are in seconds.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, cast

from labsupport.recommender import Model
from labsupport.scaleout._redis import (
    RedisUnavailableError,
    check_ttls,
    describe_url,
    model_from_bytes,
    model_to_bytes,
    ms,
)

__all__ = [
    "MemoryCache",
    "RedisCache",
    "RedisUnavailableError",
    "connect",
    "model_from_bytes",
    "model_to_bytes",
]

_DEFAULT_URL = "redis://127.0.0.1:6379/0"
"""Where `connect` looks by default: a Redis on this machine, database 0."""

_START_REDIS = "start one with `redis-server --port {port}` or `docker run -p {port}:6379 redis`"


# ---------------------------------------------------------------- the caches


class _Cache:
    """What both caches do, written once over five storage primitives."""

    backend = "none"
    """`"redis"` or `"memory"`."""

    def __init__(self, *, prefix: str, task_ttl: float, old_model_ttl: float, reason: str) -> None:
        check_ttls(task_ttl=task_ttl, old_model_ttl=old_model_ttl)
        self.prefix = prefix
        self.task_ttl = task_ttl
        self.old_model_ttl = old_model_ttl
        self.reason = reason

    # -- storage primitives, one Redis command each ---------------------

    def _set(self, key: str, value: bytes, ttl: float | None) -> None:
        raise NotImplementedError

    def _get(self, key: str) -> bytes | None:
        raise NotImplementedError

    def _swap(self, key: str, value: bytes) -> bytes | None:
        raise NotImplementedError

    def _expire(self, key: str, ttl: float) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release the connection (the memory cache has none); calling twice is harmless."""

    # -- models ------------------------------------------------------------

    def _model_key(self, version: int | str) -> str:
        return f"{self.prefix}:model:{version}"

    def save_model(self, model: Model) -> str:
        """Store a model under its version and make it the current one.

        The model's bytes go to `<prefix>:model:<version>` first; then one
        SET moves the `current` pointer, so a reader sees the old model or
        the new one, never a half-written one. The version it replaced stays
        readable for `old_model_ttl` seconds (a reader may have just read
        the old pointer), then expires. Saving the same version again
        replaces its bytes.

        Args:
            model: The model to cache; `model.version` names its key.

        Returns:
            The key the model was stored under.
        """
        key = self._model_key(model.version)
        self._set(key, model_to_bytes(model), None)
        previous = self._swap(self._model_key("current"), str(model.version).encode())
        if previous is not None and previous.decode() != str(model.version):
            self._expire(self._model_key(previous.decode()), self.old_model_ttl)
        return key

    def current_version(self) -> int | None:
        """Return the version the `current` pointer names, or `None` if there is none."""
        pointer = self._get(self._model_key("current"))
        return None if pointer is None else int(pointer)

    def load_model(self) -> Model | None:
        """Return the current model, or `None` when nothing usable is cached.

        `None` means "build one": no model was ever saved, or the pointed-to
        bytes have expired or been evicted.

        Raises:
            ValueError: the cached bytes are not a model this code can read.
        """
        version = self.current_version()
        if version is None:
            return None
        data = self._get(self._model_key(version))
        return None if data is None else model_from_bytes(data)

    # -- tasks -------------------------------------------------------------

    def save_task(self, task: Mapping[str, Any]) -> None:
        """Store a task record (`Task.to_dict()`) as JSON for `task_ttl` seconds.

        Saving the same `task_id` again replaces the record and restarts
        its expiry.

        Raises:
            ValueError: the record has no `task_id`.
            TypeError: the record cannot be written as JSON.
        """
        if "task_id" not in task:
            msg = f"a task record needs a 'task_id' key; got keys {sorted(task)}"
            raise ValueError(msg)
        key = f"{self.prefix}:task:{task['task_id']}"
        self._set(key, json.dumps(dict(task)).encode(), self.task_ttl)

    def get_task(self, task_id: str) -> dict[str, Any] | None:
        """Return a stored task record, or `None` if it is unknown or expired."""
        data = self._get(f"{self.prefix}:task:{task_id}")
        return None if data is None else cast(dict[str, Any], json.loads(data))

    # -- context manager and display -----------------------------------------

    def __enter__(self) -> _Cache:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} prefix={self.prefix!r}>"


class MemoryCache(_Cache):
    """A dict with expiry that behaves like `RedisCache`, for when Redis is absent.

    It lives and dies with the process, so it shares nothing between API
    processes: it keeps the code path identical, not the guarantees.

    Args:
        prefix: First part of every key.
        task_ttl: How long a task record is kept.
        old_model_ttl: How long a replaced model stays readable.
        reason: One sentence saying why this cache is in use.
        clock: The time source for expiry (`time.monotonic`); tests pass a
            fake one.
    """

    backend = "memory"

    def __init__(
        self,
        *,
        prefix: str = "labsupport",
        task_ttl: float = 24 * 3600.0,
        old_model_ttl: float = 600.0,
        reason: str = "an in-memory cache was asked for",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            prefix=prefix, task_ttl=task_ttl, old_model_ttl=old_model_ttl, reason=reason
        )
        self._clock = clock
        self._lock = threading.Lock()
        self._data: dict[str, tuple[bytes, float]] = {}  # key -> (value, expires at)

    def _live(self, key: str) -> tuple[bytes, float] | None:
        entry = self._data.get(key)
        if entry is not None and entry[1] <= self._clock():
            del self._data[key]
            return None
        return entry

    def _set(self, key: str, value: bytes, ttl: float | None) -> None:
        with self._lock:
            self._data[key] = (value, math.inf if ttl is None else self._clock() + ttl)

    def _get(self, key: str) -> bytes | None:
        with self._lock:
            entry = self._live(key)
        return None if entry is None else entry[0]

    def _swap(self, key: str, value: bytes) -> bytes | None:
        with self._lock:
            entry = self._live(key)
            self._data[key] = (value, math.inf)
        return None if entry is None else entry[0]

    def _expire(self, key: str, ttl: float) -> None:
        with self._lock:
            entry = self._live(key)
            if entry is not None:
                self._data[key] = (entry[0], self._clock() + ttl)

    def keys(self) -> list[str]:
        """Return the live keys, sorted (Redis's `KEYS <prefix>:*`, for teaching)."""
        with self._lock:
            return sorted(k for k in list(self._data) if self._live(k) is not None)


class RedisCache(_Cache):
    """The cache in a Redis server, shared by every process that connects to it.

    Usually made by `connect`, which checks the server answers first.

    Args:
        client: A `redis.Redis` client made with `decode_responses=False`.
        prefix: First part of every key.
        task_ttl: How long a task record is kept.
        old_model_ttl: How long a replaced model stays readable.
        reason: One sentence saying why this cache is in use.
    """

    backend = "redis"

    def __init__(
        self,
        client: Any,
        *,
        prefix: str = "labsupport",
        task_ttl: float = 24 * 3600.0,
        old_model_ttl: float = 600.0,
        reason: str = "a Redis client was given",
    ) -> None:
        super().__init__(
            prefix=prefix, task_ttl=task_ttl, old_model_ttl=old_model_ttl, reason=reason
        )
        self.client = client

    def _call(self, command: str, *args: Any, **options: Any) -> Any:
        """Run one Redis command; a server that does not answer becomes one sentence."""
        try:
            return getattr(self.client, command)(*args, **options)
        except Exception as exc:
            if not _is_redis_down(exc):
                raise
            where, port = _client_address(self.client)
            msg = (
                f"Redis at {where} does not answer ({type(exc).__name__}); "
                f"{_START_REDIS.format(port=port)} and run the cell again, or use "
                "rediscache.connect(), which falls back to an in-memory cache."
            )
            raise RedisUnavailableError(msg) from exc

    def _set(self, key: str, value: bytes, ttl: float | None) -> None:
        self._call("set", key, value, px=None if ttl is None else ms(ttl))

    def _get(self, key: str) -> bytes | None:
        return cast("bytes | None", self._call("get", key))

    def _swap(self, key: str, value: bytes) -> bytes | None:
        return cast("bytes | None", self._call("set", key, value, get=True))  # SET ... GET

    def _expire(self, key: str, ttl: float) -> None:
        self._call("pexpire", key, ms(ttl))

    def close(self) -> None:
        """Close the connection pool; calling it twice is harmless."""
        self.client.close()


def _is_redis_down(exc: BaseException) -> bool:
    """Whether `exc` is redis-py saying the server is unreachable or too slow."""
    try:
        from redis.exceptions import ConnectionError, TimeoutError
    except ImportError:  # not a redis-py client at all
        return False
    return isinstance(exc, ConnectionError | TimeoutError)


def _client_address(client: Any) -> tuple[str, int]:
    """Return `("host:port db N", port)` for a redis-py client."""
    pool = getattr(client, "connection_pool", None)
    options = getattr(pool, "connection_kwargs", None) or {}
    port = int(options.get("port", 6379))
    return f"{options.get('host', '?')}:{port} db {options.get('db', 0)}", port


def connect(
    url: str = _DEFAULT_URL,
    *,
    timeout: float = 0.2,
    prefix: str = "labsupport",
    task_ttl: float = 24 * 3600.0,
    old_model_ttl: float = 600.0,
    required: bool = False,
) -> RedisCache | MemoryCache:
    """Connect to Redis, or fall back to a `MemoryCache` with the same methods.

    The server must answer a PING within `timeout` seconds (one try, no
    retries: a missing Redis should cost a notebook cell a fraction of a
    second). By default nothing raises: when the `redis` package is
    missing, the URL is malformed or the server does not answer, the fallback
    is returned and its `reason` says why and how to start Redis, in one
    sentence. Check `cache.backend` (`"redis"` or `"memory"`), or pass
    `required=True`, if your code needs the real thing.

    Args:
        url: A `redis://` URL (`rediss://` for TLS).
        timeout: Seconds to wait for the connection and for each command.
        prefix: First part of every key.
        task_ttl: How long a task record is kept.
        old_model_ttl: How long a replaced model stays readable.
        required: Raise instead of falling back to memory.

    Returns:
        A `RedisCache` or a `MemoryCache`; `.reason` says which
        and why.

    Raises:
        RedisUnavailableError: with `required=True`, when there is no Redis
            to use; the message says why and how to start one.
    """
    where, port = describe_url(url)

    def fallback(problem: str, advice: str) -> MemoryCache:
        if required:
            msg = f"{problem}; {advice}, or leave out required=True to use an in-memory cache."
            raise RedisUnavailableError(msg)
        return MemoryCache(
            prefix=prefix,
            task_ttl=task_ttl,
            old_model_ttl=old_model_ttl,
            reason=f"{problem}, so the cache is in memory; {advice}",
        )

    try:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry
    except ImportError:
        return fallback("the redis package is not installed", "to use Redis, `pip install redis`")
    client = None
    try:
        client = redis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
        client.ping()
    except (redis.RedisError, OSError, ValueError) as exc:
        if client is not None:
            client.close()
        problem = f"no Redis answered at {where} ({type(exc).__name__})"
        advice = (
            f"to use Redis, {_START_REDIS.format(port=port)} (Session 10 runs one with Compose)"
        )
        return fallback(problem, advice)
    return RedisCache(
        client,
        prefix=prefix,
        task_ttl=task_ttl,
        old_model_ttl=old_model_ttl,
        reason=f"connected to Redis at {where}",
    )
