"""The Lua scripts behind `RedisTaskRegistry`: every change of a task's state.

Redis runs each script atomically, with nothing else in between, and each
checks the state it expects before it changes anything (a compare-and-set),
so a task only moves forward and a final state never changes. The registry
registers them all once, by the names in `SCRIPTS`.

ARGV values arrive as strings; `false` is what `redis.call` returns for a
missing key or field. Every script builds key names from prefixes passed in
KEYS, so this needs one Redis server, not a Redis Cluster. TTLs arrive in
milliseconds.
"""

__all__ = ["SCRIPTS"]


_REQUEST = """
-- Return the task an idempotency key made, join the queued task, or queue a new one.
-- A key whose task was canceled starts a new task.
-- KEYS: task hash prefix, queued pointer, idempotency key, index, lease prefix
-- ARGV: new id, now, owner, runner, has key ('1' or ''), key ttl ms, lease ttl ms, trigger
local tasks, has_key = KEYS[1], ARGV[5] == '1'
if has_key then
  local known = redis.call('GET', KEYS[3])
  if known and redis.call('EXISTS', tasks .. known) == 1
     and redis.call('HGET', tasks .. known, 'status') ~= 'canceled' then
    return {known, 0}
  end
end
local waiting = redis.call('GET', KEYS[2])
if waiting and redis.call('HGET', tasks .. waiting, 'status') == 'queued' then
  if has_key then redis.call('SET', KEYS[3], waiting, 'PX', ARGV[6]) end
  return {waiting, 0}
end
redis.call('HSET', tasks .. ARGV[1], 'task_id', ARGV[1], 'status', 'queued',
           'queued_at', ARGV[2], 'progress', '0', 'owner', ARGV[3], 'runner', ARGV[4],
           'trigger', ARGV[8])
redis.call('ZADD', KEYS[4], ARGV[2], ARGV[1])
redis.call('SET', KEYS[2], ARGV[1])
-- whoever queued it holds it until a builder claims it
redis.call('SET', KEYS[5] .. ARGV[1], ARGV[3], 'PX', ARGV[7])
if has_key then redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[6]) end
return {ARGV[1], 1}
"""

_CLAIM = """
-- A builder takes over a queued task's lease (it heartbeats from now on).
-- KEYS: task hash, lease   ARGV: owner, lease ttl ms
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then return 0 end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return 1
"""

_START = """
-- Move a queued task to running, unless another task is running.
-- KEYS: task hash, lease, building pointer, queued pointer, last version, task hash prefix
-- ARGV: task id, now, owner, lease ttl ms
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'queued' then return {'gone', status or 'missing'} end
local other = redis.call('GET', KEYS[3])
if other and other ~= ARGV[1] and redis.call('HGET', KEYS[6] .. other, 'status') == 'running' then
  return {'wait', other}
end
redis.call('SET', KEYS[3], ARGV[1])
redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[2], 'owner', ARGV[3])
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
if redis.call('GET', KEYS[4]) == ARGV[1] then redis.call('DEL', KEYS[4]) end
return {'start', tostring(tonumber(redis.call('GET', KEYS[5]) or '0') + 1)}
"""

_HEARTBEAT = """
-- Extend a lease this owner still holds; 0 means it is lost.
-- KEYS: lease   ARGV: owner, lease ttl ms
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""

_PROGRESS = """
-- Record progress of a running task this owner holds; 0 means stop building.
-- KEYS: task hash, lease   ARGV: owner, fraction
if redis.call('HGET', KEYS[1], 'status') ~= 'running' or redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return 0
end
if tonumber(ARGV[2]) > tonumber(redis.call('HGET', KEYS[1], 'progress') or '0') then
  redis.call('HSET', KEYS[1], 'progress', ARGV[2])
end
return 1
"""

_PUBLISH = """
-- Complete a running task this owner holds: its model becomes the current one.
-- KEYS: task hash, lease, building, pending bytes, model:<version>, model:current,
--       model:last, model:ratings, model key prefix
-- ARGV: task id, owner, now, version, ratings version, old model ttl ms, task ttl ms
if redis.call('HGET', KEYS[1], 'status') ~= 'running' or redis.call('GET', KEYS[2]) ~= ARGV[2]
   or redis.call('EXISTS', KEYS[4]) == 0
   or tonumber(ARGV[4]) <= tonumber(redis.call('GET', KEYS[7]) or '0') then
  redis.call('DEL', KEYS[4])
  return 0
end
local previous = redis.call('GET', KEYS[6])
redis.call('RENAME', KEYS[4], KEYS[5])
redis.call('PERSIST', KEYS[5])
redis.call('SET', KEYS[6], ARGV[4])
redis.call('SET', KEYS[7], ARGV[4])
redis.call('SET', KEYS[8], ARGV[5])
if previous and previous ~= ARGV[4] then redis.call('PEXPIRE', KEYS[9] .. previous, ARGV[6]) end
redis.call('HSET', KEYS[1], 'status', 'complete', 'finished_at', ARGV[3], 'progress', '1',
           'model_version', ARGV[4])
redis.call('DEL', KEYS[2])
if redis.call('GET', KEYS[3]) == ARGV[1] then redis.call('DEL', KEYS[3]) end
redis.call('PEXPIRE', KEYS[1], ARGV[7])
return 1
"""

_SETTLE = """
-- Give an unfinished task a final state: when `owner` holds its lease, or
-- (owner '') when nobody does any more.
-- KEYS: task hash, lease, building, queued
-- ARGV: task id, final status, error, now, task ttl ms, owner
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'queued' and status ~= 'running' then return 0 end
local holder = redis.call('GET', KEYS[2])
if (ARGV[6] == '' and holder) or (ARGV[6] ~= '' and holder ~= ARGV[6]) then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'finished_at', ARGV[4], 'error', ARGV[3])
redis.call('DEL', KEYS[2])
if redis.call('GET', KEYS[3]) == ARGV[1] then redis.call('DEL', KEYS[3]) end
if redis.call('GET', KEYS[4]) == ARGV[1] then redis.call('DEL', KEYS[4]) end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""

_CANCEL = """
-- Cancel a queued or running task, whoever holds it; return its status before.
-- KEYS: task hash, lease, building, queued
-- ARGV: task id, now, task ttl ms
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'queued' and status ~= 'running' then return status or 'missing' end
redis.call('HSET', KEYS[1], 'status', 'canceled', 'finished_at', ARGV[2],
           'error', 'canceled by a client')
redis.call('DEL', KEYS[2])
if redis.call('GET', KEYS[3]) == ARGV[1] then redis.call('DEL', KEYS[3]) end
if redis.call('GET', KEYS[4]) == ARGV[1] then redis.call('DEL', KEYS[4]) end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return status
"""


SCRIPTS = {
    "request": _REQUEST,
    "claim": _CLAIM,
    "start": _START,
    "heartbeat": _HEARTBEAT,
    "progress": _PROGRESS,
    "publish": _PUBLISH,
    "settle": _SETTLE,
    "cancel": _CANCEL,
}
"""Each script's source, by the name `RedisTaskRegistry` runs it under."""
