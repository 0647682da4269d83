"""Automatic refresh: a rebuild asked for by the service itself, when the model falls behind.

`AutoRefresh` watches a rebuild service from one daemon thread and asks for a
rebuild (`trigger="auto"`) once `after` ratings have arrived since the serving
model was built, or once the oldest rating the model has not seen is `every`
seconds old, whichever comes first. It asks through the service's `request`,
so automatic and manual rebuilds share one queue and its rules (at most one
running and one queued; a request while one is queued joins it), and it asks
only while nothing is queued or running, at most once per `min_interval`
seconds: a burst of ratings starts a few builds one after another, never a
stack of them. Off unless asked for: `create_app(refresh_after=N,
refresh_every=SECONDS)` starts one with the app and stops it at shutdown.

All times are in seconds.
"""

from __future__ import annotations

import logging
import threading
import time

from labsupport.store import StoreUnavailableError
from labsupport.tasks.base import RebuildServiceProtocol
from labsupport.tasks.states import ServiceClosedError, Task

__all__ = ["AutoRefresh"]

_logger = logging.getLogger("labsupport.tasks")


class AutoRefresh:
    """Ask `service` for a rebuild by itself once the serving model falls behind.

    Args:
        service: The rebuild service to watch and ask.
        after: Rebuild once this many ratings arrived since the model's
            build (`None`: never for this reason).
        every: Rebuild once the oldest rating the model has not seen is
            this old (`None`: never for this reason).
        poll: How often the thread looks, in seconds.
        min_interval: The least time between two automatic rebuilds.

    Raises:
        ValueError: neither `after` nor `every` is given, or one is not positive.
    """

    def __init__(
        self,
        service: RebuildServiceProtocol,
        *,
        after: int | None = None,
        every: float | None = None,
        poll: float = 0.2,
        min_interval: float = 1.0,
    ) -> None:
        if after is None and every is None:
            raise ValueError("give `after` (ratings), `every` (seconds), or both")
        if (after is not None and after < 1) or (every is not None and every <= 0):
            raise ValueError(f"after and every must be positive, got {after!r} and {every!r}")
        self.service = service
        self.after = after
        self.every = every
        self.poll = poll
        self.min_interval = min_interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_start = -float("inf")

    @classmethod
    def if_asked(
        cls, service: RebuildServiceProtocol, *, after: int | None, every: float | None
    ) -> AutoRefresh | None:
        """An `AutoRefresh` when `after` or `every` is given, else `None` (refresh off)."""
        if after is None and every is None:
            return None
        return cls(service, after=after, every=every)

    def due(self) -> str | None:
        """Why a rebuild is due now (`"ratings"` or `"staleness"`), or `None`."""
        if self.after is not None and self.service.ratings_since_build() >= self.after:
            return "ratings"
        if self.every is not None:
            age = self.service.staleness_seconds()
            if age is not None and age >= self.every:
                return "staleness"
        return None

    def check(self) -> Task | None:
        """Look once: start an automatic rebuild if one is due; return it, else `None`.

        Nothing starts while a rebuild is queued or running, within
        `min_interval` of the last automatic start, or once the service
        stopped accepting rebuilds.
        """
        now = time.monotonic()
        if not self.service.accepting or now - self._last_start < self.min_interval:
            return None
        if any(not task.done for task in self.service.tasks()):
            return None  # the build under way (or queued) will catch up first
        reason = self.due()
        if reason is None:
            return None
        try:
            task, created = self.service.request(trigger="auto")
        except ServiceClosedError:
            return None
        if not created:
            return None  # a client's request got there first: it joins the same queue
        self._last_start = now
        _logger.info("automatic rebuild %s: %s", task.task_id, reason)
        self.service.start(task.task_id)
        return task

    def start(self) -> None:
        """Start watching, on a daemon thread (no-op if already watching)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="labsupport-refresh", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop watching; wait up to `timeout` seconds for the thread to end."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.poll):
            try:
                self.check()
            except StoreUnavailableError as exc:  # the database server is away: it passes
                _logger.warning("automatic refresh check skipped: %s", exc)
            except Exception:  # anything else is a bug: log it whole, and look again later
                _logger.exception("automatic refresh check failed")
