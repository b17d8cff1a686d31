"""Lua scripts for MetadataStore's multi-key updates.

Each runs atomically on the server, so a check ("is the memory registered?", "is the tag
free?") and the writes it guards cannot interleave with another client. Every key a script
touches is passed in KEYS. Return codes: 1 done, 0 conflict/absent/changed, -1 (or -2) memory not registered.
"""

from __future__ import annotations

__all__ = [
    "DELETE_MEMORY",
    "RECORD_WRITE",
    "ADD_CHECKPOINT",
    "DELETE_CHECKPOINT",
    "WAL_APPEND",
    "CREATE_MEMORY",
    "CAS_CLAIM",
    "CAS_DOOM",
]

# KEYS: registry, the tenant's name index, then the memory's own keys. ARGV: name, short name.
DELETE_MEMORY = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('ZREM', KEYS[2], ARGV[2])
for i = 3, #KEYS do redis.call('DEL', KEYS[i]) end
return 1
"""

# KEYS: registry, the tenant's name index. ARGV: name, short name, record JSON. The very same
# record already there counts as done: redis-py resends a command that timed out, and the first
# attempt may have been applied.
CREATE_MEMORY = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[3]) == 0 and redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[3] then
  return 0
end
redis.call('ZADD', KEYS[2], 0, ARGV[2])
return 1
"""

# Content store (storage/cas.py). Times are the server's (no clock skew between writers and GC).
# KEYS: claims zset, doomed hash. ARGV: stale doom age (s), sha256... Claims every chunk not being
# deleted; returns {now, {shas being deleted}} (the writer waits for those, then claims again).
CAS_CLAIM = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local busy = {}
for i = 2, #ARGV do
  local doomed = redis.call('HGET', KEYS[2], ARGV[i])
  if doomed and now - tonumber(doomed) < tonumber(ARGV[1]) then
    busy[#busy + 1] = ARGV[i]
  else
    if doomed then redis.call('HDEL', KEYS[2], ARGV[i]) end
    redis.call('ZADD', KEYS[1], now, ARGV[i])
  end
end
return {tostring(now), busy}
"""

# KEYS: claims zset, doomed hash. ARGV: claimed-since bound, sha256... Marks for deletion each
# chunk not claimed since the bound; returns those (GC deletes them, then forgets both marks).
CAS_DOOM = """
local t = redis.call('TIME')
local now = tostring(tonumber(t[1]) + tonumber(t[2]) / 1000000)
local doomed = {}
for i = 2, #ARGV do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if not score or tonumber(score) < tonumber(ARGV[1]) then
    redis.call('HSET', KEYS[2], ARGV[i], now)
    doomed[#doomed + 1] = ARGV[i]
  end
end
return doomed
"""

# KEYS: registry, stats hash, domains set, history list.
# ARGV: name, observations, step, weight_hash, history cap, n domains, domain..., history item...
RECORD_WRITE = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return -1 end
local n = tonumber(ARGV[2])
if n > 0 then redis.call('HINCRBY', KEYS[2], 'total_observations', n) end
redis.call('HSET', KEYS[2], 'step', ARGV[3], 'weight_hash', ARGV[4])
local n_domains = tonumber(ARGV[6])
for i = 7, 6 + n_domains do redis.call('SADD', KEYS[3], ARGV[i]) end
if #ARGV > 6 + n_domains then
  for i = 7 + n_domains, #ARGV do redis.call('RPUSH', KEYS[4], ARGV[i]) end
  redis.call('LTRIM', KEYS[4], -tonumber(ARGV[5]), -1)
end
return 1
"""

# KEYS: registry, checkpoint hash, checkpoint order list. ARGV: name, tag, info JSON. (The very
# same info already there counts as done, as in CREATE_MEMORY.)
ADD_CHECKPOINT = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return -1 end
if redis.call('HSETNX', KEYS[2], ARGV[2], ARGV[3]) == 0 then
  if redis.call('HGET', KEYS[2], ARGV[2]) == ARGV[3] then return 1 end
  return 0
end
redis.call('RPUSH', KEYS[3], ARGV[2])
return 1
"""

# KEYS: checkpoint hash, checkpoint order list. ARGV: tag.
DELETE_CHECKPOINT = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('LREM', KEYS[2], 0, ARGV[1])
return 1
"""

# KEYS: registry, wal stream. ARGV: name, step, vectors, meta. Returns the entry id or -1.
WAL_APPEND = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return -1 end
return redis.call('XADD', KEYS[2], '*', 'step', ARGV[2], 'vectors', ARGV[3], 'meta', ARGV[4])
"""
