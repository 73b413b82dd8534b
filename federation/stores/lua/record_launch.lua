-- uses: add_event, extend_ttl
-- KEYS: inflight:<member>, inflight-members, launches, launch-minute:<minute>, versions, image:<repo>
--       [, repo-inflight:<repo key>]
-- ARGV: member, launch id, expiry, gc ttl ms, event JSON ('' = none), event ms, maxlen,
--       limit ('' = none), now, minute counter gc ttl ms, read holders ('' = no)
--       [, repo expiry, repo gc ttl ms, repo cap ('' = none)]
-- Returns {code, the member's live launches (-1: not read), the in-flight version, the
-- holders of image:<repo> (member, expiry pairs), the repository's launches}: code 1 when
-- recorded; 0 (nothing recorded) when `limit` launches of the member are already in
-- flight; 2 when `repo cap` launches of the repository are.
local function reply(code, count, repo_n)
  local holders = {}
  if ARGV[11] ~= '' then
    redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', ARGV[9])
    holders = redis.call('ZRANGE', KEYS[6], 0, -1, 'WITHSCORES')
  end
  return {code, count, redis.call('HGET', KEYS[5], 'inflight') or '0', holders, repo_n}
end
if KEYS[7] then
  redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', ARGV[9])
  if ARGV[14] ~= '' then
    local running = redis.call('ZCARD', KEYS[7])
    if running >= tonumber(ARGV[14]) then return reply(2, -1, running) end
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[9])
if ARGV[8] ~= '' then
  local n = redis.call('ZCARD', KEYS[1])
  if n >= tonumber(ARGV[8]) then return reply(0, n, 0) end
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('HINCRBY', KEYS[5], 'inflight', 1)
extend_ttl(KEYS[1], ARGV[4])
if ARGV[5] ~= '' then
  add_event(KEYS[3], ARGV[6], ARGV[5], ARGV[7])
  redis.call('INCR', KEYS[4])
  redis.call('PEXPIRE', KEYS[4], ARGV[10])
end
if KEYS[7] then
  redis.call('ZADD', KEYS[7], ARGV[12], ARGV[2])
  extend_ttl(KEYS[7], ARGV[13])
end
return reply(1, redis.call('ZCARD', KEYS[1]), 0)
