"""Retry HTTP calls with capped, jittered exponential backoff, and poll rebuild tasks.

The seed's `with_backoff` retried *every* error, 404 included, slept with
the global `random` module, printed instead of logging, and after its last
guarded attempt made one more call whose error nobody handled. This module
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

and with tenacity (`wait_random_exponential` is the "full" strategy below):

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

import contextlib
import heapq
import itertools
import logging
import math
import random
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from datetime import timezone
from email.utils import parsedate_to_datetime
from typing import Any, NoReturn, Protocol, TypedDict, TypeVar, cast

from labsupport.errors import LabError

__all__ = [
    "RETRY_STATUSES",
    "STRATEGIES",
    "Attempt",
    "ContentionResult",
    "TaskFailedError",
    "backoff_schedule",
    "contention_simulation",
    "is_retryable",
    "parse_retry_after",
    "poll_task",
    "with_backoff",
]

STRATEGIES: tuple[str, ...] = ("seed", "none", "full", "equal", "decorrelated")
"""Backoff strategy names: the seed's formula, then the four from AWS's
"Exponential Backoff And Jitter" article."""

RETRY_STATUSES: tuple[int, ...] = (408, 429, 500, 502, 503, 504)
"""Statuses worth retrying: timeout, rate limit, and the 5xx that mean "try later"."""

_HTTPX_MODULES = frozenset({"httpx", "httpx2"})
# TransportError subclasses that are bugs in the request, not transient faults.
_NOT_TRANSIENT = frozenset({"UnsupportedProtocol", "LocalProtocolError"})
_FAILED_STATUSES = frozenset({"failed", "interrupted", "unknown"})
# Methods whose repetition changes nothing more than the first call did (RFC 9110, 9.2.2).
_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
_KEY_HEADERS = ("Idempotency-Key", "X-Task-Id")


class ResponseLike(Protocol):
    """What this module needs from an `httpx` or `httpx2` response."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    def raise_for_status(self) -> Any: ...

    def json(self, **kwargs: Any) -> Any: ...


class SupportsGet(Protocol):
    """A client with `get(url)`: `httpx.Client`, `httpx2.Client`, `TestClient`."""

    def get(self, url: str, /) -> ResponseLike: ...


