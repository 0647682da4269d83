"""Task states, the immutable task snapshot and the small types both rebuild services share.

A rebuild moves through `queued -> running -> complete | failed`; a task that
was queued or running when its service shut down (or crashed) becomes
`interrupted`, and one a client stopped (`DELETE`) becomes `canceled`. Final
states never change again.

Every change makes a new `Task`: a reader holds one snapshot and can never
see a status and a timestamp from two different moments. `Task.to_dict` is
the shape the API serves and the SQLite store keeps.

All times are Unix timestamps in seconds (`time.time()`).
"""

from __future__ import annotations

import dataclasses
import enum
import html
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from labsupport.recommender import Model

__all__ = [
    "FINAL_STATES",
    "TRIGGERS",
    "Builder",
    "ServiceClosedError",
    "Task",
    "TaskFinishedError",
    "TaskStatus",
    "counter_ids",
]


class TaskStatus(str, enum.Enum):
    """Where a rebuild task is in its life."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    CANCELED = "canceled"

    def __str__(self) -> str:
        return self.value


FINAL_STATES = frozenset(
    {TaskStatus.COMPLETE, TaskStatus.FAILED, TaskStatus.INTERRUPTED, TaskStatus.CANCELED}
)

TRIGGERS = ("manual", "auto")
"""What started a task: a client's `POST` (`manual`) or the automatic refresh (`auto`)."""


@dataclass(frozen=True)
class Task:
    """An immutable snapshot of one rebuild task.

    The service replaces the snapshot on every change, so a reader can never
    see a status and a timestamp from two different moments.
    """

    task_id: str
    status: TaskStatus
    queued_at: float
    started_at: float | None = None
    finished_at: float | None = None
    progress: float = 0.0
    error: str | None = None
    idempotency_key: str | None = None
    model_version: int | None = None
    # Keys that joined this task while it was queued, each with when it was first used.
    joined_keys: tuple[tuple[str, float], ...] = ()
    trigger: str = "manual"  # one of TRIGGERS

    @property
    def done(self) -> bool:
        """Whether the task is in a final state."""
        return self.status in FINAL_STATES

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict (the shape stored and served by the API)."""
        data = dataclasses.asdict(self)
        data["status"] = self.status.value
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Task:
        """Rebuild a task from `to_dict` output (unknown keys ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in data.items() if k in names}
        fields["status"] = TaskStatus(fields["status"])
        fields["joined_keys"] = tuple((str(k), float(t)) for k, t in fields.get("joined_keys", ()))
        return cls(**fields)

    def _repr_html_(self) -> str:
        # ids and keys can come from clients (X-Task-Id, Idempotency-Key): escape them
        rows = "".join(
            f"<tr><th style='text-align:left'>{k}</th><td>{html.escape(str(v))}</td></tr>"
            for k, v in self.to_dict().items()
            if v is not None and v != ()
        )
        return f"<table>{rows}</table>"


class Builder(Protocol):
    """What a rebuild service calls to build a model (`build_model`'s signature)."""

    def __call__(
        self, ratings: Any, *, version: int, progress: Callable[[float], None]
    ) -> Model: ...


class ServiceClosedError(RuntimeError):
    """Raised by a rebuild service's `request` once its shutdown has begun."""


class TaskFinishedError(RuntimeError):
    """Raised by `cancel` for a task already in a final state (it cannot change any more).

    Attributes:
        task: The task, as it ended.
    """

    def __init__(self, task: Task) -> None:
        super().__init__(
            f"rebuild {task.task_id} is already {task.status}: only a queued or running "
            "rebuild can be canceled"
        )
        self.task = task


def counter_ids(prefix: str = "task-") -> Callable[[], str]:
    """Return a factory of readable, deterministic task ids: `task-1`, `task-2`...

    Notebooks use it so printed ids are the same on every run; the default
    factory makes random UUIDs, which is what a real service wants.
    """
    counter = itertools.count(1)
    return lambda: f"{prefix}{next(counter)}"
