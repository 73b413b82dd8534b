-- uses: live_counts
-- The refresh of the local snapshot (federation.stores.snapshot).
-- KEYS: status, override, ejection, inflight-members, versions
-- ARGV: now, inflight key prefix, the status, override and ejection versions held ('' = none),
--       a new epoch
-- Returns JSON: {versions (status, override, ejection, inflight, epoch), each hash or false
-- when its version is the one held, in-flight counts as member, n pairs}. The epoch names
-- this run of Redis's data: an emptied or restarted Redis counts versions from 0 again.
local v = redis.call('HMGET', KEYS[5], 'status', 'override', 'ejection', 'inflight', 'epoch')
local versions = {}
for i = 1, 4 do versions[i] = v[i] or '0' end
if not v[5] then redis.call('HSET', KEYS[5], 'epoch', ARGV[6]) end
versions[5] = v[5] or ARGV[6]
local function part(i)
  if ARGV[2 + i] == versions[i] then return false end
  return redis.call('HGETALL', KEYS[i])
end
local counts = live_counts(KEYS[4], ARGV[2], ARGV[1])
-- One JSON string rather than nested arrays: one bulk reply parses much faster client-side.
return cjson.encode({versions, part(1), part(2), part(3), counts})