R = TypeVar("R", bound=ResponseLike)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One call made by `with_backoff`, as passed to `on_attempt`.

    Attributes:
        number: 1 for the first call, 2 for the first retry, and so on.
        started: When the call began, in seconds after the first call began.
        elapsed: How long the call itself took.
        status: The HTTP status, or `None` if the call raised before a response.
        error: A short description of the failure, or `None` on success.
        delay: The sleep chosen after this call, or `None` if it was the last.
        will_retry: Whether another call follows.
    """

    number: int
    started: float
    elapsed: float
    status: int | None
    error: str | None
    delay: float | None
    will_retry: bool


class TaskFailedError(LabError, RuntimeError):
    """A background task ended in `failed`, `interrupted` or `unknown`.

    The message says, in one sentence, what happened and what to do next.

    Attributes:
        task_id: The task's id.
        status: The final status the server reported.
        payload: The server's last JSON body.
    """

    def __init__(
        self, message: str, *, task_id: str, status: str, payload: Mapping[str, Any]
    ) -> None:
        super().__init__(message)
        self.task_id = task_id
        self.status = status
        self.payload = dict(payload)


class ContentionResult(TypedDict):
    """What `contention_simulation` returns (times in seconds)."""

    strategy: str
    n_clients: int
    total_calls: int
    completion_time: float
    max_calls: int
    finish_times: list[float]


# --- schedules ---------------------------------------------------------------


def _check(name: str, value: float, *, positive: bool = False) -> None:
    bad = value <= 0 if positive else value < 0
    if bad or math.isnan(value):
        msg = f"{name} must be {'> 0' if positive else '>= 0'}, got {value!r}"
        raise ValueError(msg)


def _delays(
    strategy: str, *, base: float, cap: float, jitter: float, rng: random.Random
) -> Iterator[float]:
    """Check the arguments now, then yield the delay before retry 0, 1, 2, ... (endless)."""
    if strategy not in STRATEGIES:
        msg = f"unknown backoff strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}"
        raise ValueError(msg)
    _check("base (backoff_factor)", base)
    _check("cap (max_delay)", cap)
    _check("jitter", jitter)
    return _delay_stream(strategy, base=base, cap=cap, jitter=jitter, rng=rng)


def _delay_stream(
    strategy: str, *, base: float, cap: float, jitter: float, rng: random.Random
) -> Iterator[float]:
    previous = base
    for n in itertools.count():
        # 2.0**1024 overflows; any cap is reached long before n = 1000.
        ceiling = min(cap, base * 2.0**n) if n < 1000 else cap
        if strategy == "seed":
            yield min(cap, ceiling + rng.uniform(0, jitter))
        elif strategy == "none":
            yield ceiling
        elif strategy == "full":
            yield rng.uniform(0, ceiling)
        elif strategy == "equal":
            yield ceiling / 2 + rng.uniform(0, ceiling / 2)
        else:  # decorrelated
            previous = min(cap, rng.uniform(base, previous * 3))
            yield previous


def backoff_schedule(
    strategy: str,
    *,
    attempts: int,
    base: float = 0.5,
    cap: float = 30.0,
    jitter: float = 0.2,
    rng: random.Random | None = None,
) -> list[float]:
    """Return the sleeps a strategy would choose, without sleeping.

    With `t = min(cap, base * 2**n)` for retry `n = 0, 1, ...`:

    - `"seed"`: `min(cap, t + uniform(0, jitter))`, the seed's formula, capped;
    - `"none"`: `t`, plain exponential backoff;
    - `"full"`: `uniform(0, t)`;
    - `"equal"`: `t/2 + uniform(0, t/2)`;
    - `"decorrelated"`: `min(cap, uniform(base, 3 * previous))`, starting
      from `previous = base`.

    `jitter` only affects `"seed"`. `with_backoff` draws its delays
    from the same code, so the same seeded `rng` gives the same numbers.

    Args:
        strategy: One of `STRATEGIES`.
        attempts: How many delays to return, one per retry (so `retries`
            for `with_backoff`).
        base: The first exponential step (`backoff_factor` in `with_backoff`).
        cap: The longest allowed delay (`max_delay`).
        jitter: The seed strategy's extra random wait.
        rng: The random source; pass `random.Random(seed)` for repeatable numbers.

    Returns:
        `attempts` delays, in seconds.

    Raises:
        ValueError: for an unknown strategy or a negative number.
    """
    _check("attempts", attempts)
    delays = _delays(strategy, base=base, cap=cap, jitter=jitter, rng=rng or random.Random())
    return list(itertools.islice(delays, attempts))


# --- classifying failures -------------------------------------------------------


def _httpx_class_names(exc: BaseException) -> set[str]:
    """Names of the httpx/httpx2 classes `exc` is an instance of."""
    return {
        cls.__name__
        for cls in type(exc).__mro__
        if cls.__module__.partition(".")[0] in _HTTPX_MODULES
    }


def is_retryable(
    response_or_exc: ResponseLike | BaseException,
    *,
    retry_on_status: Collection[int] = RETRY_STATUSES,
) -> bool:
    """Say whether a retry could fix this response or exception.

    A response is retryable if its status is in `retry_on_status`. An
    exception is retryable if it is an httpx or httpx2 `TransportError`
    (refused connection, timeout, dropped connection...) other than
    `UnsupportedProtocol` and `LocalProtocolError`, which are bugs in the
    request, or an `HTTPStatusError` whose response has a retryable status.
    Both libraries are recognised by class name, so neither is imported.

    Args:
        response_or_exc: A response, or the exception a call raised.
        retry_on_status: The statuses to treat as transient.

    Returns:
        `True` if retrying makes sense.
    """
    if isinstance(response_or_exc, BaseException):
        names = _httpx_class_names(response_or_exc)
        if "HTTPStatusError" in names:
            response = getattr(response_or_exc, "response", None)
            return getattr(response, "status_code", None) in retry_on_status
        return "TransportError" in names and not names & _NOT_TRANSIENT
    return response_or_exc.status_code in retry_on_status


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Turn a `Retry-After` header into a number of seconds to wait.

    The header is either a number of seconds (`"120"`) or an HTTP date
    (`"Wed, 21 Oct 2015 07:28:00 GMT"`); a date in the past means "now".

    Args:
        value: The header value, or `None` if it was absent.
        now: The current time as a POSIX timestamp, for HTTP dates
            (default `time.time()`).

    Returns:
        Seconds to wait (`>= 0`), or `None` if the header is absent or unreadable.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" means UTC with unknown origin (RFC 5322)
        when = when.replace(tzinfo=timezone.utc)
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def _describe(outcome: ResponseLike | BaseException) -> tuple[int | None, str | None]:
    """Return `(status, error)` for a call's outcome; `error` is `None` on success."""
    if isinstance(outcome, BaseException):
        response = getattr(outcome, "response", None)
        status = getattr(response, "status_code", None)
        lines = str(outcome).splitlines()
        error = f"{type(outcome).__name__}: {lines[0]}" if lines else type(outcome).__name__
        return (status if isinstance(status, int) else None), error
    if outcome.status_code < 400:
        return outcome.status_code, None
    reason = getattr(outcome, "reason_phrase", "")
    return outcome.status_code, f"HTTP {outcome.status_code} {reason}".rstrip()


