-- One hit on a fixed window: returns count, window start (the start as a string: Lua
-- numbers come back to the client truncated to integers).
local function hit(key, now_text, window, gc_ms)
  local start = redis.call('HGET', key, 's')
  local count
  if (not start) or tonumber(now_text) - tonumber(start) >= tonumber(window) then
    start = now_text
    count = 1
    redis.call('HSET', key, 's', start, 'c', 1)
  else
    count = redis.call('HINCRBY', key, 'c', 1)
  end
  redis.call('PEXPIRE', key, gc_ms)
  return count, start
end
