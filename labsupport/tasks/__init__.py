"""The rebuild service: task states, where builds run, and the service that runs them.

- `states`: `TaskStatus`, the immutable `Task` snapshot, `ServiceClosedError`,
  `TaskFinishedError`, the `Builder` protocol and `counter_ids`.
- `executors`: where a build runs: this thread or a `BuildProcess` (a
  long-lived child at low priority), and the shared-memory hand-over.
- `base`: `RebuildServiceProtocol`, what the API and the command line type
  against, and `RebuildServiceBase`, the behaviour every rebuild service
  shares.
- `service`: `RebuildService`, the service of one process.
- `refresh`: `AutoRefresh`, which asks a service for a rebuild by itself once
  enough ratings arrived or the oldest unseen one is old enough.

Every name below can be imported from `labsupport.tasks` directly.
"""

from labsupport.tasks.base import RebuildServiceBase, RebuildServiceProtocol
from labsupport.tasks.executors import EXECUTORS, PROCESS_MIN_RATINGS, BuildProcess, build_where
from labsupport.tasks.refresh import AutoRefresh
from labsupport.tasks.service import RebuildService
from labsupport.tasks.states import (
    FINAL_STATES,
    TRIGGERS,
    Builder,
    ServiceClosedError,
    Task,
    TaskFinishedError,
    TaskStatus,
    counter_ids,
)

__all__ = [
    "EXECUTORS",
    "FINAL_STATES",
    "PROCESS_MIN_RATINGS",
    "TRIGGERS",
    "AutoRefresh",
    "BuildProcess",
    "Builder",
    "RebuildService",
    "RebuildServiceBase",
    "RebuildServiceProtocol",
    "ServiceClosedError",
    "Task",
    "TaskFinishedError",
    "TaskStatus",
    "build_where",
    "counter_ids",
]
