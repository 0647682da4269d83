"""Retry HTTP calls with capped, jittered exponential backoff, and poll rebuild tasks.

The seed's `with_backoff` retried *every* error, 404 included, slept with
the global `random` module, printed instead of logging, and after its last
guarded attempt made one more call whose error nobody handled. This package
keeps the seed's call working unchanged:

    response = with_backoff(lambda: client.get(url), retries=5, backoff_factor=0.5, jitter=0.2)

but retries only what a retry can fix (408, 429, the 5xx that mean "try
later", and transport errors such as refused connections and timeouts), raises
every other 4xx at once, and never calls the server after it has decided to
give up. All times are in seconds.

Only idempotent requests are retried: a GET (or HEAD, OPTIONS, PUT, DELETE,
TRACE), or a POST or PATCH the server deduplicates by an `Idempotency-Key`
or `X-Task-Id` header. Retrying a plain `POST /recommender/rebuild` after
a timeout can start two rebuilds, so `with_backoff` makes such a call once
and raises its error, unless told `idempotent=True`.

- `labsupport.retry.backoff`: `with_backoff`, the schedules it sleeps by
  (`backoff_schedule`, `STRATEGIES`) and what counts as transient
  (`is_retryable`, `RETRY_STATUSES`, `parse_retry_after`).
- `labsupport.retry.poll`: `poll_task`, which waits for a rebuild task
  through `with_backoff`, and `TaskFailedError`.

Production code would use a retry library instead of this teaching version.
The same policy with stamina (`attempts` counts calls, so it is
`retries + 1`; stamina's wait is exactly the seed's formula, capped):

    import httpx
    import stamina

    def transient(exc: Exception) -> bool:
        if isinstance(exc, httpx.HTTPStatusError):
            return exc.response.status_code in {408, 429, 500, 502, 503, 504}
        return isinstance(exc, httpx.TransportError)

    @stamina.retry(on=transient, attempts=6, timeout=45.0,
                   wait_initial=0.5, wait_max=30.0, wait_jitter=0.2)
    def get_status(client: httpx.Client, url: str) -> httpx.Response:
        response = client.get(url)
        response.raise_for_status()
        return response

and with tenacity (`wait_random_exponential` is the "full" strategy of
`backoff_schedule`):

    from tenacity import (retry, retry_if_exception, stop_after_attempt,
                          stop_after_delay, wait_exponential_jitter)

    @retry(retry=retry_if_exception(transient),
           stop=stop_after_attempt(6) | stop_after_delay(45.0),
           wait=wait_exponential_jitter(initial=0.5, max=30.0, jitter=0.2),
           reraise=True)
    def get_status(client: httpx.Client, url: str) -> httpx.Response: ...

Neither honours `Retry-After` out of the box; check your version's docs for
a backoff hook if your server sends it.
"""

from __future__ import annotations

from labsupport.retry.backoff import (
    RETRY_STATUSES,
    STRATEGIES,
    Attempt,
    backoff_schedule,
    is_retryable,
    parse_retry_after,
    with_backoff,
)
from labsupport.retry.poll import TaskFailedError, poll_task

__all__ = [
    "RETRY_STATUSES",
    "STRATEGIES",
    "Attempt",
    "TaskFailedError",
    "backoff_schedule",
    "is_retryable",
    "parse_retry_after",
    "poll_task",
    "with_backoff",
]
