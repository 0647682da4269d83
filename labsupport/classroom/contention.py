"""Many clients contending for one record, each backing off by a strategy: who wins, how soon.

A classroom instrument for notebook 04: `contention_simulation` replays the
model of AWS's "Exponential Backoff And Jitter" article with the delays of
`labsupport.retry.backoff`, so the notebook can compare `STRATEGIES`
without a server. All times are in seconds.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from typing import TypedDict

from labsupport.retry.backoff import check_number, iter_delays

__all__ = ["ContentionResult", "contention_simulation"]


class ContentionResult(TypedDict):
    """What `contention_simulation` returns (times in seconds)."""

    strategy: str
    n_clients: int
    total_calls: int
    completion_time: float
    max_calls: int
    finish_times: list[float]


def contention_simulation(
    n_clients: int,
    strategy: str,
    *,
    base: float = 0.5,
    cap: float = 30.0,
    jitter: float = 0.2,
    write_time: float = 0.05,
    seed: int = 0,
) -> ContentionResult:
    """Simulate clients contending for one record, each backing off by `strategy`.

    The model follows AWS's "Exponential Backoff And Jitter" article: every
    client wants to make one optimistic-concurrency write to the same record.
    A write reads the version at time `t` and commits at `t + write_time`;
    it succeeds only if no other write committed in between, otherwise the
    client sleeps for its next backoff delay and tries again (each client has
    its own schedule, all drawn from one `random.Random(seed)`). All clients
    start together at `t = 0`, the worst case (a deploy, a cache expiry).
    Ties are broken by client number, so `"none"` needs no randomness.

    With `"none"` the clients stay in lock-step: every round one wins and
    all the others collide again, so `n` clients make `n(n + 1)/2` calls.
    Jitter spreads them out. Every client finishes, since each failure needs
    a success less than `write_time` before it. Pure Python; `n = 100`
    takes about a millisecond. All times are in seconds.

    Args:
        n_clients: How many clients contend.
        strategy: One of `STRATEGIES`.
        base: The first exponential step.
        cap: The longest delay.
        jitter: The `"seed"` strategy's extra random wait.
        write_time: Time from a write's read to its commit.
        seed: Seed for the random source; the same seed gives the same result.

    Returns:
        A `ContentionResult`: `total_calls`, `completion_time` (when
        the last client succeeded), `max_calls` (by the unluckiest client)
        and the sorted `finish_times`.

    Raises:
        ValueError: for an unknown strategy, `n_clients < 1` or a bad time.
    """
    if n_clients < 1:
        msg = f"n_clients must be at least 1, got {n_clients!r}"
        raise ValueError(msg)
    check_number("write_time", write_time, positive=True)
    rng = random.Random(seed)
    schedules = [
        iter_delays(strategy, base=base, cap=cap, jitter=jitter, rng=rng) for _ in range(n_clients)
    ]
    order = itertools.count()
    # (commit time, tie-breaker, client); the tie-breaker keeps the heap deterministic.
    pending = [(write_time, next(order), client) for client in range(n_clients)]
    last_commit = -math.inf
    calls = [0] * n_clients
    finish_times: list[float] = []
    while pending:
        commit, _, client = heapq.heappop(pending)
        calls[client] += 1
        if last_commit <= commit - write_time:  # nobody committed since our read
            last_commit = commit
            finish_times.append(commit)
        else:
            retry_at = commit + next(schedules[client]) + write_time
            heapq.heappush(pending, (retry_at, next(order), client))
    return ContentionResult(
        strategy=strategy,
        n_clients=n_clients,
        total_calls=sum(calls),
        completion_time=finish_times[-1],
        max_calls=max(calls),
        finish_times=finish_times,
    )
