"""Self-checks for the exercises of notebook 04 (retries and backoff).

Each check calls the student's function with scripted responses, a fake clock
and a seeded random source, so nothing waits and nothing touches the network.
It prints a confirmation when the answer is right and raises
`CheckFailed` with one sentence of help when not.
All times are in seconds.
"""

from __future__ import annotations

import numbers
import random
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from labsupport.classroom.checks import CheckFailed, passed, require

__all__ = [
    "STATUS_TABLE",
    "check_deadline",
    "check_fixed_helper",
    "check_full_jitter",
    "check_should_retry",
]

STATUS_TABLE: dict[int, tuple[bool, str]] = {
    200: (False, "it succeeded: there is nothing to retry"),
    201: (False, "it succeeded: there is nothing to retry"),
    400: (False, "the request is malformed, and the same bytes will be malformed again"),
    401: (False, "the credentials are missing or wrong; send new ones instead"),
    403: (False, "you are not allowed, and asking again does not change that"),
    404: (False, "the resource does not exist; asking again cannot create it"),
    405: (False, "the method is wrong for this URL"),
    408: (True, "the server gave up waiting for the request; a fresh attempt can work"),
    413: (False, "the body is too large, and it will still be too large"),
    422: (False, "the body fails validation, and the same body fails again"),
    429: (True, "you are rate-limited: wait (honour Retry-After) and try again"),
    500: (True, "an unexpected server fault, often transient"),
    501: (False, "the server does not implement this at all"),
    502: (True, "a proxy could not reach the server: usually transient"),
    503: (True, "the server is overloaded or restarting: try later"),
    504: (True, "a proxy timed out waiting for the server: usually transient"),
}
"""Which statuses a client should retry, and why: `{status: (retry?, reason)}`."""

_URL = "http://movies.test/recommender/rebuild/task-1"


