"""One build against the Redis task registry, and the heartbeat that keeps its lease.

The same steps run in an API process's build thread
(`labsupport.scaleout.service`) and in an RQ job (`labsupport.scaleout.rq`):
`run_build` claims the task's lease, waits while another build runs, moves
the task to `running`, builds, and publishes the model in one atomic step. A
`Heartbeat` thread extends the lease meanwhile: when the builder dies, the
beats stop, the lease lapses, and the next reader of the task settles it
(see `labsupport.scaleout.registry`).

All times are in seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from labsupport.recommender import Model
from labsupport.scaleout.registry import RedisTaskRegistry
from labsupport.store import Store
from labsupport.tasks.base import build_steps
from labsupport.tasks.states import Builder, TaskStatus

__all__ = ["Heartbeat", "run_build"]

logger = logging.getLogger(__name__)


class _LeaseLostError(RuntimeError):
    """Raised inside a build whose task is no longer this builder's to finish."""


def run_build(
    registry: RedisTaskRegistry,
    task_id: str,
    owner: str,
    *,
    store: Store,
    build: Builder,
    build_delay: float = 0.0,
    should_stop: Callable[[], bool] = lambda: False,
    max_wait: float = 3600.0,
    poll: float = 0.1,
) -> Model | None:
    """Build the model for one queued task, publish it, and return it.

    The same steps run in an API process's build thread and in an RQ
    job: claim the task's lease, wait while another build runs (at most
    `max_wait` seconds, checking that build is still alive), move the task
    to `running`, read the ratings, build, publish. The caller keeps the
    lease alive with `RedisTaskRegistry.heartbeat` meanwhile.

    Failures are recorded, not raised: a build that raises marks its task
    `failed` and the previous model keeps serving. A build whose task was
    settled by someone else meanwhile (interrupted at shutdown, or its lease
    lapsed) stops at its next progress report and publishes nothing.

    Args:
        registry: Where the task lives.
        task_id: The queued task to build.
        owner: This builder's lease token.
        store: Where the ratings are read from.
        build: The model builder (`build_model`'s signature).
        build_delay: Extra seconds spent before building (a teaching knob).
        should_stop: Checked while waiting to start: `True` gives up, leaving
            the task for its owner to settle (a service shutting down).
        max_wait: Longest wait for another build to finish, then `failed`.
        poll: Seconds between tries while waiting.

    Returns:
        The published model, or `None` when nothing was published.
    """
    version = _wait_to_start(registry, task_id, owner, should_stop, max_wait, poll)
    if version is None:
        return None

    def report(fraction: float) -> None:
        if not registry.progress(task_id, owner, fraction):
            raise _LeaseLostError(f"rebuild {task_id} is no longer this builder's to finish")

    try:
        built = build_steps(
            store, build, version=lambda: version, progress=report, build_delay=build_delay
        )
        assert built is not None, "nothing stops these steps but an exception"
        model, ratings_version = built
        if registry.publish(task_id, owner, model, ratings_version):
            return model
        logger.warning("rebuild %s finished but was no longer ours: not published", task_id)
    except _LeaseLostError as exc:
        logger.warning("%s: build stopped", exc)
    except Exception as exc:  # any build failure is recorded, not raised
        logger.exception("rebuild %s failed", task_id)
        registry.settle(task_id, TaskStatus.FAILED, f"{type(exc).__name__}: {exc}", owner=owner)
    return None


def _wait_to_start(
    registry: RedisTaskRegistry,
    task_id: str,
    owner: str,
    should_stop: Callable[[], bool],
    max_wait: float,
    poll: float,
) -> int | None:
    """Claim the task and move it to `running`; return its model's version, or `None`."""
    if not registry.claim(task_id, owner):
        return None  # no longer queued: settled by someone else
    deadline = time.monotonic() + max_wait
    while True:
        verdict, detail = registry.try_start(task_id, owner)
        if verdict == "start":
            return int(detail)
        if verdict == "gone" or should_stop():
            return None
        registry.reap(detail)  # the running build may have died: then it is settled
        if time.monotonic() > deadline:
            error = f"waited {max_wait:g} s for rebuild {detail} to finish; ask again later"
            registry.settle(task_id, TaskStatus.FAILED, error, owner=owner)
            return None
        time.sleep(poll)


class Heartbeat:
    """Keep leases alive from a daemon thread, every quarter of the lease TTL.

    Use as a context manager around the work. `lost` is set when a lease
    could not be extended (someone settled the task, or it lapsed).

    Args:
        registry: Where the leases live.
        owner: The lease token.
        task_ids: Returns the task ids to keep alive, read on every beat.
        on_beat: Called at each beat, before the leases are extended (an RQ
            job checks there that its worker is still alive).
    """

    def __init__(
        self,
        registry: RedisTaskRegistry,
        owner: str,
        task_ids: Callable[[], list[str]],
        *,
        on_beat: Callable[[], None] = lambda: None,
    ) -> None:
        self.registry = registry
        self.owner = owner
        self.task_ids = task_ids
        self.on_beat = on_beat
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="labsupport-lease", daemon=True)

    def __enter__(self) -> Heartbeat:
        self.start()
        return self

    def start(self) -> None:
        """Start beating (once)."""
        self._thread.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop beating and wait for the thread (at most a few seconds)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _run(self) -> None:
        import redis

        while not self._stop.wait(self.registry.lease_ttl / 4):
            self.on_beat()
            try:
                for task_id in self.task_ids():
                    if not self.registry.heartbeat(task_id, self.owner):
                        self.lost.set()
            except redis.RedisError as exc:  # the lease may lapse; the next beat tells
                logger.warning("lease heartbeat failed: %s", exc)
