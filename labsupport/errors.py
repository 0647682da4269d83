"""Errors a student can cause, each explained in one sentence.

A `LabError` says what happened and what to do about it. In a notebook
IPython shows just that sentence (through `_render_traceback_`), not a
traceback that winds through uvicorn, redis-py or numpy; outside a notebook it
is an ordinary exception with an ordinary traceback.

Raise the most specific built-in base as well, so callers that already catch
`OSError` or `RuntimeError` keep working:

    class ServerStartError(LabError, RuntimeError): ...

Every exception class in the package, with the module to import it from and
its built-in base (a test keeps this tree complete):

    Exception
    ├── LabError                                   labsupport.errors
    │   ├── ServerStartError(RuntimeError)         labsupport.server
    │   ├── TaskFailedError(RuntimeError)          labsupport.retry
    │   ├── MovieLensNotFoundError(FileNotFoundError)  labsupport.data
    │   ├── LabAppExistsError(FileExistsError)     labsupport.labapp
    │   ├── RedisUnavailableError(ConnectionError) labsupport.scaleout.cache
    │   ├── MissingRedisError(ImportError)         labsupport.scaleout.registry
    │   ├── MissingDatabaseError(FileNotFoundError)    labsupport.scaleout.rq
    │   ├── StoreUnavailableError(ConnectionError) labsupport.store
    │   ├── MissingPostgresError(ImportError)      labsupport.store
    │   ├── NotDefinedYetError(NameError)          labsupport.classroom.need
    │   ├── CheckFailed(AssertionError)            labsupport.classroom.checks
    │   └── Unsolved                               labsupport.classroom.checks
    ├── ServiceClosedError(RuntimeError)           labsupport.tasks
    ├── TaskFinishedError(RuntimeError)            labsupport.tasks
    ├── UnknownMovieError(LookupError)             labsupport.store
    └── _LeaseLostError(RuntimeError)              labsupport.scaleout.builder (internal)

What each means:

- `ServerStartError`: the port is taken, or the server would not start.
- `TaskFailedError`: a polled rebuild failed, was interrupted or is unknown.
- `MovieLensNotFoundError`: no MovieLens copy where it was looked for.
- `LabAppExistsError`: the folder for a fresh lab app already holds files.
- `RedisUnavailableError`: no Redis answers at the URL.
- `MissingRedisError`: the `redis` extra is not installed.
- `MissingDatabaseError`: the RQ worker's SQLite file is missing.
- `StoreUnavailableError`: the database server (PostgreSQL) is out of reach;
  the API answers `503` with `Retry-After` until it is back.
- `MissingPostgresError`: the `postgres` extra is not installed.
- `NotDefinedYetError`: a notebook cell was run before the cells it needs.
- `CheckFailed`: an exercise answer is not right yet; the message is the hint.
- `Unsolved`: a student-edition exercise cell still holds its stub (Run All
  stops there, saying so).
- `ServiceClosedError`: a rebuild was asked of a service that is shutting down
  (the API answers `503` with `Retry-After`).
- `TaskFinishedError`: a cancel of a rebuild already in a final state (the API
  answers 409).
- `UnknownMovieError`: a rating for a movie the store does not hold (the API
  answers `404`).
- `_LeaseLostError`: a Redis build lost its lease to another builder; the
  builder stops and publishes nothing.
"""

from __future__ import annotations

__all__ = ["LabError"]


class LabError(Exception):
    """An error with a one-sentence, student-facing message."""

    def _render_traceback_(self) -> list[str]:
        """What IPython prints instead of the traceback: the class name and the sentence."""
        return [f"\x1b[1;31m{type(self).__name__}\x1b[0m: {self}"]
