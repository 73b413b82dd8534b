-- uses: hit
-- KEYS: rate:<key 1> .. rate:<key n>[, repo-inflight:<repo key>]
-- ARGV: now, n, then per rate: limit, window, gc ttl ms
-- Returns {index of the first rate over its limit (0-based, -1: none), its window start, repo in flight}.
local n = tonumber(ARGV[2])
local refused, refused_start = -1, ''
for i = 1, n do
  local count, start = hit(KEYS[i], ARGV[1], ARGV[3 * i + 1], ARGV[3 * i + 2])
  if count > tonumber(ARGV[3 * i]) then
    refused, refused_start = i - 1, start
    break
  end
end
local in_flight = 0
if KEYS[n + 1] then
  redis.call('ZREMRANGEBYSCORE', KEYS[n + 1], '-inf', ARGV[1])
  in_flight = redis.call('ZCARD', KEYS[n + 1])
end
return {refused, refused_start, in_flight}