class _FakeTime:
    """A clock that moves only when someone sleeps or a scripted call costs time."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self.sleep_ends: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(float(seconds))
        self.now += max(0.0, float(seconds))
        self.sleep_ends.append(self.now)


class _Script:
    """Return (or raise) scripted outcomes in order; the last one repeats."""

    def __init__(
        self, *outcomes: int | Exception, fake: _FakeTime | None = None, cost: float = 0.0
    ) -> None:
        self.outcomes = outcomes
        self.fake = fake
        self.cost = cost
        self.calls = 0

    def __call__(self) -> httpx.Response:
        outcome = self.outcomes[min(self.calls, len(self.outcomes) - 1)]
        self.calls += 1
        if self.fake is not None:
            self.fake.now += self.cost
        if isinstance(outcome, Exception):
            raise outcome
        return httpx.Response(outcome, request=httpx.Request("GET", _URL))


def _connect_error() -> httpx.ConnectError:
    return httpx.ConnectError("connection refused", request=httpx.Request("GET", _URL))


def _describe(outcomes: Sequence[int | Exception]) -> str:
    names = [type(o).__name__ if isinstance(o, Exception) else str(o) for o in outcomes]
    return ", ".join(names) + " (the last one repeats)"


def _run(
    helper: Callable[..., Any], script: _Script, fake: _FakeTime, **options: Any
) -> tuple[str, Any]:
    """Call `helper`; return `("returned", value)` or `("raised", exception)`."""
    try:
        return "returned", helper(script, sleep=fake.sleep, rng=random.Random(0), **options)
    except CheckFailed:
        raise
    except Exception as exc:
        return "raised", exc


def _status_of(kind: str, value: Any) -> int | None:
    if kind == "returned":
        return getattr(value, "status_code", None)
    return getattr(getattr(value, "response", None), "status_code", None)


# --- ★ which statuses to retry -----------------------------------------------------


def check_should_retry(should_retry: Callable[[int], bool]) -> None:
    """Check `should_retry(status)` against `STATUS_TABLE`.

    Args:
        should_retry: The student's function: a status code in, `True` or `False` out.

    Raises:
        CheckFailed: at the first status where the answer differs from the table.
    """
    for status, (expected, reason) in STATUS_TABLE.items():
        got = should_retry(status)
        phrase = httpx.codes.get_reason_phrase(status)
        require(
            isinstance(got, bool),
            f"should_retry({status}) returned {got!r}; return True or False "
            f"(for example `return status in {{...}}`).",
        )
        verb = "be retried" if expected else "not be retried"
        require(
            got is expected,
            f"should_retry({status}) returned {got}, but {status} {phrase} should {verb}: "
            f"{reason}.",
        )
    passed(f"should_retry agrees with the table on all {len(STATUS_TABLE)} statuses")


# --- ★★ full jitter --------------------------------------------------------------------


def check_full_jitter(full_jitter: Callable[..., float]) -> None:
    """Check `full_jitter(n, *, base, cap, rng)`: `uniform(0, min(cap, base * 2**n))`.

    Draws 400 delays for each retry `n = 0..7` from a seeded `rng` and checks
    they stay within `[0, min(cap, base * 2**n)]`, cover that range (some
    below 10 % of it, some above 90 %), average about half of it, and repeat
    exactly with the same seed.

    Args:
        full_jitter: The student's function.

    Raises:
        CheckFailed: with what went wrong for the first retry number that fails.
    """
    base, cap, draws = 0.5, 10.0, 400
    for n in range(8):
        ceiling = min(cap, base * 2**n)
        rng = random.Random(n)
        answers = [full_jitter(n, base=base, cap=cap, rng=rng) for _ in range(draws)]
        wrong = [a for a in answers if not isinstance(a, numbers.Real)]
        if wrong:
            msg = (
                f"For retry {n} full_jitter returned {wrong[0]!r}: return the delay in "
                "seconds, a number such as rng.uniform(0, ceiling)."
            )
            raise CheckFailed(msg)
        delays = [float(a) for a in answers]
        low, high, mean = min(delays), max(delays), sum(delays) / draws
        require(
            low >= 0 and high <= ceiling,
            f"For retry {n} (base={base}, cap={cap}) the delays ranged from {low:.3f} to "
            f"{high:.3f} s, but full jitter stays within [0, min(cap, base * 2**n)] = "
            f"[0, {ceiling:g}]: check the exponent and the cap.",
        )
        require(
            low < 0.1 * ceiling and high > 0.9 * ceiling,
            f"For retry {n} the delays only covered {low:.3f}..{high:.3f} s of [0, {ceiling:g}]: "
            "full jitter draws uniformly from the whole range, starting at 0.",
        )
        require(
            abs(mean - ceiling / 2) < 0.1 * ceiling,
            f"For retry {n} the delays averaged {mean:.3f} s, not about {ceiling / 2:g} s "
            "(half the ceiling): draw with rng.uniform(0, ceiling).",
        )
    first = [full_jitter(3, base=base, cap=cap, rng=random.Random(7)) for _ in range(5)]
    again = [full_jitter(3, base=base, cap=cap, rng=random.Random(7)) for _ in range(5)]
    require(
        first == again,
        "Two runs with rng=random.Random(7) gave different delays: draw from the rng "
        "you are given, never from the random module itself.",
    )
    passed("full_jitter stays in [0, min(cap, base * 2**n)], covers it evenly and is repeatable")


# --- ★★ the seed's helper, fixed ---------------------------------------------------------

_FIXED_CASES: tuple[tuple[tuple[int | Exception, ...], str, int | None, int], ...] = (
    # (script, "returned"/"raised", final status, calls) with retries=3
    ((503, 503, 200), "returned", 200, 3),
    ((404,), "raised", 404, 1),
    ((422,), "raised", 422, 1),
    ((429, 200), "returned", 200, 2),
    ((503,), "raised", 503, 4),
)


def check_fixed_helper(helper: Callable[..., Any]) -> None:
    """Check a fixed version of the seed's `with_backoff` against scripted answers.

    The helper is called as `helper(func, retries=3, backoff_factor=0.01,
    jitter=0.0, sleep=..., rng=...)`. It must return the first answer below
    400, raise `httpx.HTTPStatusError` at once for a 4xx other than 408 and
    429, retry 408, 429, 5xx and transport errors, make at most
    `retries + 1` calls, raise the last error when it gives up, and sleep
    only between calls (so one sleep fewer than calls).

    Args:
        helper: The student's function.

    Raises:
        CheckFailed: naming the script that went wrong and what to change.
    """
    options = {"retries": 3, "backoff_factor": 0.01, "jitter": 0.0}
    cases: list[tuple[tuple[int | Exception, ...], str, int | None, int]] = [
        *_FIXED_CASES,
        ((_connect_error(), 200), "returned", 200, 2),
    ]
    for outcomes, want_kind, want_status, want_calls in cases:
        _check_fixed_case(helper, outcomes, want_kind, want_status, want_calls, options)
    passed(
        "the fixed helper raises 4xx at once, retries 408/429/5xx/transport errors, "
        "and makes at most retries + 1 calls"
    )


def _check_fixed_case(
    helper: Callable[..., Any],
    outcomes: tuple[int | Exception, ...],
    want_kind: str,
    want_status: int | None,
    want_calls: int,
    options: dict[str, float],
) -> None:
    """Run `helper` on one scripted case of `check_fixed_helper`; raise `CheckFailed` if wrong."""
    fake = _FakeTime()
    script = _Script(*outcomes, fake=fake)
    kind, value = _run(helper, script, fake, **options)
    status = _status_of(kind, value)
    where = f"With answers {_describe(outcomes)} and retries=3"
    if script.calls > 1 and not fake.sleeps:
        msg = (
            f"{where} the helper never called the sleep you passed in: "
            "use sleep(...), not time.sleep(...)."
        )
        raise CheckFailed(msg)
    if kind == "returned" and want_kind == "raised" and script.calls > 1 and status == 404:
        msg = (
            f"{where} the helper made {script.calls} calls and then returned the 404: a 4xx "
            "other than 408/429 means the request is wrong, so raise at once, and the last "
            "call needs raise_for_status() too."
        )
        raise CheckFailed(msg)
    if kind == "returned" and want_kind == "raised":
        msg = (
            f"{where} the helper returned HTTP {status} after {script.calls} calls instead of "
            "raising: the last call needs raise_for_status() too, so the caller sees the error."
        )
        raise CheckFailed(msg)
    if kind == "raised" and want_kind == "returned":
        msg = (
            f"{where} the helper raised {type(value).__name__} instead of returning the 200: "
            "retry 408, 429, the 5xx and transport errors such as httpx.ConnectError."
        )
        raise CheckFailed(msg)
    require(
        kind == "returned" or isinstance(value, httpx.HTTPStatusError),
        f"{where} the helper raised {type(value).__name__}: {value}; "
        "let the last httpx.HTTPStatusError propagate instead.",
    )
    if want_status is not None and want_status < 500 and want_kind == "raised":
        require(
            script.calls == 1,
            f"{where} the helper made {script.calls} calls: a {want_status} means the request "
            "itself is wrong, so raise at once (retry only 408, 429 and 5xx).",
        )
    require(
        script.calls == want_calls,
        f"{where} the helper made {script.calls} calls, expected {want_calls}: one call plus "
        "at most `retries` retries, and no extra unguarded call at the end.",
    )
    require(
        status == want_status,
        f"{where} the helper ended with HTTP {status}, expected {want_status}.",
    )
    require(
        len(fake.sleeps) == script.calls - 1,
        f"{where} the helper slept {len(fake.sleeps)} times for {script.calls} calls: sleep "
        "only between two calls, never after the last one.",
    )


# --- ★★★ a total deadline -------------------------------------------------------------

# (script, cost of each call, deadline, expected calls, expected final status).
# retries=10, backoff_factor=1, jitter=0: the planned sleeps are 1, 2, 4, 8, ... s.
_DEADLINE_CASES: tuple[tuple[tuple[int, ...], float, float | None, int, int], ...] = (
    # calls at t=0, 1, 3; the next sleep (4 s) would end at 7 > 3.8: give up.
    ((503,), 0.0, 3.8, 3, 503),
    # each call takes 0.5 s: call 2 ends at 2.0; sleeping 2 s more would end at 4.0 > 3.8.
    ((503,), 0.5, 3.8, 2, 503),
    # plenty of time: the answer comes on the second call.
    ((503, 200), 0.0, 10.0, 2, 200),
    # no deadline: one call and `retries` retries, as before.
    ((503,), 0.0, None, 11, 503),
)


def check_deadline(helper: Callable[..., Any]) -> None:
    """Check a retry helper with a total `deadline`, using a fake clock.

    The helper is called as `helper(func, retries=10, backoff_factor=1.0,
    jitter=0.0, deadline=..., sleep=..., clock=..., rng=...)`, where the
    planned sleeps are 1, 2, 4, ... s and each scripted call may itself take
    time on the fake clock. It must give up (raising the last error) as soon
    as the next sleep would end more than `deadline` seconds after the first
    call began, never sleep past the deadline, and behave as before when
    `deadline` is `None`. `labsupport.retry.with_backoff` passes.

    Args:
        helper: The student's function.

    Raises:
        CheckFailed: naming the case that went wrong and what to look at.
    """
    probe, fake = _Script(503, 200), _FakeTime()
    kind, value = _run(
        helper,
        probe,
        fake,
        retries=10,
        backoff_factor=0.001,
        jitter=0.0,
        deadline=10.0,
        clock=fake.clock,
    )
    require(
        kind == "returned",
        f"With answers 503, 200 the helper raised {type(value).__name__}: {value}; it should "
        "retry the 503 and return the 200.",
    )
    require(
        probe.calls < 2 or bool(fake.sleeps),
        "The helper retried without calling the sleep you passed in: use sleep(...) and "
        "clock() from the arguments, not time.sleep() or time.monotonic().",
    )
    for outcomes, cost, deadline, want_calls, want_status in _DEADLINE_CASES:
        fake = _FakeTime()
        script = _Script(*outcomes, fake=fake, cost=cost)
        kind, value = _run(
            helper,
            script,
            fake,
            retries=10,
            backoff_factor=1.0,
            jitter=0.0,
            deadline=deadline,
            clock=fake.clock,
        )
        status = _status_of(kind, value)
        where = (
            f"With answers {_describe(outcomes)}, calls taking {cost:g} s each and "
            f"deadline={deadline}"
        )
        require(
            kind == "returned" or isinstance(value, httpx.HTTPStatusError),
            f"{where} the helper raised {type(value).__name__}: {value}; when time runs out, "
            "raise the last httpx.HTTPStatusError instead.",
        )
        if deadline is not None:
            late = [end for end in fake.sleep_ends if end > deadline + 1e-9]
            if late:
                msg = (
                    f"{where} a sleep ended at t={late[0]:g} s, past the deadline: before "
                    "sleeping, check that clock() - start + delay <= deadline, with the clock "
                    "you are given."
                )
                raise CheckFailed(msg)
        require(
            script.calls == want_calls,
            f"{where} the helper made {script.calls} calls, expected {want_calls}: measure the "
            "time with clock() (calls take time too), counted from just before the first call.",
        )
        require(
            status == want_status,
            f"{where} the helper ended with HTTP {status}, expected {want_status}.",
        )
    passed("the deadline stops retries before a sleep would overrun it, and None means no limit")