def _retry_after(outcome: ResponseLike | BaseException) -> float | None:
    """The `Retry-After` of a response, or of an `HTTPStatusError`'s response."""
    response = getattr(outcome, "response", None) if isinstance(outcome, BaseException) else outcome
    headers = getattr(response, "headers", None)
    return parse_retry_after(headers.get("Retry-After")) if headers is not None else None


def _safe_to_repeat(outcome: ResponseLike | BaseException) -> bool:
    """Say whether the request behind a response or error may be sent again.

    Yes for an idempotent method, and for a POST or PATCH carrying an
    `Idempotency-Key` or `X-Task-Id` header; also yes when the outcome
    carries no request to look at (a scripted response), as it always was.
    """
    try:
        request = getattr(outcome, "request", None)
    except RuntimeError:  # httpx: "The request instance has not been set"
        return True
    method = getattr(request, "method", None)
    if not isinstance(method, str):
        return True
    if method.upper() in _IDEMPOTENT_METHODS:
        return True
    headers = getattr(request, "headers", None) or {}
    return any(name in headers for name in _KEY_HEADERS)  # httpx headers ignore case


def _give_up(outcome: ResponseLike | BaseException) -> NoReturn:
    """Raise the exception, or the response's own `HTTPStatusError` (httpx or httpx2)."""
    if isinstance(outcome, BaseException):
        raise outcome
    outcome.raise_for_status()
    msg = f"HTTP {outcome.status_code}, but the response's raise_for_status() did not raise"
    raise RuntimeError(msg)


# --- with_backoff --------------------------------------------------------------


