-- Every member's live launches, as member, n pairs: expired launches are dropped on the
-- way, and members with none left leave the set.
local function live_counts(members_key, inflight_prefix, now)
  local counts = {}
  for _, m in ipairs(redis.call('SMEMBERS', members_key)) do
    local k = inflight_prefix .. m
    redis.call('ZREMRANGEBYSCORE', k, '-inf', now)
    local n = redis.call('ZCARD', k)
    if n == 0 then redis.call('SREM', members_key, m) else counts[#counts + 1] = m; counts[#counts + 1] = n end
  end
  return counts
end
