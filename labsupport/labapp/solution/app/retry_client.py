"""Call the API again when a failure may pass: with exponential backoff and jitter.

`with_backoff` retries only what a retry can fix (no answer at all, or 429,
502, 503, 504), honours the server's `Retry-After`, and never makes a call
beyond `retries + 1`. A production client would use a library such as
stamina or tenacity for the same policy.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import httpx

RETRY_STATUSES = {429, 502, 503, 504}  # the server may answer differently soon
UNFINISHED = ("queued", "running")


def _retry_after(response: httpx.Response) -> float:
    """The wait the server asked for, in seconds (0 when it asked none or sent a date)."""
    value = response.headers.get("Retry-After", "")
    return float(value) if value.isdigit() else 0.0


def with_backoff(
    func: Callable[[], httpx.Response],
    *,
    retries: int = 5,
    backoff_factor: float = 0.5,
    jitter: float = 0.2,
    sleep: Callable[[float], None] = time.sleep,
) -> httpx.Response:
    """Call `func` until it gives an answer worth keeping; at most `retries + 1` calls."""
    for attempt in range(retries + 1):
        last_try = attempt == retries
        try:
            response = func()
        except httpx.TransportError as exc:  # no answer: refused, reset, timed out...
            if last_try:
                raise
            reason, asked = type(exc).__name__, 0.0
        else:
            if response.status_code not in RETRY_STATUSES or last_try:
                response.raise_for_status()  # a 404 or 422 stays wrong however often we ask
                return response
            reason, asked = f"HTTP {response.status_code}", _retry_after(response)
        wait = max(asked, backoff_factor * 2**attempt + random.uniform(0, jitter))
        print(f"attempt {attempt + 1} failed ({reason}); retrying in {wait:.2f} s")
        sleep(wait)
    raise AssertionError("unreachable: the last attempt returns or raises")


def wait_for_rebuild(
    client: httpx.Client, task_id: str, *, timeout: float = 30.0, interval: float = 0.2
) -> dict[str, Any]:
    """Poll a rebuild task until it is no longer queued or running; return its last status."""
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = with_backoff(
            lambda: client.get(f"/recommender/rebuild/{task_id}")
        ).json()
        if body["status"] not in UNFINISHED:
            return body
        if time.monotonic() > deadline:
            raise TimeoutError(f"rebuild {task_id} still {body['status']} after {timeout} s")
        time.sleep(interval)
