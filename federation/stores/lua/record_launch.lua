-- uses: add_event, extend_ttl
-- KEYS: inflight-members, launches, versions
-- ARGV: the launches (JSON array), key prefix, now, maxlen, minute counter gc ttl ms
-- A launch (a JSON array of strings; '' = none): member, launch id, expiry, gc ttl ms,
--   event JSON, event ms, limit, event minute, repo whose holders to return,
--   repo key counted towards its cap, repo expiry, repo gc ttl ms, repo cap
-- Launches are recorded one after the other, each check and count one atomic step.
-- Returns one reply per launch, in order: {code, the member's live launches (-1: not
-- read), the in-flight version, the holders of the repo (member, expiry pairs), the
-- repository's launches}: code 1 when recorded; 0 (nothing recorded) when `limit`
-- launches of the member are already in flight; 2 when `repo cap` launches of the
-- repository are.
local prefix, now, maxlen, minute_gc = ARGV[2], ARGV[3], ARGV[4], ARGV[5]

local function record(l)
  local function reply(code, count, repo_n)
    local holders = {}
    if l[9] ~= '' then
      local image = prefix .. 'image:' .. l[9]
      redis.call('ZREMRANGEBYSCORE', image, '-inf', now)
      holders = redis.call('ZRANGE', image, 0, -1, 'WITHSCORES')
    end
    return {code, count, redis.call('HGET', KEYS[3], 'inflight') or '0', holders, repo_n}
  end
  local repo = nil
  if l[10] ~= '' then
    repo = prefix .. 'repo-inflight:' .. l[10]
    redis.call('ZREMRANGEBYSCORE', repo, '-inf', now)
    if l[13] ~= '' then
      local running = redis.call('ZCARD', repo)
      if running >= tonumber(l[13]) then return reply(2, -1, running) end
    end
  end
  local inflight = prefix .. 'inflight:' .. l[1]
  redis.call('ZREMRANGEBYSCORE', inflight, '-inf', now)
  if l[7] ~= '' then
    local n = redis.call('ZCARD', inflight)
    if n >= tonumber(l[7]) then return reply(0, n, 0) end
  end
  redis.call('ZADD', inflight, l[3], l[2])
  redis.call('SADD', KEYS[1], l[1])
  redis.call('HINCRBY', KEYS[3], 'inflight', 1)
  extend_ttl(inflight, l[4])
  if l[5] ~= '' then
    add_event(KEYS[2], l[6], l[5], maxlen)
    local minute = prefix .. 'launch-minute:' .. l[8]
    redis.call('INCR', minute)
    redis.call('PEXPIRE', minute, minute_gc)
  end
  if repo then
    redis.call('ZADD', repo, l[11], l[2])
    extend_ttl(repo, l[12])
  end
  return reply(1, redis.call('ZCARD', inflight), 0)
end

local replies = {}
for i, launch in ipairs(cjson.decode(ARGV[1])) do replies[i] = record(launch) end
return replies