def with_backoff(
    func: Callable[[], R],
    *,
    retries: int = 5,
    backoff_factor: float = 0.5,
    jitter: float = 0.2,
    strategy: str = "seed",
    max_delay: float = 30.0,
    deadline: float | None = None,
    retry_on_status: Collection[int] = RETRY_STATUSES,
    respect_retry_after: bool = True,
    idempotent: bool | None = None,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
    clock: Callable[[], float] = time.monotonic,
    on_attempt: Callable[[Attempt], None] | None = None,
    logger: logging.Logger | None = None,
) -> R:
    """Call `func` until it returns a usable response, backing off between tries.

    A 2xx or 3xx response is returned. A status in `retry_on_status`, or a
    transient exception (see `is_retryable`), is retried after a delay
    from `backoff_schedule`; a `Retry-After` header, when present and
    `respect_retry_after` is set, lengthens that delay to at least what the
    server asked for. Every delay is capped at `max_delay`. Any other 4xx
    raises at once: a retry cannot fix a 404. Any other exception propagates.
    A POST without an `Idempotency-Key` (or `X-Task-Id`) header is not
    retried either, since a second one could start a second rebuild: its
    error is raised after the one call (see `idempotent`).

    `func` is called at most `retries + 1` times: one call plus
    `retries` retries. (The seed made `retries` guarded calls and then
    one more whose error escaped unlogged; here the last call's error is the
    one raised, and no call follows the decision to give up.) With a
    `deadline`, it also gives up as soon as the next sleep would end more
    than `deadline` seconds after the first call began, so it never sleeps
    past it.

    Every call is logged on the `labsupport.retry` logger (retries at INFO,
    giving up at WARNING) and passed to `on_attempt` as an `Attempt`.

    Args:
        func: A zero-argument function returning an httpx or httpx2 response,
            e.g. `lambda: client.get(url)`.
        retries: How many times to retry after the first call.
        backoff_factor: The first exponential step (`base` in the schedule).
        jitter: The random extra wait of the `"seed"` strategy.
        strategy: One of `STRATEGIES`.
        max_delay: The longest single sleep, `Retry-After` included.
        deadline: The most time to spend, counted from the first call, or `None`.
        retry_on_status: Statuses to retry.
        respect_retry_after: Whether to honour the server's `Retry-After`.
        idempotent: Whether `func` is safe to call again. `None` decides
            from the request the response or error carries: GET, HEAD,
            OPTIONS, PUT, DELETE and TRACE are, and so is a POST or PATCH
            with an `Idempotency-Key` or `X-Task-Id` header; another POST
            is called once. `True` retries whatever the request; `False`
            never retries.
        sleep: The function that waits (inject a fake in tests).
        rng: The random source for jitter (default: a fresh `random.Random()`).
        clock: A monotonic clock (inject a fake in tests).
        on_attempt: Called with an `Attempt` after every call.
        logger: Where to log (default: `logging.getLogger("labsupport.retry")`).

    Returns:
        The first response with a status below 400.

    Raises:
        httpx.HTTPStatusError: for a non-retryable status, or for the last
            retryable one once retries or time run out (httpx2's own
            `HTTPStatusError` when `func` returns httpx2 responses).
        httpx.TransportError: the last transport error, once retries or time run out.
        ValueError: for a bad argument (unknown strategy, negative number).
    """
    _check("retries", retries)
    if deadline is not None:
        _check("deadline", deadline)
    log = logger or logging.getLogger(__name__)
    delays = _delays(
        strategy, base=backoff_factor, cap=max_delay, jitter=jitter, rng=rng or random.Random()
    )
    first = clock()
    for number in range(1, retries + 2):
        began = clock()
        outcome: R | Exception
        try:
            outcome = func()
        except Exception as exc:
            outcome = exc
        ended = clock()
        status, error = _describe(outcome)
        delay: float | None = None
        if error is None:
            log.debug("Attempt %d succeeded (HTTP %s)", number, status)
        elif not is_retryable(outcome, retry_on_status=retry_on_status):
            log.info("Attempt %d failed (%s); not retryable", number, error)
        elif not (_safe_to_repeat(outcome) if idempotent is None else idempotent):
            log.info(
                "Attempt %d failed (%s); not retried: the request is not idempotent "
                "(send an Idempotency-Key, or pass idempotent=True if it is safe)",
                number,
                error,
            )
        elif number > retries:
            log.warning("Attempt %d failed (%s); giving up after %d calls", number, error, number)
        else:
            delay = next(delays)
            wanted = _retry_after(outcome) if respect_retry_after else None
            if wanted is not None and wanted > delay:
                delay = wanted
            delay = min(delay, max_delay)
            if deadline is not None and (ended - first) + delay > deadline:
                log.warning(
                    "Attempt %d failed (%s); giving up: sleeping %.2f s would pass the "
                    "%.2f s deadline",
                    number,
                    error,
                    delay,
                    deadline,
                )
                delay = None
            else:
                log.info(
                    "Attempt %d of %d failed (%s); retrying in %.2f s",
                    number,
                    retries + 1,
                    error,
                    delay,
                )
        if on_attempt is not None:
            on_attempt(
                Attempt(
                    number=number,
                    started=began - first,
                    elapsed=ended - began,
                    status=status,
                    error=error,
                    delay=delay,
                    will_retry=delay is not None,
                )
            )
        if error is None and not isinstance(outcome, Exception):
            return outcome
        if delay is None:
            _give_up(outcome)
        sleep(delay)
    raise AssertionError("unreachable: the last call returns or raises")  # pragma: no cover


