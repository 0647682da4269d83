"""Errors a student can cause, each explained in one sentence.

A `LabError` says what happened and what to do about it. In a notebook
IPython shows just that sentence (through `_render_traceback_`), not a
traceback that winds through uvicorn, redis-py or numpy; outside a notebook it
is an ordinary exception with an ordinary traceback.

Raise the most specific built-in base as well, so callers that already catch
`OSError` or `RuntimeError` keep working:

    class ServerStartError(LabError, RuntimeError): ...

The ones in the package: `server.ServerStartError` (port taken or server
already running), `workbook.NotDefinedYetError` (a cell run before the ones
it needs), `rediscache.RedisUnavailableError` (no Redis at the URL),
`redisbackend.MissingRedisError` (the `redis` extra is not installed),
`worker.MissingDatabaseError`, `data.MovieLensNotFoundError`,
`retry.TaskFailedError` and `checks.CheckFailed`.
"""

from __future__ import annotations

__all__ = ["LabError"]


class LabError(Exception):
    """An error with a one-sentence, student-facing message."""

    def _render_traceback_(self) -> list[str]:
        """What IPython prints instead of the traceback: the class name and the sentence."""
        return [f"\x1b[1;31m{type(self).__name__}\x1b[0m: {self}"]
