-- One probe tick's writes. KEYS: status, inflight-members, versions
-- ARGV: now, inflight key prefix, n, then n pairs (member, status JSON), then pairs (member, pods seen)
-- Returns the status version.
local n = tonumber(ARGV[3])
if 4 + 2 * n <= #ARGV then redis.call('HINCRBY', KEYS[3], 'inflight', 1) end
for i = 0, n - 1 do redis.call('HSET', KEYS[1], ARGV[4 + 2 * i], ARGV[5 + 2 * i]) end
for i = 4 + 2 * n, #ARGV, 2 do
  local m, k = ARGV[i], ARGV[2] .. ARGV[i]
  redis.call('ZREMRANGEBYSCORE', k, '-inf', ARGV[1])
  local seen = tonumber(ARGV[i + 1])
  if seen > 0 then redis.call('ZPOPMIN', k, seen) end
  if redis.call('ZCARD', k) == 0 then redis.call('SREM', KEYS[2], m) end
end
return redis.call('HINCRBY', KEYS[3], 'status', 1)
