"""A per-client rate limit: one token bucket for each client.

Each client starts with `burst` tokens. A request that costs something takes
one; tokens come back at `per_minute` per minute, up to `burst` again. So a
client can make `burst` requests at once, then `per_minute` a minute for as
long as it keeps going. When its bucket is empty the limiter says how long
until the next token, which is what a `Retry-After` header needs:

    limiter = RateLimiter(burst=10, per_minute=30)
    wait = limiter.acquire("10.0.0.7")
    if wait:  # nothing was taken
        ...  # answer 429 with Retry-After: math.ceil(wait)

The API uses it for `POST /recommender/rebuild`: only a request that creates
a new rebuild task pays, so a retry with the same `Idempotency-Key` or a
request that joins a queued task is free (see `labsupport.api.create_app`).

Why not a library? slowapi's decorator counts every request a route receives;
here the route first asks the rebuild service whether a request would start a
build (`reuses`) and takes a token only then. A few dozen lines a student can
read do that, with no new dependency.

All times are in seconds.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

__all__ = ["REBUILD_RATE", "RateLimiter", "retry_after_seconds"]

REBUILD_RATE: tuple[int, float] = (10, 30.0)
"""The API's default for rebuilds: a burst of 10 per client, then 30 a minute."""


class RateLimiter:
    """Token buckets, one per client, safe to share between threads.

    Args:
        burst: Tokens a client has when it starts (and at most ever): how many
            requests it may make at once.
        per_minute: Tokens given back per minute: the sustained rate.
        clock: A monotonic clock in seconds (inject a fake in tests).
        max_clients: How many clients to remember before forgetting those
            whose bucket is full again (a full bucket is the same as a new one).

    Raises:
        ValueError: `burst` is below 1 or `per_minute` is not positive.
    """

    def __init__(
        self,
        burst: int,
        per_minute: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = 10_000,
    ) -> None:
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            msg = f"burst must be a whole number of requests, at least 1; got {burst!r}"
            raise ValueError(msg)
        if not per_minute > 0 or math.isinf(per_minute):
            msg = f"per_minute must be a positive number of requests; got {per_minute!r}"
            raise ValueError(msg)
        self.burst = burst
        self.per_minute = float(per_minute)
        self._clock = clock
        self._max_clients = max_clients
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, as of when)

    def _tokens(self, client: str, now: float) -> float:
        """The client's tokens at `now`: what was left plus what has come back since."""
        tokens, then = self._buckets.get(client, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - then) * self.per_minute / 60.0)

    def acquire(self, client: str) -> float:
        """Take one of `client`'s tokens if it has one.

        Returns:
            `0.0` when a token was taken; otherwise the seconds until the
            client has a whole token again (nothing is taken).
        """
        with self._lock:
            now = self._clock()
            tokens = self._tokens(client, now)
            if tokens < 1.0:
                return (1.0 - tokens) * 60.0 / self.per_minute
            self._buckets[client] = (tokens - 1.0, now)
            if len(self._buckets) > self._max_clients:
                self._forget_full(now)
            return 0.0

    def tokens(self, client: str) -> float:
        """Return how many tokens `client` has now (`burst` for a new client)."""
        with self._lock:
            return self._tokens(client, self._clock())

    def _forget_full(self, now: float) -> None:
        full = [c for c in self._buckets if self._tokens(c, now) >= self.burst]
        for client in full:
            del self._buckets[client]


def retry_after_seconds(wait: float) -> int:
    """Round a wait up to the whole seconds of a `Retry-After` header (at least 1)."""
    return max(1, math.ceil(wait))
