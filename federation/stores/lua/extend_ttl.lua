-- A key's garbage-collection TTL only ever grows.
local function extend_ttl(key, ms)
  if redis.call('PTTL', key) < tonumber(ms) then redis.call('PEXPIRE', key, ms) end
end
