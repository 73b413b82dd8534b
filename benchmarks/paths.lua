-- wrk script of the redirect benchmarks: GET /build/gh/org/repo<i>/HEAD for i = 0 ..
-- repos - 1 in turn (repos: the first script argument, default 1000), count every
-- answer that is not a 307 (a /build/ refusal is a 200 event stream: wrk's own error
-- count sees only statuses above 399), and print the figures as one JSON line when
-- done (benchmarks/load.py reads it).
local threads = {}
local repos = 1000
local i = 0
not_307 = 0  -- global: done() reads it from each thread

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  if args[1] then repos = tonumber(args[1]) end
end

function request()
  i = (i + 1) % repos
  return wrk.format("GET", "/build/gh/org/repo" .. i .. "/HEAD")
end

function response(status, headers, body)
  if status ~= 307 then not_307 = not_307 + 1 end
end

function done(summary, latency, requests)
  local e = summary.errors
  local bad = 0
  for _, thread in ipairs(threads) do bad = bad + thread:get("not_307") end
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "errors": {"connect": %d, "read": %d, "write": %d, ' ..
    '"timeout": %d, "not 307": %d}, "p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout, bad,
    latency:percentile(50), latency:percentile(99)))
end
