"""`with_backoff` and its parts: which failures to retry, how long to wait, when to give up.

The package docstring (`labsupport.retry`) tells the whole story, with the same
policy written for stamina and tenacity. All times are in seconds.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from datetime import timezone
from email.utils import parsedate_to_datetime
from typing import Any, NoReturn, Protocol, TypeVar

__all__ = [
    "RETRY_STATUSES",
    "STRATEGIES",
    "Attempt",
    "ResponseLike",
    "backoff_schedule",
    "check_number",
    "is_retryable",
    "iter_delays",
    "parse_retry_after",
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
# Methods whose repetition changes nothing more than the first call did (RFC 9110, 9.2.2).
_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
_KEY_HEADERS = ("Idempotency-Key", "X-Task-Id")
_LOGGER_NAME = "labsupport.retry"  # one logger for the whole package


class ResponseLike(Protocol):
    """What this module needs from an `httpx` or `httpx2` response."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    def raise_for_status(self) -> Any: ...

    def json(self, **kwargs: Any) -> Any: ...


_R = TypeVar("_R", bound=ResponseLike)


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


# --- schedules ---------------------------------------------------------------


def check_number(name: str, value: float, *, positive: bool = False) -> None:
    """Raise a `ValueError` naming `name` unless `value` is `>= 0` (`> 0` if `positive`)."""
    bad = value <= 0 if positive else value < 0
    if bad or math.isnan(value):
        msg = f"{name} must be {'> 0' if positive else '>= 0'}, got {value!r}"
        raise ValueError(msg)


def iter_delays(
    strategy: str, *, base: float, cap: float, jitter: float, rng: random.Random
) -> Iterator[float]:
    """Check the arguments now, then yield the delay before retry 0, 1, 2, ... (endless).

    The arguments and formulas are those of `backoff_schedule`, which takes the
    first `attempts` of these delays; every delay is drawn from `rng`.

    Raises:
        ValueError: for an unknown strategy or a negative number.
    """
    if strategy not in STRATEGIES:
        msg = f"unknown backoff strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}"
        raise ValueError(msg)
    check_number("base (backoff_factor)", base)
    check_number("cap (max_delay)", cap)
    check_number("jitter", jitter)
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
    check_number("attempts", attempts)
    delays = iter_delays(strategy, base=base, cap=cap, jitter=jitter, rng=rng or random.Random())
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
    func: Callable[[], _R],
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
) -> _R:
    """Call `func` until it returns a usable response, backing off between tries.

    A 2xx or 3xx response is returned. A status in `retry_on_status`, or a
    transient exception (see `is_retryable`), is retried after a delay from
    `backoff_schedule`; a `Retry-After` header, when present and
    `respect_retry_after` is set, lengthens that delay to at least what the
    server asked for. Every delay is capped at `max_delay`. Any other 4xx
    raises at once: a retry cannot fix a 404. Any other exception propagates.
    A POST without an `Idempotency-Key` (or `X-Task-Id`) header is not retried
    either, since a second one could start a second rebuild: its error is
    raised after the one call (see `idempotent`).

    `func` is called at most `retries + 1` times: one call plus `retries`
    retries. (The seed made `retries` guarded calls and then one more whose
    error escaped unlogged; here the last call's error is the one raised, and
    no call follows the decision to give up.) With a `deadline`, it also gives
    up as soon as the next sleep would end more than `deadline` seconds after
    the first call began, so it never sleeps past it. Every call is logged on
    the `labsupport.retry` logger (retries at INFO, giving up at WARNING) and
    passed to `on_attempt` as an `Attempt`.

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
        idempotent: Whether `func` is safe to call again. `None` decides from
            the request the response or error carries: GET, HEAD, OPTIONS,
            PUT, DELETE and TRACE are, and so is a POST or PATCH with an
            `Idempotency-Key` or `X-Task-Id` header; another POST is called
            once. `True` retries whatever the request; `False` never retries.
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
    check_number("retries", retries)
    if deadline is not None:
        check_number("deadline", deadline)
    rng = rng or random.Random()
    delays = iter_delays(strategy, base=backoff_factor, cap=max_delay, jitter=jitter, rng=rng)
    policy = _Policy(retries, max_delay, deadline, retry_on_status, respect_retry_after, idempotent)
    return _call_until_done(
        func, policy, delays, sleep=sleep, clock=clock, on_attempt=on_attempt, logger=logger
    )


@dataclass(frozen=True, slots=True)
class _Policy:
    """The arguments of `with_backoff` that decide whether, and how long, to wait."""

    retries: int
    max_delay: float
    deadline: float | None
    retry_on_status: Collection[int]
    respect_retry_after: bool
    idempotent: bool | None


def _call_until_done(
    func: Callable[[], _R],
    policy: _Policy,
    delays: Iterator[float],
    *,
    sleep: Callable[[float], None],
    clock: Callable[[], float],
    on_attempt: Callable[[Attempt], None] | None,
    logger: logging.Logger | None,
) -> _R:
    """The loop of `with_backoff`: call, decide, report the attempt, then return, raise or sleep."""
    log = logger or logging.getLogger(_LOGGER_NAME)
    first = clock()
    for number in range(1, policy.retries + 2):
        began = clock()
        outcome: _R | Exception
        try:
            outcome = func()
        except Exception as exc:
            outcome = exc
        ended = clock()
        status, error = _describe(outcome)
        delay = None
        if error is not None:  # a failure: a delay if another call should follow, else None
            delay = _decide(outcome, error, number, ended - first, policy, delays, log)
        else:
            log.debug("Attempt %d succeeded (HTTP %s)", number, status)
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


def _decide(
    outcome: ResponseLike | BaseException,
    error: str,
    number: int,
    spent: float,
    policy: _Policy,
    delays: Iterator[float],
    log: logging.Logger,
) -> float | None:
    """After failed call `number`, `spent` seconds in: the sleep before the next, or `None`."""
    if not is_retryable(outcome, retry_on_status=policy.retry_on_status):
        log.info("Attempt %d failed (%s); not retryable", number, error)
        return None
    if not (_safe_to_repeat(outcome) if policy.idempotent is None else policy.idempotent):
        log.info(
            "Attempt %d failed (%s); not retried: the request is not idempotent "
            "(send an Idempotency-Key, or pass idempotent=True if it is safe)",
            number,
            error,
        )
        return None
    if number > policy.retries:
        log.warning("Attempt %d failed (%s); giving up after %d calls", number, error, number)
        return None
    delay = next(delays)
    wanted = _retry_after(outcome) if policy.respect_retry_after else None
    if wanted is not None and wanted > delay:
        delay = wanted
    delay = min(delay, policy.max_delay)
    if policy.deadline is not None and spent + delay > policy.deadline:
        log.warning(
            "Attempt %d failed (%s); giving up: sleeping %.2f s would pass the %.2f s deadline",
            number,
            error,
            delay,
            policy.deadline,
        )
        return None
    log.info(
        "Attempt %d of %d failed (%s); retrying in %.2f s", number, policy.retries + 1, error, delay
    )
    return delay
