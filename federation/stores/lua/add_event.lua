-- Shared by record_launch.lua and push.lua: append one event, its id at least the stream's last id.
local function add_event(stream, ts_ms, payload, maxlen)
  local ms = tonumber(ts_ms) or 0
  local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
  if last[1] then
    local last_ms = tonumber(string.match(last[1][1], '^(%d+)'))
    if last_ms and last_ms > ms then ms = last_ms end
  end
  local ok = redis.pcall('XADD', stream, 'MAXLEN', '~', maxlen, string.format('%.0f', ms) .. '-*', 'e', payload)
  if type(ok) == 'table' and ok.err then
    redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'e', payload)
  end
end