# --- polling a background task ----------------------------------------------------


def poll_task(
    client: SupportsGet | Callable[[], ResponseLike],
    status_url: str | None = None,
    *,
    timeout: float = 30.0,
    interval: float = 0.2,
    max_interval: float = 5.0,
    retries: int = 3,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    rng: random.Random | None = None,
    on_status: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = False,
    logger: logging.Logger | None = None,
) -> dict[str, Any]:
    """Poll a rebuild task's status URL until it completes, fails or times out.

    Each GET goes through `with_backoff`, so a transient 503 or a
    dropped connection is retried (up to `retries` times, never past the
    overall `timeout`) instead of ending the wait; a 404 raises at once.
    The JSON body must have a `"status"`: `"complete"` ends the wait,
    `"failed"`, `"interrupted"` and `"unknown"` (the server forgot the
    task, e.g. after a restart) raise `TaskFailedError`, and anything
    else (`"queued"`, `"running"`) means wait `interval` seconds and
    ask again. A `Retry-After` header on those answers can lengthen the
    wait, up to `max_interval`. The last look happens at the timeout.

    With `progress=True` a `ProgressBar` follows
    the task's `progress` field from 0 to 100 % while it waits (a widget in
    JupyterLab, a text bar on stderr elsewhere) and is closed when the wait
    ends, whatever the outcome.

    Args:
        client: A client with `get(url)` (`httpx.Client`, `TestClient`),
            or a zero-argument function returning a response if
            `status_url` is omitted.
        status_url: The task's status URL, e.g. `f"/recommender/rebuild/{task_id}"`.
        timeout: The most time to wait, in seconds.
        interval: The pause between polls.
        max_interval: The longest pause a `Retry-After` header can ask for.
        retries: Retries for each GET (see `with_backoff`).
        sleep: The function that waits (inject a fake in tests).
        clock: A monotonic clock (inject a fake in tests).
        rng: The random source for retry jitter.
        on_status: Called with every JSON body seen, in order, e.g. to record
            the `queued -> running -> complete` timeline.
        progress: Show a progress bar while waiting.
        logger: Where to log (default: `logging.getLogger("labsupport.retry")`).

    Returns:
        The final JSON body, whose status is `"complete"`.

    Raises:
        TaskFailedError: if the task failed, was interrupted or is unknown.
        TimeoutError: if it is still not complete after `timeout` seconds.
        httpx.HTTPStatusError: for a non-retryable status, or a retryable one
            that outlasted `retries`.
        httpx.TransportError: if the server stays unreachable.
        ValueError: if the body is not a JSON object with a `"status"`, or
            for a bad argument.
        TypeError: if `client` has no `get` (with a URL) or is not callable
            (without one).
    """
    _check("timeout", timeout)
    _check("interval", interval, positive=True)
    fetch = _fetcher(client, status_url)
    log = logger or logging.getLogger(__name__)
    task_id = status_url.rstrip("/").rpartition("/")[2] if status_url else "<unknown>"
    watchers: list[Callable[[dict[str, Any]], None]] = [] if on_status is None else [on_status]
    with contextlib.ExitStack() as cleanup:
        if progress:
            from labsupport.classroom.display import progress_bar  # imports tqdm only when asked

            watchers.append(cleanup.enter_context(progress_bar()))
        started = clock()
        last_status: object = None
        while True:
            remaining = max(0.0, timeout - (clock() - started))
            response = with_backoff(
                fetch,
                retries=retries,
                deadline=remaining,
                sleep=sleep,
                rng=rng,
                clock=clock,
                logger=log,
            )
            payload = _status_json(response, status_url)
            for watch in watchers:
                watch(payload)
            task_id = str(payload.get("task_id", task_id))
            status = payload["status"]
            if status != last_status:
                log.info("Task %s is %s after %.2f s", task_id, status, clock() - started)
                last_status = status
            if status == "complete":
                return payload
            if status in _FAILED_STATUSES:
                raise TaskFailedError(
                    _failure_message(task_id, str(status), payload),
                    task_id=task_id,
                    status=str(status),
                    payload=payload,
                )
            waited = clock() - started
            if waited >= timeout:
                msg = (
                    f"task {task_id} was still {status!r} after waiting {waited:.1f} s "
                    f"(timeout={timeout} s); pass a longer timeout=, or check the server log "
                    "for a rebuild that is stuck or never started"
                )
                raise TimeoutError(msg)
            pause = interval
            wanted = parse_retry_after(response.headers.get("Retry-After"))
            if wanted is not None:
                pause = max(interval, min(wanted, max_interval))
            sleep(min(pause, timeout - waited))


