"""A load generator: a few client threads GET a server over and over, and every request is timed.

`record_requests` is how notebook 01 measures what a rebuild does to *other*
requests: each client sends a request, waits `interval` seconds after the
answer, and so on, while one extra request (such as `POST /rebuild`) goes out
part-way through. It returns one row per request (columns `COLUMNS`), which
`labsupport.classroom.demos.DemoRun` judges and
`labsupport.classroom.plots.timeline.request_gantt` draws. All times are in
seconds, measured with `time.perf_counter`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pandas as pd

__all__ = ["COLUMNS", "record_requests"]

COLUMNS = ("mode", "client", "path", "start", "end", "latency", "status")
"""The columns of every requests DataFrame: those of `record_requests`, and of the demos."""


def record_requests(
    url: str,
    *,
    path: str = "/ping",
    n_clients: int = 3,
    duration: float = 1.5,
    n_requests: int = 200,
    interval: float = 0.05,
    during: str | Callable[[], Any] | None = None,
    during_at: float = 0.3,
    until: Callable[[], bool] | None = None,
    max_duration: float = 10.0,
    timeout: float = 10.0,
    origin: float | None = None,
) -> pd.DataFrame:
    """Send GET requests from a few client threads and time every one.

    Each client (its own thread and `httpx.Client`) sends `GET url+path`,
    waits for the answer, pauses `interval` seconds, and repeats. Clients
    start `interval / n_clients` apart. A client stops starting new
    requests once `duration` has passed and `until()` (if given) is true,
    or after `n_requests` requests, or after `max_duration` whatever
    `until` says; a request already sent is always waited for (at most
    `timeout`). Failed requests are kept, with status 0.

    Args:
        url: The server's base URL.
        path: The path every client GETs.
        n_clients: Number of client threads.
        duration: Minimum length of the recording.
        n_requests: Cap on the requests each client sends.
        interval: Pause after each answer before the next request.
        during: Something to do once, `during_at` seconds in, from its own
            thread and timed like a request: a path to POST (such as
            `"/rebuild"`) or any function of no arguments.
        during_at: When to do `during`.
        until: Keep recording after `duration` until this returns true
            (for example until a rebuild has finished).
        max_duration: Hard cap on the recording.
        timeout: Timeout of each request.
        origin: The `time.perf_counter` reading that counts as time 0
            (the start of the recording by default).

    Returns:
        One row per request, in start order, with the columns of
        `COLUMNS` (`mode` is empty): `client` is `"client 1"`...
        or `"POST /rebuild"` for `during`; `start`, `end` and
        `latency` in seconds; `status` the HTTP status (0: no answer).
        `df.attrs["origin"]` holds the origin.

    Raises:
        ValueError: if a count or time is out of range.
    """
    if n_clients < 1 or n_requests < 1:
        msg = f"need at least one client and one request, got {n_clients} and {n_requests}"
        raise ValueError(msg)
    if not 0 < duration <= max_duration or interval < 0 or during_at < 0:
        msg = "need 0 < duration <= max_duration, interval >= 0 and during_at >= 0"
        raise ValueError(msg)
    load = _Load(path, n_clients, duration, n_requests, interval, during, during_at, until)
    recording = _Recording(url.rstrip("/"), load, max_duration, timeout=timeout, origin=origin)
    rows = recording.run()
    frame = pd.DataFrame(rows, columns=list(COLUMNS)).assign(mode="")
    frame = frame.sort_values("start", ignore_index=True)
    frame.attrs["origin"] = recording.zero
    return frame


@dataclass(frozen=True, slots=True)
class _Load:
    """What the clients of one `record_requests` call do (its arguments, checked)."""

    path: str
    n_clients: int
    duration: float
    n_requests: int
    interval: float
    during: str | Callable[[], Any] | None
    during_at: float
    until: Callable[[], bool] | None


class _Recording:
    """One run of `record_requests`: its HTTP clients, its clock and the rows it timed."""

    def __init__(
        self,
        base: str,
        load: _Load,
        max_duration: float,
        *,
        timeout: float,
        origin: float | None,
    ) -> None:
        self.base, self.load, self.max_duration, self.timeout = base, load, max_duration, timeout
        self.rows: list[dict[str, Any]] = []
        self._rows_lock = threading.Lock()
        # Clients are made before the clock starts: making one costs tens of milliseconds.
        self.clients = [httpx.Client(timeout=timeout) for _ in range(load.n_clients + 1)]
        self.t0 = time.perf_counter()
        self.zero = self.t0 if origin is None else origin

    def run(self) -> list[dict[str, Any]]:
        """Start every client (and `during`), wait for them, close the clients; return the rows."""
        load = self.load
        threads = [
            threading.Thread(target=self._client_loop, args=(i,), daemon=True)
            for i in range(load.n_clients)
        ]
        if load.during is not None:
            threads.append(threading.Thread(target=self._do_during, daemon=True))
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(self.max_duration + self.timeout + load.interval + load.during_at)
        finally:
            for client in self.clients:
                client.close()
        return self.rows

    def _timed(self, client: str, label: str, call: Callable[[], Any]) -> None:
        start = time.perf_counter()
        try:
            status = int(getattr(call(), "status_code", 200))
        except httpx.HTTPError:
            status = 0
        end = time.perf_counter()
        row = {"client": client, "path": label, "start": start - self.zero, "end": end - self.zero}
        with self._rows_lock:
            self.rows.append(row | {"latency": end - start, "status": status})

    def _keep_going(self, sent: int) -> bool:
        elapsed = time.perf_counter() - self.t0
        if sent >= self.load.n_requests or elapsed >= self.max_duration:
            return False
        until = self.load.until
        return elapsed < self.load.duration or (until is not None and not until())

    def _client_loop(self, number: int) -> None:
        load, client = self.load, self.clients[number]
        time.sleep(load.interval * number / load.n_clients)
        sent = 0
        while self._keep_going(sent):
            self._timed(
                f"client {number + 1}", load.path, lambda: client.get(self.base + load.path)
            )
            sent += 1
            time.sleep(load.interval)

    def _do_during(self) -> None:
        during = self.load.during
        time.sleep(self.load.during_at)
        if callable(during):
            self._timed("during", getattr(during, "__name__", "during"), during)
        else:
            post = self.clients[-1].post
            self._timed(f"POST {during}", str(during), lambda: post(self.base + str(during)))
