"""Lua scripts for MetadataStore's multi-key updates.

Each runs atomically on the server, so a check ("is the memory registered?", "is the tag
free?") and the writes it guards cannot interleave with another client. Every key a script
touches is passed in KEYS. Return codes: 1 done, 0 conflict/absent/changed, -1 (or -2) memory not registered.
"""

from __future__ import annotations

__all__ = [
    "CREATE_MEMORY",
    "DELETE_MEMORY",
    "UPDATE_STATS",
    "ADD_CHECKPOINT",
    "DELETE_CHECKPOINT",
    "ADD_CHILD",
    "WAL_APPEND",
    "HISTORY_APPEND",
]

# KEYS: registry, parent's children zset, child sequence. ARGV: name, record JSON, parent or ''.
# The edge is only recorded while the parent is registered, so no orphan zset is left behind.
CREATE_MEMORY = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
if ARGV[3] ~= '' and redis.call('HEXISTS', KEYS[1], ARGV[3]) == 1 then
  redis.call('ZADD', KEYS[2], 'NX', redis.call('INCR', KEYS[3]), ARGV[1])
end
return 1
"""

# KEYS: registry, parent's children zset (or any key), then the memory's own keys.
# ARGV: name, has_parent.
DELETE_MEMORY = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
if ARGV[2] == '1' then redis.call('ZREM', KEYS[2], ARGV[1]) end
for i = 3, #KEYS do redis.call('DEL', KEYS[i]) end
return 1
"""

# KEYS: registry, stats hash, domains set.
# ARGV: name, observations, surprise_mean, step, weight_hash, alpha, domain...
# The EMA treats a batch of n observations with mean s as n steps of weight alpha each.
UPDATE_STATS = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return -1 end
local n = tonumber(ARGV[2])
if n > 0 then
  local s = tonumber(ARGV[3])
  local prev = redis.call('HGET', KEYS[2], 'avg_surprise')
  local ema = s
  if prev then
    local w = 1 - (1 - tonumber(ARGV[6])) ^ n
    ema = w * s + (1 - w) * tonumber(prev)
  end
  redis.call('HSET', KEYS[2], 'avg_surprise', string.format('%.17g', ema))
  redis.call('HINCRBY', KEYS[2], 'total_observations', n)
end
redis.call('HSET', KEYS[2], 'step', ARGV[4], 'weight_hash', ARGV[5])
for i = 7, #ARGV do redis.call('SADD', KEYS[3], ARGV[i]) end
return 1
"""

# KEYS: registry, checkpoint hash, checkpoint order list. ARGV: name, tag, info JSON.
ADD_CHECKPOINT = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return -1 end
if redis.call('HSETNX', KEYS[2], ARGV[2], ARGV[3]) == 0 then return 0 end
redis.call('RPUSH', KEYS[3], ARGV[2])
return 1
"""

# KEYS: checkpoint hash, checkpoint order list. ARGV: tag.
DELETE_CHECKPOINT = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('LREM', KEYS[2], 0, ARGV[1])
return 1
"""

# KEYS: registry, parent's children zset, child sequence.
# ARGV: parent, child, new child record JSON, the record JSON it replaces (compare-and-set).
ADD_CHILD = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return -1 end
local old = redis.call('HGET', KEYS[1], ARGV[2])
if not old then return -2 end
if old ~= ARGV[4] then return 0 end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[2], 'NX', redis.call('INCR', KEYS[3]), ARGV[2])
return 1
"""

# KEYS: registry, wal stream. ARGV: name, step, vectors, meta. Returns the entry id or -1.
WAL_APPEND = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return -1 end
return redis.call('XADD', KEYS[2], '*', 'step', ARGV[2], 'vectors', ARGV[3], 'meta', ARGV[4])
"""

# KEYS: registry, history list. ARGV: name, item JSON, cap.
HISTORY_APPEND = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return -1 end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[3]), -1)
return 1
"""
