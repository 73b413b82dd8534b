-- KEYS: inflight:<member>, inflight-members, versions   ARGV: now, count, member
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local n = tonumber(ARGV[2])
if n > 0 then redis.call('ZPOPMIN', KEYS[1], n); redis.call('HINCRBY', KEYS[3], 'inflight', 1) end
if redis.call('ZCARD', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], ARGV[3]) end
return 1