def _failure_message(task_id: str, status: str, payload: Mapping[str, Any]) -> str:
    """One sentence for a task that will never complete: what happened, what to do."""
    reason = payload.get("error") or payload.get("detail") or "the server gave no reason"
    if status == "failed":
        return (
            f"Task {task_id} failed ({reason}); fix what the error names (the data or the "
            "build code), then POST /recommender/rebuild again."
        )
    if status == "interrupted":
        return (
            f"Task {task_id} was interrupted ({reason}); POST /recommender/rebuild again, "
            "with a new Idempotency-Key if you send one."
        )
    return (
        f"The server does not know task {task_id} ({reason}); check the task id, or POST "
        "/recommender/rebuild again if the server restarted."
    )


def _fetcher(
    client: SupportsGet | Callable[[], ResponseLike], status_url: str | None
) -> Callable[[], ResponseLike]:
    if status_url is not None:
        get = getattr(client, "get", None)
        if callable(get):
            return lambda: cast(ResponseLike, get(status_url))
        msg = f"poll_task(client, status_url) needs a client with .get(url); got {client!r}"
        raise TypeError(msg)
    if callable(client):
        return client
    msg = (
        f"poll_task({client!r}) needs a status URL too, e.g. "
        "poll_task(client, f'/recommender/rebuild/{task_id}')"
    )
    raise TypeError(msg)


def _status_json(response: ResponseLike, status_url: str | None) -> dict[str, Any]:
    where = status_url or "the status URL"
    try:
        payload = response.json()
    except ValueError as exc:
        msg = f"{where} did not return JSON (HTTP {response.status_code})"
        raise ValueError(msg) from exc
    if not isinstance(payload, dict) or "status" not in payload:
        msg = f'{where} should return a JSON object with a "status" key; got {payload!r}'
        raise ValueError(msg)
    return payload


# --- contention simulation ------------------------------------------------------


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
    _check("write_time", write_time, positive=True)
    rng = random.Random(seed)
    schedules = [
        _delays(strategy, base=base, cap=cap, jitter=jitter, rng=rng) for _ in range(n_clients)
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
