"""What the Redis cache and the Redis task registry share: connections, errors, TTLs, models.

`labsupport.scaleout.cache` (notebook 05's preview) and
`labsupport.scaleout.registry` (the multi-process backend) both talk to
Redis, both store models under the same keys in the same encoding, and both
turn an unreachable server into one sentence. Those pieces live here, once:

- `RedisUnavailableError` and `MissingRedisError`, the two ways Redis can
  be out of reach, and `connect_redis`, which raises them;
- `describe_url`, a Redis URL as `host:port db N` (never its password);
- `check_ttls` and `ms`, how both check and send expiry times;
- `model_to_bytes` and `model_from_bytes`, the model as a numpy `.npz`
  archive: a reader never unpickles bytes from Redis, because anyone who can
  write to it could make the reader run arbitrary code.

The cache and the registry re-export what their users need, so import from
them rather than from here.

All times are in seconds.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import fields
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import numpy as np
import scipy.sparse as sp

from labsupport.errors import LabError
from labsupport.recommender import Model

if TYPE_CHECKING:
    import redis

__all__ = [
    "MissingRedisError",
    "RedisUnavailableError",
    "check_ttls",
    "connect_redis",
    "describe_url",
    "model_from_bytes",
    "model_to_bytes",
    "ms",
]

_FORMAT = 1  # bump when the layout written by model_to_bytes changes

_SCALARS = (
    "global_mean", "version", "built_at", "rank", "method",
    "n_users", "n_movies", "n_ratings", "build_seconds",
)  # fmt: skip


class RedisUnavailableError(LabError, ConnectionError):
    """No Redis server answers at the address given; the message says how to start one."""


class MissingRedisError(LabError, ImportError):
    """The `redis` package (the `labsupport[redis]` extra) is not installed."""


# ---------------------------------------------------------------- connecting


def describe_url(url: str) -> tuple[str, int]:
    """Describe a Redis URL without its password: `("host:port db N", port)`."""
    parts = urlsplit(url)
    try:
        port = parts.port or 6379
    except ValueError:  # a port that is not a number: connecting will say so
        port = 6379
    db = parts.path.lstrip("/") or "0"
    return f"{parts.hostname or '?'}:{port} db {db}", port


def connect_redis(url: str, *, timeout: float | None = 5.0) -> redis.Redis:
    """Return a client for the Redis at `url`, after checking it answers a PING.

    Args:
        url: A `redis://host:port/db` URL.
        timeout: Seconds to wait for the connection and for each command;
            `None` waits for ever (an RQ worker's blocking dequeue needs that).

    Raises:
        MissingRedisError: the `redis` package is not installed.
        RedisUnavailableError: nothing answered at `url`, or it is not a
            Redis URL.
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
            f"no Redis answered at {describe_url(url)[0]} ({type(exc).__name__}); "
            "start redis-server or fix the --redis URL"
        )
        raise RedisUnavailableError(msg) from None
    return client


# ---------------------------------------------------------------- expiry


def check_ttls(**ttls: float) -> None:
    """Raise `ValueError` unless every TTL given is a positive number of seconds."""
    for name, value in ttls.items():
        if not value > 0:
            msg = f"{name} must be a positive number of seconds, got {value!r}"
            raise ValueError(msg)


def ms(seconds: float) -> int:
    """Seconds as the whole milliseconds Redis's `PX` and `PEXPIRE` take (at least 1)."""
    return max(1, math.ceil(seconds * 1000))


# ---------------------------------------------------------------- models as bytes


def model_to_bytes(model: Model) -> bytes:
    """Serialise a model to bytes: its arrays in one `.npz` archive, no pickle.

    Every numpy array of the model is saved as it is; the sparse `rated`
    matrix as its three CSR arrays; the scalar fields as one JSON string.

    Args:
        model: A model from `labsupport.recommender.build_model`.

    Returns:
        Bytes that `model_from_bytes` turns back into an equal model.
    """
    arrays: dict[str, Any] = {
        f.name: getattr(model, f.name)
        for f in fields(model)
        if isinstance(getattr(model, f.name), np.ndarray)
    }
    arrays["rated_data"] = model.rated.data
    arrays["rated_indices"] = model.rated.indices
    arrays["rated_indptr"] = model.rated.indptr
    meta = {name: getattr(model, name) for name in _SCALARS}
    meta |= {"format": _FORMAT, "rated_shape": list(model.rated.shape)}
    arrays["meta"] = np.array(json.dumps(meta))  # a unicode array: no pickle needed
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def model_from_bytes(data: bytes) -> Model:
    """Rebuild a model from `model_to_bytes` output.

    Args:
        data: The bytes read from Redis.

    Returns:
        The model, read-only like every model.

    Raises:
        ValueError: if the bytes are not a model archive of a known format
            (they would need pickle, are truncated, or come from a newer
            version of this module); rebuild the model instead.
    """
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        meta = json.loads(str(arrays.pop("meta")))
    except (OSError, ValueError, KeyError, EOFError) as exc:
        msg = f"these bytes are not a cached model ({exc}); rebuild the model instead"
        raise ValueError(msg) from exc
    if meta.get("format") != _FORMAT:
        msg = (
            f"cached model has format {meta.get('format')!r}, this code reads {_FORMAT}; "
            "rebuild the model instead"
        )
        raise ValueError(msg)
    rated = sp.csr_matrix(
        (arrays.pop("rated_data"), arrays.pop("rated_indices"), arrays.pop("rated_indptr")),
        shape=tuple(meta["rated_shape"]),
    )
    scalars = {name: meta[name] for name in _SCALARS}
    return Model(rated=rated, **arrays, **scalars)
