-- uses: add_event, extend_ttl
-- What a replica wrote while degraded, in one go (federation.stores.fallback, "Degradation").
-- KEYS: status, override, ejection, inflight-members, launches, images
-- ARGV: payload JSON, key prefix, now, maxlen, gc margin ms, minute counter gc ttl ms
local p = cjson.decode(ARGV[1])
local prefix = ARGV[2]
local now = tonumber(ARGV[3])
local margin = tonumber(ARGV[5])
local function field_of(hash, name, key)
  local raw = redis.call('HGET', hash, name)
  if not raw then return nil end
  local ok, value = pcall(cjson.decode, raw)
  if ok and type(value) == 'table' then return tonumber(value[key]) or 0 end
  return 0
end
for _, s in ipairs(p.statuses) do
  local current = field_of(KEYS[1], s[1], 'checked_at')
  if (not current) or current <= tonumber(s[3]) then redis.call('HSET', KEYS[1], s[1], s[2]) end
end
for _, o in ipairs(p.overrides) do
  local current = field_of(KEYS[2], o[1], 'at')
  if (not current) or current <= tonumber(o[3]) then
    if o[2] == '' then redis.call('HDEL', KEYS[2], o[1]) else redis.call('HSET', KEYS[2], o[1], o[2]) end
  end
end
for _, e in ipairs(p.ejections) do
  local current = tonumber(redis.call('HGET', KEYS[3], e[1]))
  if (not current) or current < tonumber(e[2]) then redis.call('HSET', KEYS[3], e[1], e[2]) end
end
for _, l in ipairs(p.launches) do
  local key = prefix .. 'inflight:' .. l[1]
  redis.call('ZADD', key, l[3], l[2])
  redis.call('SADD', KEYS[4], l[1])
  extend_ttl(key, math.ceil((tonumber(l[3]) - now + margin) * 1000))
end
for _, i in ipairs(p.images) do
  local key = prefix .. 'image:' .. i[1]
  redis.call('ZADD', key, 'GT', i[3], i[2])
  redis.call('ZADD', KEYS[6], 'GT', i[3], i[1] .. '\0' .. i[2])
  extend_ttl(key, math.ceil((tonumber(i[3]) - now + margin) * 1000))
end
for _, kind in ipairs({'status', 'override', 'ejection', 'inflight'}) do
  redis.call('HINCRBY', ARGV[2] .. 'versions', kind, 1)
end
for _, e in ipairs(p.events) do
  add_event(KEYS[5], e[1], e[2], ARGV[4])
  local key = prefix .. 'launch-minute:' .. e[3]
  redis.call('INCR', key)
  redis.call('PEXPIRE', key, ARGV[6])
end
return 1
