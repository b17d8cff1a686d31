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
    "TAKE_OWNERSHIP",
    "FENCED_XDEL",
    "GUARDED_RPUSH",
    "GUARDED_SET",
    "GUARDED_HSET",
    "FORGET_COMMIT",
    "CREATE_MEMORY",
    "SWAP_RECORD",
    "CAS_CLAIM",
    "LOCK_RENEW",
    "CAS_DOOM",
]

# KEYS: registry, the tenant's name index, the memory's forget jobs hash, the tenant's audit list,
# then the memory's own keys. ARGV: name, short name, now (ISO time), audit cap, tenant, and
# optionally a creation attempt id: then only a record still being created by that attempt is
# deleted (the clean-up of a creation cut short must never delete a memory made after it).
# Without one, a record still being created is not deleted: -1 (its creator would go on
# writing into whatever takes the name next).
# Every forget job of the memory that has not finished (pending or running) gets its final audit
# record here, in the same step as the delete: status "failed", error "memory_deleted" (the
# job's own failure write would find the memory gone, and its actor is released or killed). The
# record has the fields of every other audit record (actors/forgetting.py `_audit`), never the
# selector's texts. Records are built before the first write: a script error writes nothing.
DELETE_MEMORY = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
local ok, rec = pcall(cjson.decode, redis.call('HGET', KEYS[1], ARGV[1]))
local mark = ok and type(rec) == 'table' and type(rec.creating) == 'table' and rec.creating.attempt or nil
if ARGV[6] then
  if mark ~= ARGV[6] then return 0 end
elseif mark then
  return -1
end
local function nullable(v) if v == nil then return cjson.null end return v end
local unfinished = {}
for _, raw in ipairs(redis.call('HVALS', KEYS[3])) do
  local ok, job = pcall(cjson.decode, raw)
  if ok and type(job) == 'table' and (job.status == 'pending' or job.status == 'running') then
    unfinished[#unfinished + 1] = job
  end
end
table.sort(unfinished, function(a, b) return tostring(a.created_at) < tostring(b.created_at) end)
local records = {}
for _, job in ipairs(unfinished) do
  local who = type(job.who) == 'table' and job.who or {}
  records[#records + 1] = cjson.encode({
    at = ARGV[3], tenant = ARGV[5], key = nullable(who.key), memory = nullable(job.memory),
    job_id = nullable(job.job_id), selection = nullable(job.selection), mode = nullable(job.mode),
    dry_run = nullable(job.dry_run), exact = nullable(job.exact), forgotten = job.forgotten or 0,
    status = 'failed', error = 'memory_deleted'})
end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[2])
for _, record in ipairs(records) do redis.call('RPUSH', KEYS[4], record) end
if #records > 0 then redis.call('LTRIM', KEYS[4], -tonumber(ARGV[4]), -1) end
for i = 5, #KEYS do redis.call('DEL', KEYS[i]) end
return 1
"""

# KEYS: registry, the tenant's name index. ARGV: name, short name, record JSON, and optionally
# the most memories the tenant may have: -1 if it has them already (checked in the same step as
# the insert, so concurrent creations cannot overshoot it). The very same record already there
# counts as done: redis-py resends a command that timed out, and the first attempt may have been
# applied.
CREATE_MEMORY = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current then
  if current == ARGV[3] then return 1 end
  return 0
end
if ARGV[4] and redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then return -1 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[2], 0, ARGV[2])
return 1
"""

# KEYS: registry. ARGV: name, the record JSON expected there, its replacement. The replacement
# already there counts as done (a resent command whose first attempt was applied).
SWAP_RECORD = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current == ARGV[2] then redis.call('HSET', KEYS[1], ARGV[1], ARGV[3]) return 1 end
if current == ARGV[3] then return 1 end
return 0
"""

# KEYS: a lock. ARGV: its holder's token, seconds. Extends the lock's lease if the token still
# holds it (1), else 0: it expired and may be another holder's now.
LOCK_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('EXPIRE', KEYS[1], ARGV[2]) return 1 end
return 0
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

# KEYS: registry, stats hash, domains set, history list, writes list.
# ARGV: name, observations, step, weight_hash, history cap, writes cap, write record ('': none),
# n domains, domain..., history item...
# `recorded_step` is the step of the last write record applied (before it existed: `step`). A
# write's record at or below it is there already (redis-py resent the script after a reply was
# lost to a restart; the first attempt was applied): returns 2, writes nothing. A stats-only
# sync (no observations) points `step` at the memory but never raises `recorded_step`, so a
# record dropped while Redis was away still lands when a restart sends it again; a sync to an
# earlier step (a restore) lowers it, since later writes reuse those steps. (A forget job sets
# it in its own swap, FORGET_COMMIT.) Records arrive in step order (one recorder thread per
# memory, queued under its write lock). The writes list keeps the newest `writes cap` records
# whatever their size, so a retry is recognised after a restart however large the batches.
RECORD_WRITE = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return -1 end
local n, step = tonumber(ARGV[2]), tonumber(ARGV[3])
local recorded = tonumber(redis.call('HGET', KEYS[2], 'recorded_step') or redis.call('HGET', KEYS[2], 'step') or '-1')
if n > 0 then
  if recorded >= step then return 2 end
  redis.call('HINCRBY', KEYS[2], 'total_observations', n)
  recorded = step
end
redis.call('HSET', KEYS[2], 'step', ARGV[3], 'weight_hash', ARGV[4], 'recorded_step', math.min(recorded, step))
if n > 0 and ARGV[7] ~= '' then
  redis.call('RPUSH', KEYS[5], ARGV[7])
  redis.call('LTRIM', KEYS[5], -tonumber(ARGV[6]), -1)
end
local n_domains = tonumber(ARGV[8])
for i = 9, 8 + n_domains do redis.call('SADD', KEYS[3], ARGV[i]) end
if #ARGV > 8 + n_domains then
  for i = 9 + n_domains, #ARGV do redis.call('RPUSH', KEYS[4], ARGV[i]) end
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

# KEYS: registry, the memory's log, its owner token. ARGV: name, the appender's owner token ('':
# unfenced, for tools), then the entry's fields. The entry id; -1 if the memory is not
# registered, -2 if another actor has taken the memory since this one did (a killed actor's
# process can still run a call for a moment after its successor rebuilt from the log: that
# write must not land).
WAL_APPEND = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return -1 end
if ARGV[2] ~= '' and redis.call('GET', KEYS[3]) ~= ARGV[2] then return -2 end
return redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3))
"""

