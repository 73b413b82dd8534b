-- KEYS: lease:<name>   ARGV: holder, now, expiry, gc ttl ms
local current = redis.call('HMGET', KEYS[1], 'h', 'e')
if (not current[1]) or current[1] == ARGV[1] or tonumber(current[2]) <= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'h', ARGV[1], 'e', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return 1
end
return 0
