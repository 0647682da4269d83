"""The scale-out stack (the `redis` extra): state shared by several API processes.

- `cache`: the serving model and task records in Redis, or in memory when no
  Redis answers (notebook 05's preview of Lab 2's "Redis-ready hooks").
- `registry`: tasks, idempotency keys, leases and models in Redis, for
  several API processes and builders.
- `service`: `RedisRebuildService`, the rebuild service over that registry.
- `rq`: the RQ worker and job that build rebuilds queued by the API.

This package builds on the service in `labsupport`; nothing in `labsupport`
imports it, so the service runs without Redis installed.
"""

__all__: list[str] = []