# KEYS: the memory's log, its owner token. ARGV: the deleter's owner token ('': unfenced), then
# stream ids. -2 and nothing deleted if another actor has taken the memory since (see WAL_APPEND).
FENCED_XDEL = """
if ARGV[1] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[1] then return -2 end
return redis.call('XDEL', KEYS[1], unpack(ARGV, 2))
"""

# KEYS: registry, the memory's owner token, the counter of tokens issued. ARGV: name. A token
# larger than every one issued before, for any memory (so an actor of a deleted memory never
# holds the token of one made later under the name); -1 if the memory is not registered.
TAKE_OWNERSHIP = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return -1 end
local token = redis.call('INCR', KEYS[3])
redis.call('SET', KEYS[2], token)
return token
"""

# KEYS: registry, a list of the memory. ARGV: name, value. -1 if the memory is not registered.
GUARDED_RPUSH = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return -1 end
redis.call('RPUSH', KEYS[2], ARGV[2])
return 1
"""

# KEYS: registry, a string key of the memory. ARGV: name, value.
GUARDED_SET = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return -1 end
redis.call('SET', KEYS[2], ARGV[2])
return 1
"""

# KEYS: registry, a hash of the memory. ARGV: name, field, value.
GUARDED_HSET = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return -1 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return 1
"""

# The swap of a forget job, all or nothing (storage/history.py `forget_commit`).
# KEYS: registry, ckpt hash, ckpt order, wal, archive, history, stats, domains, jobs, base, audit,
# forgotten writes, owner token (-2 and nothing written unless it is the plan's `owner`; '': unfenced),
# writes list.
# ARGV: name, plan JSON, then 8 values per new WAL entry (field/value pairs: step, vectors, meta,
# seq; `wal_values` of them), then the new write records (msgpack: not JSON). Plan: ckpt_del [tag], ckpt_put [[tag, info JSON]], wal (bool: replace the WAL),
# archive/history/domains (lists of values, or null: unchanged), writes (how many records follow
# the WAL values, or null: unchanged), stats {field: value},
# jobs_del [id], job [id, JSON], base (JSON or null), audit (JSON or null), forgotten_writes [id]
# (added to the set).
FORGET_COMMIT = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return -1 end
local plan = cjson.decode(ARGV[2])
if plan.owner ~= '' and redis.call('GET', KEYS[13]) ~= plan.owner then return -2 end
local function replace(key, values, command)
  if values == cjson.null then return end
  redis.call('DEL', key)
  for _, v in ipairs(values) do redis.call(command, key, v) end
end
for _, tag in ipairs(plan.ckpt_del) do
  redis.call('HDEL', KEYS[2], tag)
  redis.call('LREM', KEYS[3], 0, tag)
end
for _, put in ipairs(plan.ckpt_put) do
  if redis.call('HSET', KEYS[2], put[1], put[2]) == 1 then redis.call('RPUSH', KEYS[3], put[1]) end
end
if plan.wal then
  redis.call('DEL', KEYS[4])
  for i = 3, 2 + plan.wal_values, 8 do redis.call('XADD', KEYS[4], '*', unpack(ARGV, i, i + 7)) end
end
replace(KEYS[5], plan.archive, 'RPUSH')
replace(KEYS[6], plan.history, 'RPUSH')
if plan.writes ~= cjson.null then
  redis.call('DEL', KEYS[14])
  for i = 3 + plan.wal_values, 2 + plan.wal_values + plan.writes do redis.call('RPUSH', KEYS[14], ARGV[i]) end
end
replace(KEYS[8], plan.domains, 'SADD')
for field, value in pairs(plan.stats) do redis.call('HSET', KEYS[7], field, value) end
for _, id in ipairs(plan.jobs_del) do redis.call('HDEL', KEYS[9], id) end
redis.call('HSET', KEYS[9], plan.job[1], plan.job[2])
if plan.base ~= cjson.null then redis.call('SET', KEYS[10], plan.base) end
if plan.audit ~= cjson.null then redis.call('RPUSH', KEYS[11], plan.audit) end
for _, id in ipairs(plan.forgotten_writes) do redis.call('SADD', KEYS[12], id) end
return 1
"""
