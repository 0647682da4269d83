"""The scale-out stack (the `redis` extra): state shared by several API processes.

- `cache`: notebook 05's preview of Lab 2's "Redis-ready hooks": the serving
  model and task records (as JSON) in Redis, or in memory when no Redis
  answers. For teaching, not for several processes changing tasks at once.
- `registry`: the real multi-process backend: tasks (as hashes changed only
  by atomic Lua scripts), idempotency keys, leases and models in Redis.
- `builder`: the steps of one build against the registry, and the heartbeat
  that keeps its lease.
- `service`: `RedisRebuildService`, the rebuild service over the registry.
- `rq`: the RQ worker and job that build rebuilds queued by the API.
- `_redis` (connections, errors, TTLs, the model codec) and `_lua` (the
  registry's scripts) are shared internals.

This package builds on the service in `labsupport`; nothing in `labsupport`
imports it, so the service runs without Redis installed.
"""

__all__: list[str] = []
